// Mutual TLS between the controller and real agent processes, with certificates made by the real
// deploy/tls/make-certs.sh: who gets in (and who does not), the controller's check of each agent's
// name, a full migration, and certificate, key and config reloads without a restart.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import YAML from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import {
  Action,
  type AgentClient,
  type ApplyResponse,
  type HelloResponse,
  type PreflightResponse,
  type RsyncFrame,
} from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { type Scenario, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";
import {
  type CertPair,
  NOT_ALLOWED_CN,
  type Outcome,
  agentClient,
  fingerprintOf,
  healthCheck,
  installPair,
  makeCerts,
  peerCertificate,
  renewFront,
  replaceFile,
  sslCredentials,
  targetName,
} from "../helpers/tls.js";
import { eventually } from "../helpers/eventually.js";

// ---- calls as data -------------------------------------------------------------------------------

const DEADLINE_MS = 10_000;

function unary<Req, Res>(
  client: AgentClient,
  method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall,
  req: Req,
): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    method.call(client, req, new grpc.Metadata(), { deadline: Date.now() + DEADLINE_MS }, (err, res) =>
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res }),
    );
  });
}

const migration = (s: Scenario) => ({ id: "mtls-probe-1", from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: ["files", "private/files"] });

// shared/version.ts reads package.json relative to dist/, so it cannot be imported from here
const hello = (c: AgentClient): Promise<Outcome<HelloResponse>> => unary(c, c.hello, { protocolVersion: 1, controllerVersion: "mtls-test" });
const preflight = (c: AgentClient, s: Scenario): Promise<Outcome<PreflightResponse>> =>
  unary(c, c.preflight, { migration: migration(s), register: true, local: false });
const apply = (c: AgentClient, s: Scenario): Promise<Outcome<ApplyResponse>> =>
  unary(c, c.apply, { migrationId: migration(s).id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });

