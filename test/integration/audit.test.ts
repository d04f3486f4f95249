// The agent's audit trail, read from a real agent's log while the test calls it as an attacker would
// (mutual TLS with certificates from deploy/tls/make-certs.sh): every refused call is exactly one
// "refused" line naming the client's CN, its address, the operation, the migration and why; a TLS
// handshake that lets no call through is one line with the peer's address; the health service's
// Watch streams are bounded per client; a call that never ends gives its slot back at
// operationTimeout; an rsync run's line counts the bytes each way.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { execa } from "execa";
import YAML from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, runController } from "../../scripts/lib/cluster.js";
import { ERROR_CODE_METADATA_KEY } from "../../shared/errors.js";
import { Action, type AgentClient, type RsyncFrame, type RsyncStart } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { type AuditLine, WARN, auditLines, auditLinesAfter } from "../helpers/auditLog.js";
import { type Scenario, DATA_DIRS, expectUnchanged, setupScenario, siteDir } from "../helpers/scenario.js";
import { type CertPair, type HealthWatch, NOT_ALLOWED_CN, agentClient, healthCheck, healthWatch, replaceFile, sslCredentials, targetName } from "../helpers/tls.js";
import { processStartTime } from "../../shared/processes.js";

// ---- calls as data -------------------------------------------------------------------------------

type Outcome = { ok: true; code: grpc.status.OK } | { ok: false; code: grpc.status; details: string; qmCode: string | undefined };

const qmCodeOf = (md: grpc.Metadata | undefined): string | undefined => {
  const v = md?.get(ERROR_CODE_METADATA_KEY)[0];
  return v === undefined ? undefined : String(v);
};

/** A unary call; `deadlineMs` null sends no deadline at all. */
function unary<Req>(
  client: AgentClient,
  method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall,
  req: Req,
  deadlineMs: number | null = 10_000,
): Promise<Outcome> {
  return new Promise((resolve) => {
    method.call(client, req, new grpc.Metadata(), deadlineMs === null ? {} : { deadline: Date.now() + deadlineMs }, (err) =>
      resolve(err ? { ok: false, code: err.code, details: err.details, qmCode: qmCodeOf(err.metadata) } : { ok: true, code: grpc.status.OK }),
    );
  });
}

/** Opens an Rsync stream, sends the start frame and half-closes; cancels it if rsync talks. */
function rsyncCall(client: AgentClient, start: RsyncStart): Promise<Outcome & { frames: number }> {
  return new Promise((resolve) => {
    const call = client.rsync({ deadline: Date.now() + 10_000 });
    let frames = 0;
    let error: grpc.ServiceError | undefined;
    call.on("data", (_f: RsyncFrame) => {
      frames++;
      call.cancel();
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("status", (st: grpc.StatusObject) =>
      setImmediate(() => {
        const code = error?.code ?? st.code;
        resolve(
          code === grpc.status.OK
            ? { ok: true, code: grpc.status.OK, frames }
            : { ok: false, code, details: error?.details ?? st.details, qmCode: qmCodeOf(error?.metadata ?? st.metadata), frames },
        );
      }),
    );
    call.write({ frame: { $case: "start", value: start } });
    call.end();
  });
}

const clients: AgentClient[] = [];
const watches: HealthWatch[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const w of watches.splice(0)) w.cancel();
});

const PEER = expect.stringMatching(/^127\.0\.0\.1:\d+$/);
const REG = "audit-registered-1";

/** The one line of `op` among `lines`, failing with all of them when there is not exactly one. */
function onlyLine(lines: readonly AuditLine[], op: string, where: (l: AuditLine) => boolean = () => true): AuditLine {
  const found = lines.filter((l) => l.op === op && where(l));
  expect(found, `${op}: exactly one audit line among ${JSON.stringify(lines, null, 1)}`).toHaveLength(1);
  return found[0] as AuditLine;
}

function refusedLine(client: string, code: string | undefined): Record<string, unknown> {
  return { msg: "refused", level: WARN, component: "rpc", client, peer: PEER, result: "refused", code, reason: expect.any(String) };
}

