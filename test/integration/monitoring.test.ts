// Monitoring a real TLS cluster (issue 10, items 5 and 7): an agent's /metrics before and after a
// migration, metrics off where the config has none, the controller's textfile for node_exporter (written
// by rename), gRPC server reflection as grpcurl uses it, and `quick-migrate agents` with every front up
// and with one down.
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer, loadSync } from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, runController } from "../../scripts/lib/cluster.js";
import { Action, type AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";
import { auditLinesAfter, auditLines } from "../helpers/auditLog.js";
import { listeners, processTree } from "../helpers/listening.js";
import { type Scenario, expectMigrated, setupScenario } from "../helpers/scenario.js";
import { agentClient, sslCredentials, targetName } from "../helpers/tls.js";
import { eventually } from "../helpers/eventually.js";
import { samples } from "../helpers/exposition.js";

const PACKAGE_VERSION = (JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;

// ---- helpers -------------------------------------------------------------------------------------



/** The address an agent logged as "metrics listening", once it is in its log file. */
function metricsAddress(logFile: string): string | undefined {
  for (const l of fs.readFileSync(logFile, "utf8").split("\n")) {
    if (!l.includes('"metrics listening"')) continue;
    return (JSON.parse(l) as { address: string }).address;
  }
  return undefined;
}

const notAfterOf = (certFile: string): Date => new Date(new X509Certificate(fs.readFileSync(certFile)).validTo);

function unary<Req, Res>(
  client: AgentClient,
  method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall,
  req: Req,
): Promise<{ ok: true; value: Res } | { ok: false; code: grpc.status; details: string }> {
  return new Promise((resolve) => {
    method.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) =>
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res }),
    );
  });
}

// ---- a reflection client, as grpcurl is one ------------------------------------------------------

/** @grpc/reflection ships the reflection protos: a client loads them from there, as any other client would load them from grpc's repository. */
const REFLECTION_PROTO_DIR = path.join(path.dirname(createRequire(import.meta.url).resolve("@grpc/reflection")), "..", "proto");

interface ReflectionResponse {
  list_services_response?: { service: Array<{ name: string }> };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

type ReflectionStream = grpc.ClientDuplexStream<object, ReflectionResponse>;

function reflectionClient(version: "v1" | "v1alpha", address: string, credentials: grpc.ChannelCredentials): grpc.Client & { ServerReflectionInfo(): ReflectionStream } {
  const def = loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [REFLECTION_PROTO_DIR], keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> } };
  const Ctor = pkg.grpc.reflection[version]?.ServerReflection as grpc.ServiceClientConstructor;
  return new Ctor(address, credentials, targetName("web1")) as unknown as grpc.Client & { ServerReflectionInfo(): ReflectionStream };
}

/** One request on `stream`, its one response. */
function ask(stream: ReflectionStream, req: object): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    stream.once("error", onError);
    stream.once("data", (res: ReflectionResponse) => {
      stream.off("error", onError);
      resolve(res);
    });
    stream.write(req);
  });
}

/** How a stream that was refused ended; one that answers instead is OK (and cancelled). */
function refusal(stream: ReflectionStream, req: object): Promise<{ code: grpc.status; details: string }> {
  return new Promise((resolve) => {
    stream.on("error", (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details }));
    stream.on("data", () => {
      resolve({ code: grpc.status.OK, details: "answered" });
      stream.cancel();
    });
    stream.write(req);
  });
}

/** The file descriptors a reflection answer carries, as one FileDescriptorSet (field 1, repeated). */
function descriptorSet(files: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const len: number[] = [];
    for (let n = f.length; ; n >>>= 7) {
      if (n < 0x80) {
        len.push(n);
        break;
      }
      len.push((n & 0x7f) | 0x80);
    }
    parts.push(Buffer.from([0x0a, ...len]), f);
  }
  return Buffer.concat(parts);
}