/** Opens an Rsync stream with a start frame and resolves with how it ended. */
function rsync(c: AgentClient, s: Scenario): Promise<{ code: grpc.status; details: string; frames: number }> {
  return new Promise((resolve) => {
    const call = c.rsync({ deadline: Date.now() + 5_000 });
    let frames = 0;
    let error: grpc.ServiceError | undefined;
    call.on("data", (_f: RsyncFrame) => {
      frames++;
      call.cancel();
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("status", (st: grpc.StatusObject) => {
      setImmediate(() => resolve({ code: error?.code ?? st.code, details: error?.details ?? st.details, frames }));
    });
    call.write({
      frame: {
        $case: "start",
        value: { migrationId: migration(s).id, step: "push-site", args: [...DAEMON_OVER_RSH] },
      },
    });
    call.end();
  });
}

/** The agent's audit lines ("operation") so far. */
function auditLines(logFile: string): Array<Record<string, unknown>> {
  return fs
    .readFileSync(logFile, "utf8")
    .split("\n")
    .filter((l) => l.includes('"msg":"operation"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function logLines(logFile: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const l of fs.readFileSync(logFile, "utf8").split("\n")) {
    try {
      const v: unknown = JSON.parse(l);
      if (typeof v === "object" && v !== null) out.push(v as Record<string, unknown>);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

/** The agent's own record of registered migrations: a refused preflight must leave none. */
function registered(stateDir: string): string[] {
  const dir = path.join(stateDir, "migrations");
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}


const clients: AgentClient[] = [];
function client(address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}): AgentClient {
  const c = agentClient(address, credentials, options);
  clients.push(c);
  return c;
}
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

const REFUSED_AT_HANDSHAKE = [grpc.status.UNAVAILABLE, grpc.status.UNAUTHENTICATED];

// ---- who gets in ---------------------------------------------------------------------------------

describe("a TLS agent lets in only clients with a certificate from its CA, and runs operations only for allowed CNs", () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }], tls: true });
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  const web1 = () => s.cluster.front("web1");
  const pki = () => {
    if (!s.pki) throw new Error("no pki");
    return s.pki;
  };

  /** Every refused call: no audit line with a result, no registration, every tree as it was. */
  async function expectNothingRan(auditBefore: number): Promise<void> {
    // the agent's output reaches its log file asynchronously
    await new Promise((r) => setTimeout(r, 300));
    const audits = auditLines(web1().logFile).slice(auditBefore);
    expect(audits.filter((a) => a.result === "ok"), "an operation succeeded").toEqual([]);
    expect(registered(web1().stateDir), "a migration got registered").toEqual([]);
    await expectUnchanged(s);
  }

  it("the controller's own certificate works (the baseline for the refusals below)", async () => {
    const c = client(web1().address, sslCredentials(pki().ca, pki().controller), targetName("web1"));
    const before = auditLines(web1().logFile).length;
    const r = await hello(c);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
    // its audit line is in the log before the next test counts them
    const [line] = (await eventually("the audit line of that hello", () => auditLines(web1().logFile).slice(before), (l) => l.length > 0));
    expect(line).toMatchObject({ op: "hello", client: pki().controller.name, result: "ok" });
  });

  it("a plaintext client is refused: the call fails, nothing runs", async () => {
    const before = auditLines(web1().logFile).length;
    const c = client(web1().address, grpc.credentials.createInsecure());
    for (const r of [await hello(c), await preflight(c, s), await apply(c, s)]) {
      expect(r.ok, JSON.stringify(r)).toBe(false);
      if (!r.ok) expect(REFUSED_AT_HANDSHAKE, `${grpc.status[r.code]}: ${r.details}`).toContain(r.code);
    }
    await expectNothingRan(before);
  });

  it("a TLS client without a client certificate is refused", async () => {
    const before = auditLines(web1().logFile).length;
    const c = client(web1().address, sslCredentials(pki().ca), targetName("web1"));
    for (const r of [await hello(c), await preflight(c, s), await apply(c, s)]) {
      expect(r.ok, JSON.stringify(r)).toBe(false);
      if (!r.ok) expect(REFUSED_AT_HANDSHAKE, `${grpc.status[r.code]}: ${r.details}`).toContain(r.code);
    }
    // nor may it ask for health: that needs a CA-signed certificate too
    const h = await healthCheck(web1().address, sslCredentials(pki().ca), targetName("web1"));
    expect(h.ok, JSON.stringify(h)).toBe(false);
    await expectNothingRan(before);
  });

  it("a client certificate from another CA is refused, even with the allowed CN", async () => {
    const before = auditLines(web1().logFile).length;
    const other = pki().otherCa.client;
    expect(other.name).toBe(pki().controller.name);
    const c = client(web1().address, sslCredentials(pki().ca, other), targetName("web1"));
    for (const r of [await hello(c), await preflight(c, s), await apply(c, s)]) {
      expect(r.ok, JSON.stringify(r)).toBe(false);
      if (!r.ok) expect(REFUSED_AT_HANDSHAKE, `${grpc.status[r.code]}: ${r.details}`).toContain(r.code);
    }
    const h = await healthCheck(web1().address, sslCredentials(pki().ca, other), targetName("web1"));
    expect(h.ok, JSON.stringify(h)).toBe(false);
    await expectNothingRan(before);
  });

  it("a CA-signed certificate whose CN is not in allowedClients gets PERMISSION_DENIED naming the CN; health answers SERVING", async () => {
    const before = auditLines(web1().logFile).length;
    const linesBefore = logLines(web1().logFile).length;
    const creds = sslCredentials(pki().ca, pki().notAllowed);
    const c = client(web1().address, creds, targetName("web1"));
    const outcomes = { hello: await hello(c), preflight: await preflight(c, s), apply: await apply(c, s) };
    for (const [op, r] of Object.entries(outcomes)) {
      expect(r.ok, `${op}: ${JSON.stringify(r)}`).toBe(false);
      if (r.ok) continue;
      expect(r.code, `${op}: ${grpc.status[r.code]}: ${r.details}`).toBe(grpc.status.PERMISSION_DENIED);
      expect(r.details, op).toContain(NOT_ALLOWED_CN);
    }
    for (const service of ["", "quickmigrate.v1.Agent"]) {
      const h = await healthCheck(web1().address, creds, targetName("web1"), service);
      expect(h, `health ${JSON.stringify(service)}`).toEqual({ ok: true, value: "SERVING" });
    }
    await expectNothingRan(before);
    // the refusals are audited with the client's CN: one "refused" line per call, none as an operation
    expect(auditLines(web1().logFile).slice(before)).toEqual([]);
    // (the handshakes the earlier tests' clients may still be retrying are refused lines too, of no client)
    const refused = logLines(web1().logFile).slice(linesBefore).filter((l) => l.msg === "refused" && l.client === NOT_ALLOWED_CN);
    expect(refused.map((a) => a.op).sort()).toEqual(["apply", "hello", "preflight"]);
    for (const a of refused) expect(a, JSON.stringify(a)).toMatchObject({ result: "refused", code: "NOT_ALLOWED" });
  });

  it("the same CN opening an rsync tunnel gets PERMISSION_DENIED naming the CN, and no rsync starts", async () => {
    const before = auditLines(web1().logFile).length;
    const c = client(web1().address, sslCredentials(pki().ca, pki().notAllowed), targetName("web1"));
    const tunnel = await rsync(c, s);
    expect(tunnel.frames, "rsync talked").toBe(0);
    await expectNothingRan(before);
    expect(fs.readFileSync(web1().logFile, "utf8"), "an rsync server started").not.toContain('"msg":"rsync server start"');
    expect(tunnel.code, `rsync: ${grpc.status[tunnel.code]}: ${tunnel.details}`).toBe(grpc.status.PERMISSION_DENIED);
    expect(tunnel.details).toContain(NOT_ALLOWED_CN);
  });

  it("a client that checks the agent against the wrong name refuses it (the agent's certificate names web1 only)", async () => {
    const c = client(web1().address, sslCredentials(pki().ca, pki().controller), targetName("web2"));
    const r = await hello(c);
    expect(r.ok, JSON.stringify(r)).toBe(false);
  });
});