/** The record lock of a migration, held by this (live) test process as `parked restore` would hold it. */
function holdRecordLock(stateDir: string, id: string): () => void {
  const startTime = processStartTime(process.pid);
  const file = path.join(stateDir, "migrations", `${id}.lock`);
  fs.writeFileSync(file, `${JSON.stringify({ pid: process.pid, startTime, what: "the audit test" })}\n`, { flag: "wx" });
  return () => fs.rmSync(file, { force: true });
}

/** Rewrites a running agent's config and waits until it has reloaded it. */
async function reconfigure(s: Scenario, front: string, patch: Record<string, unknown>): Promise<void> {
  const f = s.cluster.front(front);
  const count = () => (fs.readFileSync(f.logFile, "utf8").match(/"msg":"config reloaded"/g) ?? []).length;
  const before = count();
  const config = YAML.parse(fs.readFileSync(f.configFile, "utf8")) as Record<string, unknown>;
  replaceFile(f.configFile, YAML.stringify({ ...config, ...patch }));
  const until = Date.now() + 10_000;
  while (count() === before) {
    if (Date.now() > until) throw new Error(`${front}: the config was not reloaded within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function setupTls(s: () => Scenario) {
  const pki = () => {
    const p = s().pki;
    if (!p) throw new Error("no pki");
    return p;
  };
  const web1 = () => s().cluster.front("web1");
  const connect = (who: CertPair): AgentClient => {
    const c = agentClient(web1().address, sslCredentials(pki().ca, who), targetName("web1"));
    clients.push(c);
    return c;
  };
  const migration = (id: string) => ({ id, from: s().from, site: s().site, to: s().to, newSite: s().site, dataDirs: [...DATA_DIRS] });
  return { pki, web1, connect, migration };
}

// ---- refusals ------------------------------------------------------------------------------------

describe("every refused call is exactly one audit line: CN, peer, operation, migration, code and reason", () => {
  let s: Scenario;
  const { pki, web1, connect, migration } = setupTls(() => s);
  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }], tls: true });
    const c = connect(pki().controller);
    const registered = await unary(c, c.preflight, { migration: migration(REG), register: true, local: false });
    expect(registered, JSON.stringify(registered)).toMatchObject({ ok: true });
    // its line is in the log before a test counts the lines there
    await auditLinesAfter(web1().logFile, 0, (l) => l.some((x) => x.op === "preflight" && x.migrationId === REG));
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it("a CA-signed certificate whose CN is not in allowedClients: NOT_ALLOWED, one line per call", async () => {
    const before = auditLines(web1().logFile).length;
    const c = connect(pki().notAllowed);
    const outcomes = {
      hello: await unary(c, c.hello, { protocolVersion: 1, controllerVersion: "audit-test" }),
      preflight: await unary(c, c.preflight, { migration: migration("audit-intruder-1"), register: true, local: false }),
      apply: await unary(c, c.apply, { migrationId: REG, step: "fronts-park-data", action: Action.ACTION_PARK_DATA }),
      inspect: await unary(c, c.inspect, { migrationId: REG }),
      rsync: await rsyncCall(c, { migrationId: REG, step: "fetch-site", args: [...DAEMON_OVER_RSH] }),
    };
    for (const [op, o] of Object.entries(outcomes)) expect(o, op).toMatchObject({ ok: false, code: grpc.status.PERMISSION_DENIED, qmCode: "NOT_ALLOWED" });

    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 5);
    expect(lines.map((l) => l.op).sort()).toEqual(["apply", "hello", "inspect", "preflight", "rsync"]);
    for (const op of Object.keys(outcomes)) {
      const line = onlyLine(lines, op);
      expect(line, op).toMatchObject(refusedLine(NOT_ALLOWED_CN, "NOT_ALLOWED"));
      expect(line.reason, op).toContain(NOT_ALLOWED_CN);
    }
    expect(onlyLine(lines, "preflight").migrationId).toBe("audit-intruder-1");
    expect(onlyLine(lines, "apply")).toMatchObject({ migrationId: REG, step: "fronts-park-data", action: "park-data" });
    expect(onlyLine(lines, "inspect").migrationId).toBe(REG);
    // an rsync stream may be refused before its start frame is read: then its migration is not known
    expect([undefined, REG]).toContain(onlyLine(lines, "rsync").migrationId);
  });

  it("a bad name (INVALID_NAME): one line per call, with the name as sent (clipped)", async () => {
    const before = auditLines(web1().logFile).length;
    const c = connect(pki().controller);
    const long = "x".repeat(10_000);
    const outcomes = {
      hello: await unary(c, c.hello, { protocolVersion: 1, controllerVersion: "a\u0000b" }),
      preflight: await unary(c, c.preflight, { migration: { ...migration("audit-bad-site"), site: "a/../b" }, register: true, local: false }),
      apply: await unary(c, c.apply, { migrationId: "../x", step: "fronts-park-data", action: Action.ACTION_PARK_DATA }),
      inspect: await unary(c, c.inspect, { migrationId: long }),
      rsync: await rsyncCall(c, { migrationId: "../../etc", step: "fetch-site", args: [...DAEMON_OVER_RSH] }),
    };
    for (const [op, o] of Object.entries(outcomes)) expect(o, op).toMatchObject({ ok: false, code: grpc.status.INVALID_ARGUMENT, qmCode: "INVALID_NAME" });

    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 5);
    expect(lines).toHaveLength(5);
    for (const op of Object.keys(outcomes)) expect(onlyLine(lines, op), op).toMatchObject(refusedLine("hostmaster", "INVALID_NAME"));
    expect(onlyLine(lines, "preflight")).toMatchObject({ migrationId: "audit-bad-site", site: "a/../b" });
    expect(onlyLine(lines, "apply").migrationId).toBe("../x");
    expect(onlyLine(lines, "rsync")).toMatchObject({ migrationId: "../../etc", step: "fetch-site" });
    // a name of 10,000 characters is cut short in the line
    const inspected = String(onlyLine(lines, "inspect").migrationId);
    expect(inspected.startsWith("xxxx")).toBe(true);
    expect(inspected.length).toBeLessThan(250);
    expect(inspected).toContain("(10000 chars)");
  });

  it("an action out of order, or for a migration the agent does not know: one refused line with the code the client got", async () => {
    const before = auditLines(web1().logFile).length;
    const c = connect(pki().controller);
    const outOfOrder = await unary(c, c.apply, { migrationId: REG, step: "fronts-remove-old", action: Action.ACTION_REMOVE_OLD_SITE });
    const unknown = await unary(c, c.apply, { migrationId: "audit-unknown-1", step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    expect(outOfOrder.ok, JSON.stringify(outOfOrder)).toBe(false);
    expect(unknown).toMatchObject({ ok: false, qmCode: "NOT_REGISTERED" });

    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 2);
    expect(lines).toHaveLength(2);
    const removeLine = onlyLine(lines, "apply", (l) => l.migrationId === REG);
    expect(removeLine).toMatchObject({ ...refusedLine("hostmaster", outOfOrder.ok ? "" : outOfOrder.qmCode), step: "fronts-remove-old", action: "remove-old-site", site: s.site });
    expect(onlyLine(lines, "apply", (l) => l.migrationId === "audit-unknown-1")).toMatchObject(refusedLine("hostmaster", "NOT_REGISTERED"));
    await expectUnchanged(s);
  });

  it("an rsync refused by policy: one refused line naming the migration and step, no rsync started", async () => {
    const before = auditLines(web1().logFile).length;
    const starts = () => (fs.readFileSync(web1().logFile, "utf8").match(/"msg":"rsync server start"/g) ?? []).length;
    const startsBefore = starts();
    const c = connect(pki().controller);
    // the daemon invocation a real client sends, for a push before the data was parked: the step order refuses it
    const outside = await rsyncCall(c, { migrationId: REG, step: "push-site", args: [...DAEMON_OVER_RSH] });
    expect(outside.ok, JSON.stringify(outside)).toBe(false);
    expect(outside.frames).toBe(0);
    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 1);
    expect(onlyLine(lines, "rsync")).toMatchObject({ ...refusedLine("hostmaster", outside.ok ? "" : outside.qmCode), migrationId: REG, step: "push-site", site: s.site });
    expect(lines).toHaveLength(1);
    expect(starts()).toBe(startsBefore);
  });

  it("TLS handshakes that let no call through: one line each, with the peer's address and why", async () => {
    const before = auditLines(web1().logFile).length;
    const [host, port] = [web1().address.replace(/:\d+$/, ""), Number(/:(\d+)$/.exec(web1().address)?.[1])];
    /** Connects as a TLS client with `cert` (or none), resolves with its local port once the agent has closed the connection. */
    const tlsAttempt = (cert?: CertPair): Promise<number> =>
      new Promise((resolve) => {
        const socket = tls.connect({
          host,
          port,
          servername: "web1",
          ca: fs.readFileSync(pki().ca),
          ...(cert ? { cert: fs.readFileSync(cert.cert), key: fs.readFileSync(cert.key) } : {}),
          ALPNProtocols: ["h2"],
        });
        let local = 0;
        socket.once("connect", () => {
          local = socket.localPort ?? 0;
        });
        socket.on("error", () => undefined);
        socket.once("close", () => resolve(local));
        socket.setTimeout(10_000, () => socket.destroy());
      });
    const plaintextAttempt = (): Promise<number> =>
      new Promise((resolve) => {
        const socket = net.connect({ host, port }, () => socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let local = 0;
        socket.once("connect", () => {
          local = socket.localPort ?? 0;
        });
        socket.on("error", () => undefined);
        socket.once("close", () => resolve(local));
        socket.setTimeout(10_000, () => socket.destroy());
      });

    const noCert = await tlsAttempt();
    const otherCa = await tlsAttempt(pki().otherCa.client);
    const plaintext = await plaintextAttempt();
    for (const p of [noCert, otherCa, plaintext]) expect(p).toBeGreaterThan(0);

    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 3);
    expect(lines).toHaveLength(3);
    const of = (p: number) => onlyLine(lines, "tls-handshake", (l) => l.peer === `127.0.0.1:${p}`);
    const shape = { msg: "refused", level: WARN, client: "(not verified)", result: "refused", code: "NOT_ALLOWED" };
    expect(of(noCert)).toMatchObject({ ...shape, reason: "no client certificate" });
    expect(of(otherCa)).toMatchObject({ ...shape, reason: expect.stringMatching(/^client certificate not accepted: /), certificateError: expect.any(String) });
    expect(of(plaintext)).toMatchObject({ ...shape, reason: "not TLS (a plaintext client?)" });
    // the CN an unverified certificate claims is not taken for the client's name
    expect(JSON.stringify(of(otherCa))).not.toContain(pki().controller.name);
  });

  it("health Watch streams: at most 4 per client, one more is RESOURCE_EXHAUSTED with one line; Check and operations still answer; a closed one frees its place", async () => {
    const address = web1().address;
    const intruder = sslCredentials(pki().ca, pki().notAllowed);
    const open = (creds: grpc.ChannelCredentials): HealthWatch => {
      const w = healthWatch(address, creds, targetName("web1"));
      watches.push(w);
      return w;
    };
    const held = [open(intruder), open(intruder), open(intruder), open(intruder)];
    for (const w of held) expect(await w.first).toEqual({ ok: true, value: "SERVING" });

    const before = auditLines(web1().logFile).length;
    const fifth = open(intruder);
    expect(await fifth.first).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED });
    const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 1);
    expect(lines).toHaveLength(1);
    expect(onlyLine(lines, "health.watch")).toMatchObject({ ...refusedLine(NOT_ALLOWED_CN, "TOO_MANY_STREAMS"), service: "" });

    // the agent still answers: Check from the same client, an operation and a Watch of another client
    expect(await healthCheck(address, intruder, targetName("web1"))).toEqual({ ok: true, value: "SERVING" });
    const controller = connect(pki().controller);
    expect(await unary(controller, controller.hello, { protocolVersion: 1, controllerVersion: "audit-test" })).toMatchObject({ ok: true });
    expect(await open(sslCredentials(pki().ca, pki().controller)).first).toEqual({ ok: true, value: "SERVING" });

    // a Watch cancelled gives its place back
    held[0]?.cancel();
    await expect.poll(async () => (await open(intruder).first).ok, { timeout: 5_000, interval: 200 }).toBe(true);
  });

  it("health Watch streams of a client process that is killed are freed with its connection", async () => {
    // the previous test's Watch streams were cancelled after it: give the agent a moment to see it
    await new Promise((r) => setTimeout(r, 1_000));
    const cert = pki().notAllowed;
    // a separate process holds 4 Watch streams, then dies without a word
    const script = `
      import fs from "node:fs";
      import * as grpc from "@grpc/grpc-js";
      import { service } from "grpc-health-check";
      const Health = grpc.makeGenericClientConstructor(service, "Health");
      const creds = grpc.credentials.createSsl(fs.readFileSync(${JSON.stringify(pki().ca)}), fs.readFileSync(${JSON.stringify(cert.key)}), fs.readFileSync(${JSON.stringify(cert.cert)}));
      let serving = 0;
      for (let i = 0; i < 4; i++) {
        const c = new Health(${JSON.stringify(web1().address)}, creds, { "grpc.ssl_target_name_override": "web1", "grpc.default_authority": "web1" });
        c.watch({ service: "" }).on("data", () => { if (++serving === 4) console.log("holding"); }).on("error", (e) => { console.error(e.details); process.exit(3); });
      }
    `;
    const child = execa(process.execPath, ["--input-type=module", "-e", script], { cwd: repoRoot(), reject: false, buffer: false });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (d: Buffer) => d.toString().includes("holding") && resolve());
      void child.then((r) => reject(new Error(`the Watch holder exited ${String(r.exitCode)} before holding 4 Watch streams`)));
    });
    const intruder = sslCredentials(pki().ca, cert);
    const refused = healthWatch(web1().address, intruder, targetName("web1"));
    watches.push(refused);
    expect(await refused.first).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED });
    child.kill("SIGKILL");
    await child;
    await expect
      .poll(
        async () => {
          const w = healthWatch(web1().address, intruder, targetName("web1"));
          watches.push(w);
          return (await w.first).ok;
        },
        { timeout: 10_000, interval: 200 },
      )
      .toBe(true);
  });

  it("afterwards every tree is as it was", async () => {
    await expectUnchanged(s);
  });
});

// ---- slots ---------------------------------------------------------------------------------------

describe("slots: BUSY is one refused line; a call that never ends gives its slot back at operationTimeout", () => {
  let s: Scenario;
  const { pki, web1, connect, migration } = setupTls(() => s);
  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }], tls: true });
    const c = connect(pki().controller);
    expect(await unary(c, c.preflight, { migration: migration(REG), register: true, local: false })).toMatchObject({ ok: true });
    await auditLinesAfter(web1().logFile, 0, (l) => l.some((x) => x.op === "preflight" && x.migrationId === REG));
    await reconfigure(s, "web1", { maxConcurrentOps: 1 });
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it("one operation holds the only slot: the next call is refused BUSY with one line; once it ends the slot is free", async () => {
    const c = connect(pki().controller);
    const release = holdRecordLock(web1().stateDir, REG);
    let park: Promise<Outcome> | undefined;
    try {
      const before = auditLines(web1().logFile).length;
      // park-data waits for the record's lock, holding the agent's one slot
      park = unary(c, c.apply, { migrationId: REG, step: "fronts-park-data", action: Action.ACTION_PARK_DATA }, 30_000);
      await new Promise((r) => setTimeout(r, 500));
      const busy = await unary(c, c.hello, { protocolVersion: 1, controllerVersion: "audit-test" });
      expect(busy).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, qmCode: "BUSY" });
      const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 1);
      expect(lines).toHaveLength(1);
      expect(onlyLine(lines, "hello")).toMatchObject({ ...refusedLine("hostmaster", "BUSY"), reason: "agent busy: 1 operations running (maxConcurrentOps 1)" });
    } finally {
      release();
    }
    expect(await park).toMatchObject({ ok: true });
    expect(await unary(c, c.hello, { protocolVersion: 1, controllerVersion: "audit-test" })).toMatchObject({ ok: true });
  });

  it("a call without a deadline that does not end is answered TIMED_OUT at operationTimeout, one line; its slot is free at once; what it did later is logged", async () => {
    await reconfigure(s, "web1", { operationTimeout: 1 });
    const c = connect(pki().controller);
    const release = holdRecordLock(web1().stateDir, REG);
    try {
      const before = auditLines(web1().logFile).length;
      const started = Date.now();
      const stuck = await unary(c, c.apply, { migrationId: REG, step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA }, null);
      const took = Date.now() - started;
      expect(stuck).toMatchObject({ ok: false, code: grpc.status.DEADLINE_EXCEEDED, qmCode: "TIMED_OUT" });
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(5_000);
      // the only slot is free although the operation still waits for the lock
      expect(await unary(c, c.hello, { protocolVersion: 1, controllerVersion: "audit-test" })).toMatchObject({ ok: true });
      const lines = await auditLinesAfter(web1().logFile, before, (l) => l.length >= 2);
      expect(lines).toHaveLength(2);
      expect(onlyLine(lines, "apply")).toMatchObject({
        msg: "operation",
        level: WARN,
        client: "hostmaster",
        peer: PEER,
        migrationId: REG,
        action: "unpark-data",
        result: "error",
        code: "TIMED_OUT",
        reason: "apply did not finish within operationTimeout (1 s); it may still finish",
      });
      expect(onlyLine(lines, "hello")).toMatchObject({ msg: "operation", result: "ok" });
    } finally {
      release();
    }
    // the lock is gone: the operation ends, and says so in a line of its own (not a second audit line)
    const late = await auditLinesAfter(web1().logFile, 0, (l) => l.some((x) => x.msg === "operation ended after its bound"));
    expect(late.filter((l) => l.msg === "operation ended after its bound")).toEqual([
      expect.objectContaining({ op: "apply", migrationId: REG, action: "unpark-data", result: "ok", client: "hostmaster" }),
    ]);
    await reconfigure(s, "web1", { operationTimeout: 300 });
    await expectUnchanged(s);
  });
});

// ---- rsync bytes ---------------------------------------------------------------------------------

describe("an rsync run's audit line counts the bytes each way", () => {
  let s: Scenario;
  afterAll(async () => {
    await s?.cleanup();
  });

  it("fetch-site sends (bytesOut), push-site receives (bytesIn): more than a 256 KiB file each", async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], tls: true });
    // incompressible code that only the fronts have: fetch-site brings it from web1, push-site takes it to both
    const big = 256 * 1024;
    const blob = Buffer.alloc(big);
    for (let i = 0; i < big; i++) blob[i] = (i * 2654435761) >>> 24;
    for (const f of s.cluster.fronts) fs.writeFileSync(path.join(siteDir(f.root, s.from, s.site), "modules", "custom", "m", "big.bin"), blob);

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    const id = run.events[0]?.migrationId;

    const rsyncs = (front: string) => auditLines(s.cluster.front(front).logFile).filter((l) => l.op === "rsync" && l.migrationId === id);
    const [fetch, ...pushes1] = rsyncs("web1");
    expect(fetch).toMatchObject({ msg: "operation", result: "ok", step: "fetch-site", site: s.site, exitCode: 0, client: "hostmaster", peer: PEER });
    expect(pushes1).toHaveLength(1);
    const pushes = [...pushes1, ...rsyncs("web2")];
    expect(pushes).toHaveLength(2);
    const bytes = (l: AuditLine | undefined) => ({ bytesIn: Number(l?.bytesIn), bytesOut: Number(l?.bytesOut) });
    const f = bytes(fetch);
    expect(f.bytesOut, JSON.stringify(fetch)).toBeGreaterThan(big);
    expect(f.bytesIn).toBeGreaterThan(0);
    expect(f.bytesIn).toBeLessThan(f.bytesOut);
    for (const p of pushes) {
      expect(p).toMatchObject({ msg: "operation", result: "ok", step: "push-site", exitCode: 0 });
      const b = bytes(p);
      expect(b.bytesIn, JSON.stringify(p)).toBeGreaterThan(big);
      expect(b.bytesOut).toBeGreaterThan(0);
      expect(b.bytesOut).toBeLessThan(b.bytesIn);
    }
  });
});