const hasStrace = (): boolean => {
  try {
    execFileSync("strace", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

// ---- the cluster ---------------------------------------------------------------------------------

describe("monitoring a TLS cluster", () => {
  let s: Scenario;
  let textfile: string;
  let metricsUrl: string;
  let migrationId: string;
  const web1 = () => s.cluster.front("web1");
  const pki = () => {
    if (!s.pki) throw new Error("no pki");
    return s.pki;
  };
  const scrape = async (): Promise<Map<string, number>> => {
    const r = await fetch(`${metricsUrl}/metrics`);
    expect(r.status).toBe(200);
    return samples(await r.text());
  };
  const delta = (before: Map<string, number>, after: Map<string, number>, key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);

  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1", agentConfig: { metrics: { listen: "127.0.0.1:0" } } }, { name: "web2" }], tls: true });
    const address = await eventually("web1's metrics address in its log", () => metricsAddress(web1().logFile), (a) => a !== undefined);
    metricsUrl = `http://${address}`;
    const dir = path.join(s.baseDir, "node-exporter");
    fs.mkdirSync(dir);
    textfile = path.join(dir, "quick_migrate.prom");
    s.cluster.writeControllerConfig({ extra: { metrics: { textfile } } });
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it("metrics are off where the config has none: no port but the gRPC one, no log line", () => {
    const web2 = s.cluster.front("web2");
    expect(fs.readFileSync(web2.logFile, "utf8")).not.toContain("metrics listening");
    const held = (pid: number) => {
      const tree = processTree([pid]);
      return listeners()
        .filter((l) => l.pids.some((p) => tree.has(p)))
        .map((l) => l.address)
        .sort();
    };
    expect(held(web2.process?.pid as number)).toEqual([web2.address]);
    expect(held(web1().process?.pid as number)).toEqual([web1().address, metricsUrl.slice("http://".length)].sort());
  });

  it("a scrape after a migration shows the counters moved", async () => {
    const before = await scrape();
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    migrationId = String(run.events[0]?.migrationId);
    const after = await scrape();
    const moved = (key: string) => delta(before, after, key);
    expect(moved('quick_migrate_agent_operations_total{op="preflight",result="ok"}')).toBe(1);
    expect(moved('quick_migrate_agent_operations_total{op="hello",result="ok"}')).toBeGreaterThanOrEqual(1);
    // park, restore, remove the old site folder
    const applied = moved('quick_migrate_agent_operations_total{op="apply",result="ok"}');
    expect(applied).toBeGreaterThanOrEqual(3);
    expect(moved('quick_migrate_agent_operation_duration_seconds_count{op="apply"}')).toBe(applied);
    // web1 is the front the site is fetched from, and one it is pushed to
    expect(moved('quick_migrate_agent_operations_total{op="rsync",result="ok"}')).toBe(2);
    expect(moved('quick_migrate_agent_operation_duration_seconds_count{op="rsync"}')).toBe(2);
    // the bytes each way are those the audit lines of the migration's two rsync runs carry (how many
    // depends on what the hostmaster's stale copy already has: rsync sends only differences)
    const rsyncLines = (await auditLinesAfter(web1().logFile, 0, (l) => l.filter((x) => x.op === "rsync" && x.migrationId === migrationId).length >= 2)).filter(
      (x) => x.op === "rsync" && x.migrationId === migrationId,
    );
    const sum = (field: "bytesIn" | "bytesOut") => rsyncLines.reduce((n, x) => n + Number(x[field]), 0);
    expect(moved('quick_migrate_agent_rsync_bytes_total{direction="in"}')).toBe(sum("bytesIn"));
    expect(moved('quick_migrate_agent_rsync_bytes_total{direction="out"}')).toBe(sum("bytesOut"));
    expect(sum("bytesIn")).toBeGreaterThan(0);
    expect(sum("bytesOut")).toBeGreaterThan(0);
    expect([...after.keys()].filter((k) => k.includes("_refused_total")), "nothing was refused").toEqual([]);
    expect(after.get("quick_migrate_agent_operations_in_flight")).toBe(0);
    expect(after.get("quick_migrate_agent_parked_data_dirs")).toBe(0);
    expect(after.get("quick_migrate_agent_unfinished_migrations")).toBe(0);
    expect(after.get("quick_migrate_agent_certificate_not_after_timestamp_seconds")).toBe(notAfterOf(pki().fronts.web1?.cert as string).getTime() / 1000);
    expect(after.get(`quick_migrate_agent_build_info{version="${PACKAGE_VERSION}",protocol="2",node="${process.versions.node}"}`)).toBe(1);
    expect(after.get("quick_migrate_agent_process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("the controller wrote the migration's figures to the textfile", () => {
    const text = fs.readFileSync(textfile, "utf8");
    const f = samples(text);
    expect(f.get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(1);
    expect([...f.keys()].find((k) => k.startsWith("quick_migrate_last_run_info"))).toBe(
      `quick_migrate_last_run_info{command="migrate",outcome="migrated",migration_id="${migrationId}",site="${s.site}",new_site="${s.site}"}`,
    );
    for (const step of ["preflight", "lock", "fronts-park-data", "fetch-site", "push-site", "fronts-restore-data", "fronts-remove-old", "finish"]) {
      expect(f.get(`quick_migrate_step_duration_seconds_count{step="${step}",direction="forward"}`), step).toBe(1);
      expect(f.get(`quick_migrate_last_run_step_duration_seconds{step="${step}",direction="forward"}`), step).toBeGreaterThanOrEqual(0);
    }
    expect(Math.abs((f.get("quick_migrate_last_run_timestamp_seconds") ?? 0) - Date.now() / 1000)).toBeLessThan(120);
    expect(f.get("quick_migrate_last_run_duration_seconds")).toBeGreaterThan(0);
    expect(fs.statSync(textfile).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(path.dirname(textfile)), "no temp or lock file left for the collector to see").toEqual(["quick_migrate.prom"]);
  });

  it.skipIf(!hasStrace())("the next run's figures replace the file by rename, never by writing it in place, and count on", () => {
    // a migration refused at preflight (the site is no longer on its old platform): a run with an outcome all the same
    const trace = path.join(s.baseDir, "controller.strace");
    const main = path.join(repoRoot(), "dist", "controller", "main.js");
    const r = (() => {
      try {
        return {
          code: 0,
          out: execFileSync("strace", ["-f", "-qq", "-e", "trace=openat,rename,renameat,renameat2", "-o", trace, process.execPath, main, "migrate", s.site, "--from", s.from, "--to", s.to, "--json", "--config", s.cluster.controllerConfig], {
            encoding: "utf8",
            stdio: ["ignore", "pipe", "pipe"],
            env: { ...process.env, QM_LOG_LEVEL: "warn" },
          }),
        };
      } catch (err) {
        const e = err as { status: number; stdout: string };
        return { code: e.status, out: e.stdout };
      }
    })();
    expect(r.code, r.out).toBe(2);
    const calls = fs.readFileSync(trace, "utf8").split("\n");
    const named = calls.filter((l) => l.includes(`"${textfile}"`));
    expect(named.filter((l) => /openat\(.*O_(WRONLY|RDWR|CREAT|TRUNC)/.test(l)), "the textfile itself is never opened for writing").toEqual([]);
    const renames = named.filter((l) => /rename(at2?)?\(/.test(l));
    expect(renames, calls.filter((l) => l.includes("rename")).join("\n")).toHaveLength(1);
    expect(renames[0]).toContain(`"${path.dirname(textfile)}/.quick_migrate.prom.`);
    const f = samples(fs.readFileSync(textfile, "utf8"));
    expect(f.get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(1);
    expect(f.get('quick_migrate_runs_total{command="migrate",outcome="refused"}')).toBe(1);
    expect(f.get('quick_migrate_step_duration_seconds_count{step="preflight",direction="forward"}')).toBe(2);
    expect(f.get('quick_migrate_step_failures_total{step="preflight",direction="forward"}')).toBe(1);
    expect([...f.keys()].find((k) => k.startsWith("quick_migrate_last_run_info"))).toContain('outcome="refused"');
  });

  it("refused calls are counted by reason: a CN not allowed, a TLS client without a certificate", async () => {
    const before = await scrape();
    const intruder = agentClient(web1().address, sslCredentials(pki().ca, pki().notAllowed), targetName("web1"));
    const r = await unary(intruder, intruder.hello, { protocolVersion: 2, controllerVersion: "monitoring-test" });
    intruder.close();
    expect(r.ok).toBe(false);
    const anonymous = agentClient(web1().address, sslCredentials(pki().ca), targetName("web1"));
    expect((await unary(anonymous, anonymous.hello, { protocolVersion: 2, controllerVersion: "monitoring-test" })).ok).toBe(false);
    anonymous.close();
    const after = await eventually(
      "the handshake refusal counted",
      scrape,
      (m) => delta(before, m, 'quick_migrate_agent_refused_total{op="tls-handshake",reason="NOT_ALLOWED"}') >= 1,
    );
    expect(delta(before, after, 'quick_migrate_agent_refused_total{op="hello",reason="NOT_ALLOWED"}')).toBe(1);
    expect(delta(before, after, 'quick_migrate_agent_operations_total{op="hello",result="refused"}')).toBe(1);
  });

  it("parked data dirs are counted while a migration holds them", async () => {
    // the site on its way back, by hand: registered and parked on web1, then unparked
    const c = agentClient(web1().address, sslCredentials(pki().ca, pki().controller), targetName("web1"));
    try {
      const migration = { id: "monitoring-parked-1", from: s.to, site: s.site, to: s.from, newSite: s.site, dataDirs: ["files", "private/files"] };
      const pre = await unary(c, c.preflight, { migration, register: true, local: false });
      expect(pre.ok && pre.value.problems, JSON.stringify(pre)).toEqual([]);
      const park = await unary(c, c.apply, { migrationId: migration.id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
      expect(park.ok, JSON.stringify(park)).toBe(true);
      const parked = await scrape();
      expect(parked.get("quick_migrate_agent_parked_data_dirs")).toBe(2);
      expect(parked.get("quick_migrate_agent_unfinished_migrations")).toBe(1);
      const unpark = await unary(c, c.apply, { migrationId: migration.id, step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA });
      expect(unpark.ok, JSON.stringify(unpark)).toBe(true);
      const back = await scrape();
      expect(back.get("quick_migrate_agent_parked_data_dirs")).toBe(0);
      expect(back.get("quick_migrate_agent_unfinished_migrations")).toBe(0);
    } finally {
      c.close();
    }
  });

  it("a reflection client lists the services and rebuilds the API from the descriptors, as grpcurl does", async () => {
    const before = await scrape();
    const since = auditLines(web1().logFile).length;
    const client = reflectionClient("v1", web1().address, sslCredentials(pki().ca, pki().controller));
    try {
      const stream = client.ServerReflectionInfo();
      const listed = await ask(stream, { host: "", list_services: "*" });
      expect(listed.list_services_response?.service.map((x) => x.name).sort()).toEqual(["grpc.health.v1.Health", "quickmigrate.v1.Agent"]);
      const found = await ask(stream, { host: "", file_containing_symbol: "quickmigrate.v1.Agent" });
      const files = found.file_descriptor_response?.file_descriptor_proto ?? [];
      expect(files.length).toBeGreaterThan(0);
      const rebuilt = loadFileDescriptorSetFromBuffer(descriptorSet(files), { keepCase: true });
      const agent = rebuilt["quickmigrate.v1.Agent"] as unknown as Record<string, { path: string }>;
      expect(Object.values(agent).map((m) => m.path).sort()).toEqual(
        ["Apply", "Hello", "Inspect", "Preflight", "Rsync"].map((m) => `/quickmigrate.v1.Agent/${m}`),
      );
      const hello = rebuilt["quickmigrate.v1.HelloResponse"] as unknown as { type: { field: Array<{ name: string; number: number }> } };
      expect(hello.type.field.map((f) => `${f.number}:${f.name}`)).toEqual(
        expect.arrayContaining(["1:protocol_version", "4:root_id", "5:root", "6:root_free_bytes", "7:state_dir_free_bytes"]),
      );
      const missing = await ask(stream, { host: "", file_containing_symbol: "no.such.Service" });
      expect(missing.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
      stream.end();
      const lines = await auditLinesAfter(web1().logFile, since, (l) => l.some((x) => x.op === "reflection"));
      expect(lines.filter((l) => l.op === "reflection")).toEqual([expect.objectContaining({ client: pki().controller.name, result: "ok", requests: 3 })]);
    } finally {
      client.close();
    }
    // grpcurl asks v1alpha first (older servers know only it)
    const alpha = reflectionClient("v1alpha", web1().address, sslCredentials(pki().ca, pki().controller));
    try {
      const stream = alpha.ServerReflectionInfo();
      const listed = await ask(stream, { host: "", list_services: "*" });
      expect(listed.list_services_response?.service.map((x) => x.name)).toContain("quickmigrate.v1.Agent");
      stream.end();
    } finally {
      alpha.close();
    }
    const after = await eventually("the reflection streams counted", scrape, (m) => delta(before, m, 'quick_migrate_agent_operations_total{op="reflection",result="ok"}') >= 2);
    expect(delta(before, after, 'quick_migrate_agent_operations_total{op="reflection",result="ok"}')).toBe(2);
  });

  it("reflection: any CA-signed client may ask (the schema is public), none without a certificate, and a few streams each", async () => {
    const intruder = reflectionClient("v1", web1().address, sslCredentials(pki().ca, pki().notAllowed));
    const anonymous = reflectionClient("v1", web1().address, sslCredentials(pki().ca));
    try {
      const held = Array.from({ length: 4 }, () => intruder.ServerReflectionInfo());
      for (const h of held) expect((await ask(h, { host: "", list_services: "*" })).list_services_response?.service.length).toBe(2);
      const fifth = await refusal(intruder.ServerReflectionInfo(), { host: "", list_services: "*" });
      expect(fifth.code, fifth.details).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(fifth.details).toContain("already holds 4 reflection streams");
      for (const h of held) {
        h.on("error", () => undefined);
        h.cancel();
      }
      // its streams closed, the client may open one again
      await eventually(
        "a new stream once the others closed",
        async () => (await refusal(intruder.ServerReflectionInfo(), { host: "", list_services: "*" })).code,
        (code) => code === grpc.status.OK,
      );
      const none = await refusal(anonymous.ServerReflectionInfo(), { host: "", list_services: "*" });
      expect([grpc.status.UNAVAILABLE, grpc.status.UNAUTHENTICATED], `${grpc.status[none.code]}: ${none.details}`).toContain(none.code);
    } finally {
      intruder.close();
      anonymous.close();
    }
  });

  it("`quick-migrate agents` lists every front (exit 0), then one down (exit 1)", async () => {
    const json = await runController(s.cluster.controllerConfig, ["agents", "--json"]);
    expect(json.exitCode, json.stdout + json.stderr).toBe(0);
    const list = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(list.map((f) => f.name)).toEqual(["web1", "web2"]);
    for (const f of list) {
      const front = s.cluster.front(f.name as string);
      expect(f).toMatchObject({ address: front.address, local: false, reachable: true, agentVersion: PACKAGE_VERSION, protocolVersion: 2, root: front.root, health: "SERVING" });
      expect(f.rootFreeBytes).toBeGreaterThan(0);
      expect(f.stateDirFreeBytes).toBeGreaterThan(0);
      expect(f.rootId).toMatch(/^[0-9a-f]{32}$/);
      expect(f.certificate).toMatchObject({ notAfter: notAfterOf(pki().fronts[front.name]?.cert as string).toISOString(), verified: true, subject: `CN=${front.name}` });
    }
    const human = await runController(s.cluster.controllerConfig, ["agents"]);
    expect(human.exitCode, human.stderr).toBe(0);
    const lines = human.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^FRONT\s+ADDRESS\s+REACHABLE/);
    expect(lines[1]).toMatch(new RegExp(`^web1\\s+${web1().address}\\s+yes\\s+${PACKAGE_VERSION.replace(/\./g, "\\.")}\\s+2\\s`));
    expect(lines.at(-1)).toBe("2 fronts: 2 reachable");

    await s.cluster.stopAgent("web2");
    const started = Date.now();
    const downJson = await runController(s.cluster.controllerConfig, ["agents", "--json"]);
    expect(downJson.exitCode, downJson.stdout + downJson.stderr).toBe(1);
    expect(Date.now() - started, "a front that is down is given up within its bound").toBeLessThan(30_000);
    const downList = JSON.parse(downJson.stdout) as Array<Record<string, unknown>>;
    expect(downList[0]).toMatchObject({ name: "web1", reachable: true });
    expect(downList[1]).toMatchObject({ name: "web2", reachable: false, error: { code: "UNREACHABLE" } });
    const downHuman = await runController(s.cluster.controllerConfig, ["agents"]);
    expect(downHuman.exitCode).toBe(1);
    expect(downHuman.stdout).toMatch(/\nweb2\s+\S+\s+no\s/);
    expect(downHuman.stdout).toContain("  web2: UNREACHABLE: ");
    expect(downHuman.stdout.trimEnd().split("\n").at(-1)).toBe("2 fronts: 1 reachable, 1 not");
  });
});