// ---- the controller ------------------------------------------------------------------------------

describe("the controller over mTLS", () => {
  let scenario: Scenario | undefined;
  afterEach(async () => {
    await scenario?.cleanup();
    scenario = undefined;
  });

  it("refuses a front whose agent's certificate does not carry the front's configured name (exit 2, naming the front)", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], tls: true }));
    // web2's address now leads to web1's agent, whose certificate says web1
    s.cluster.writeControllerConfig({
      extra: {
        fronts: [
          { name: "web1", address: s.cluster.front("web1").address },
          { name: "web2", address: s.cluster.front("web1").address },
        ],
      },
    });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--dry-run", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    const result = run.events.at(-1);
    expect(result).toMatchObject({ event: "result", outcome: "refused", exitCode: 2 });
    const message = String(result?.message);
    expect(message).toMatch(/\bweb2\b/);
    expect(message, "web1 is fine").not.toMatch(/\bweb1:/);
    expect(message, "the message says it is the certificate").toMatch(/web2: the agent's certificate does not name this front: Host: web2\. is not in the cert's altnames: DNS:web1/);
    await expectUnchanged(s);
    expect(fs.existsSync(path.join(s.cluster.masterState, "migrations")), "no journal for a refused migration").toBe(false);
  });

  it("migrates a site across two fronts over mTLS; every audit line names the controller's CN", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], tls: true }));
    const controllerYaml = YAML.parse(fs.readFileSync(s.cluster.controllerConfig, "utf8")) as Record<string, unknown>;
    expect(controllerYaml.insecure).toBeUndefined();
    expect(controllerYaml.tls).toMatchObject({ ca: s.pki?.ca, cert: s.pki?.controller.cert, key: s.pki?.controller.key });
    for (const f of s.cluster.fronts) {
      const agentYaml = YAML.parse(fs.readFileSync(f.configFile, "utf8")) as Record<string, unknown>;
      expect(agentYaml).toMatchObject({ tls: { ca: s.pki?.ca }, allowedClients: ["hostmaster"] });
      expect(agentYaml.insecure).toBeUndefined();
    }

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ event: "result", outcome: "migrated", exitCode: 0 });
    await expectMigrated(s);
    for (const f of s.cluster.fronts) {
      const audits = auditLines(f.logFile);
      expect(audits.map((a) => a.op)).toEqual(expect.arrayContaining(["hello", "preflight", "apply", "rsync"]));
      for (const a of audits) expect(a, `${f.name}: ${JSON.stringify(a)}`).toMatchObject({ client: "hostmaster", result: "ok" });
    }
  });

  it("a certificate replaced in the middle of a migration does not disturb it", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], tls: true }));
    const pkiDir = s.pki?.dir as string;
    const renewed = path.join(s.baseDir, "renewed");
    await makeCerts(["--ca-dir", pkiDir, renewed, "hostmaster", "web1"]);
    // the maintenanceOn hook (after preflight opened the connections) swaps web1's certificate and key
    // and waits for the agent to have reloaded them; the rest of the migration runs on
    const swap = [
      "const fs = require('node:fs');",
      // (each replacement keeps the owner of the file it replaces: the agent runs as its own user)
      `for (const f of ['web1.pem', 'web1-key.pem']) { const dst = ${JSON.stringify(pkiDir)} + '/' + f; const st = fs.statSync(dst); fs.copyFileSync(${JSON.stringify(renewed)} + '/' + f, dst + '.new'); fs.chownSync(dst + '.new', st.uid, st.gid); fs.renameSync(dst + '.new', dst); }`,
      `const until = Date.now() + 10000; const log = ${JSON.stringify(s.cluster.front("web1").logFile)};`,
      "(function wait() { if (fs.readFileSync(log, 'utf8').includes('tls material reloaded')) process.exit(0); if (Date.now() > until) process.exit(1); setTimeout(wait, 50); })();",
    ].join("\n");
    s.cluster.writeControllerConfig({ hooks: { maintenanceOn: [process.execPath, "-e", swap] } });
    const pid = s.cluster.front("web1").process?.pid;
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    expect(s.cluster.front("web1").process?.pid).toBe(pid);
    // and a new connection now meets the new certificate
    const pki = s.pki as NonNullable<Scenario["pki"]>;
    const seen = await peerCertificate(s.cluster.front("web1").address, pki.ca, pki.controller, "web1");
    expect(seen.fingerprint256).toBe(fingerprintOf(path.join(renewed, "web1.pem")));
  });
});

// ---- reloads without a restart -------------------------------------------------------------------

describe("an agent reloads its certificate, key and config without a restart", () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }], tls: true });
  });
  afterAll(async () => {
    await s?.cleanup();
  });
  const web1 = () => s.cluster.front("web1");
  const pki = () => {
    if (!s.pki) throw new Error("no pki");
    return s.pki;
  };
  const presented = async () => (await peerCertificate(web1().address, pki().ca, pki().controller, "web1")).fingerprint256;
  const helloOverTls = (who: CertPair) => hello(client(web1().address, sslCredentials(pki().ca, who), targetName("web1")));

  it("a replaced certificate and key apply to new connections; same process", async () => {
    const pid = web1().process?.pid;
    const installed = pki().fronts.web1;
    if (!installed) throw new Error("no web1 pair");
    const old = fingerprintOf(installed.cert);
    expect(await presented()).toBe(old);

    const fresh = await renewFront(pki(), "web1", path.join(s.baseDir, "renew-1"));
    const next = fingerprintOf(fresh.cert);
    expect(next).not.toBe(old);
    installPair(fresh, installed);

    await eventually("the agent presents the new certificate", presented, (fp) => fp === next);
    expect(web1().process?.pid).toBe(pid);
    expect(web1().process?.exitCode).toBeNull();
    const r = await helloOverTls(pki().controller);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
  });

  it("a garbage certificate file is rejected with a log line, and the previous certificate stays in force", async () => {
    const pid = web1().process?.pid;
    const installed = pki().fronts.web1;
    if (!installed) throw new Error("no web1 pair");
    const current = await presented();
    const linesBefore = logLines(web1().logFile).length;

    replaceFile(installed.cert, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
    const complaint = await eventually(
      "a log line about the rejected certificate",
      () => logLines(web1().logFile).slice(linesBefore).filter((l) => typeof l.level === "number" && l.level >= 40 && JSON.stringify(l).includes(installed.cert)),
      (lines) => lines.length > 0,
    );
    expect(complaint.length).toBeGreaterThan(0);

    // still serving, with the certificate it had
    expect(await presented()).toBe(current);
    const r = await helloOverTls(pki().controller);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
    expect(web1().process?.pid).toBe(pid);
    expect(web1().process?.exitCode).toBeNull();
  });

  it("a CN added to allowedClients in the config file gets in without a restart", async () => {
    const pid = web1().process?.pid;
    const refused = await helloOverTls(pki().notAllowed);
    expect(refused, JSON.stringify(refused)).toMatchObject({ ok: false, code: grpc.status.PERMISSION_DENIED });

    const config = YAML.parse(fs.readFileSync(web1().configFile, "utf8")) as { allowedClients: string[] };
    config.allowedClients = [...config.allowedClients, NOT_ALLOWED_CN];
    replaceFile(web1().configFile, YAML.stringify(config));

    const r = await eventually(
      `${NOT_ALLOWED_CN} is let in`,
      () => helloOverTls(pki().notAllowed),
      (o) => o.ok,
    );
    expect(r.ok).toBe(true);
    // the controller still gets in
    expect(await helloOverTls(pki().controller)).toMatchObject({ ok: true });
    expect(web1().process?.pid).toBe(pid);
    expect(web1().process?.exitCode).toBeNull();

    // a config file that does not parse is rejected with a log line; the running config stays
    const good = fs.readFileSync(web1().configFile, "utf8");
    replaceFile(web1().configFile, `${good}frobnicate: [\n`);
    await eventually(
      "the agent logs the rejected config",
      async () => fs.readFileSync(web1().logFile, "utf8"),
      (log) => log.includes('"msg":"config reload rejected: the running config stays in force"'),
    );
    expect(await helloOverTls(pki().notAllowed)).toMatchObject({ ok: true });
    expect(await helloOverTls(pki().controller)).toMatchObject({ ok: true });
    replaceFile(web1().configFile, good);
  });
});
