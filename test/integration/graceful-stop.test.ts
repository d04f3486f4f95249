// The agent's graceful stop (issue 10 item 6), on real agent processes: SIGTERM or SIGINT makes health
// NOT_SERVING first, refuses new calls (UNAVAILABLE, STOPPING) while health still answers, lets the
// operations in flight finish within stopTimeout — a rename is always finished, whatever the bound —
// ends an rsync still running past it, and exits 0. A second signal exits at once (128 + its number).
// An Apply is held open mid-rename by QM_AGENT_FAULT=pause-mid (after each data dir's rename, before
// its ledger entry).
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { ClusterFront } from "../../scripts/lib/cluster.js";
import { parkedRel } from "../../shared/migration.js";
import { Action, type AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { apply, hello, insecureClient, preflight, startFrame, tunnel } from "../helpers/agentRpc.js";
import { logLines, waitForLines } from "../helpers/agentLog.js";
import { DATA_DIRS, type Scenario, setupScenario, siteDir } from "../helpers/scenario.js";
import { healthCheck, healthWatch } from "../helpers/tls.js";
import { readRecord } from "../helpers/agentRecord.js";

let scenario: Scenario | undefined;
const clients: AgentClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await scenario?.cleanup();
  scenario = undefined;
});

async function agentWith(opts: { fault?: string; stopTimeout: number }): Promise<{ s: Scenario; web1: ClusterFront; client: AgentClient }> {
  const s = (scenario = await setupScenario({
    fronts: [{ name: "web1", ...(opts.fault ? { env: { QM_AGENT_FAULT: opts.fault } } : {}), agentConfig: { stopTimeout: opts.stopTimeout } }],
  }));
  const web1 = s.cluster.front("web1");
  const client = insecureClient(web1.address);
  clients.push(client);
  return { s, web1, client };
}

async function register(s: Scenario, client: AgentClient, id: string): Promise<void> {
  const res = await preflight(client, { migration: { id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] }, register: true, local: false });
  expect(res.ok && res.value.problems, JSON.stringify(res)).toEqual([]);
}

/** Sends `signal` to the front's agent; resolves with its exit code and how long it took to exit. */
async function signalAndExit(web1: ClusterFront, signal: NodeJS.Signals): Promise<{ exitCode: number | undefined; ms: number }> {
  const child = web1.process;
  if (!child) throw new Error("agent not running");
  const started = Date.now();
  child.kill(signal);
  const r = await child;
  return { exitCode: r.exitCode, ms: Date.now() - started };
}

const insecureHealth = (address: string) => healthCheck(address, grpc.credentials.createInsecure());

function ledgerOf(web1: ClusterFront, id: string): Array<{ dataDir: string; at: string; moving?: string }> {
  return readRecord<{ ledger: Array<{ dataDir: string; at: string; moving?: string }> }>(web1.stateDir, id).ledger;
}

/** Every data dir is where the ledger says, and only there: parked, none moving. */
function expectParked(s: Scenario, web1: ClusterFront, id: string): void {
  expect(ledgerOf(web1, id).map((e) => ({ dataDir: e.dataDir, at: e.at, moving: e.moving }))).toEqual(DATA_DIRS.map((d) => ({ dataDir: d, at: "park", moving: undefined })));
  for (const d of DATA_DIRS) {
    expect(fs.existsSync(path.join(web1.root, parkedRel(id, d))), `${d} parked`).toBe(true);
    expect(fs.existsSync(path.join(siteDir(web1.root, s.from, s.site), d)), `${d} gone from the old site folder`).toBe(false);
  }
}

describe("the agent's graceful stop", () => {
  it("idle: SIGINT sends NOT_SERVING to a Watch, ends it UNAVAILABLE, and exits 0 at once", async () => {
    const { web1 } = await agentWith({ stopTimeout: 60 });
    const w = healthWatch(web1.address, grpc.credentials.createInsecure());
    expect(await w.first).toEqual({ ok: true, value: "SERVING" });
    const { exitCode, ms } = await signalAndExit(web1, "SIGINT");
    web1.process = null;
    expect(exitCode).toBe(0);
    expect(ms).toBeLessThan(3000);
    expect(w.seen).toEqual(["SERVING", "NOT_SERVING"]);
    expect((await w.ended).code).toBe(grpc.status.UNAVAILABLE);
    w.cancel();
    // (pino writes asynchronously: the last lines of a process that exits may reach its log out of order; their times do not)
    const lines = logLines(web1.logFile);
    const stopping = lines.find((l) => l.msg === "agent stopping");
    const notServing = lines.find((l) => l.msg === "not serving");
    const stopped = lines.find((l) => l.msg === "agent stopped");
    expect(notServing).toMatchObject({ component: "health", status: "NOT_SERVING", reasons: [{ code: "STOPPING", message: "the agent is stopping" }] });
    expect([stopping?.signal, stopped?.signal]).toEqual(["SIGINT", "SIGINT"]);
    expect(String(stopping?.time) <= String(notServing?.time) && String(notServing?.time) <= String(stopped?.time)).toBe(true);
  });

  it("SIGTERM during a long Apply: NOT_SERVING and new calls refused (STOPPING) while it finishes; its client gets its answer; exit 0; the data where the ledger says", async () => {
    const { s, web1, client } = await agentWith({ fault: "pause-mid:park-data:1500", stopTimeout: 60 });
    const id = "graceful-stop-1";
    await register(s, client, id);
    const parking = apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    await waitForLines(web1.logFile, (l) => l.msg === "fault injection fired", "the first data dir renamed, the Apply paused");
    const child = web1.process;
    if (!child) throw new Error("agent not running");
    child.kill("SIGTERM");
    await waitForLines(web1.logFile, (l) => l.msg === "waiting for the operations in flight", "the stop waiting");
    expect(logLines(web1.logFile).find((l) => l.msg === "waiting for the operations in flight")).toMatchObject({ inFlight: ["apply"], stopTimeout: 60 });

    // during the drain: health answers NOT_SERVING, on the old connection and a new one; operations are refused
    expect(await insecureHealth(web1.address)).toEqual({ ok: true, value: "NOT_SERVING" });
    const refused = await hello(client, { protocolVersion: 2, controllerVersion: "0.1.0" });
    expect(refused).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, qmCode: "STOPPING" });
    const fresh = insecureClient(web1.address);
    clients.push(fresh);
    expect(await apply(fresh, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA })).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, qmCode: "STOPPING" });

    const answer = await parking;
    expect(answer.ok, JSON.stringify(answer)).toBe(true);
    if (answer.ok) expect(answer.value.changes.map((c) => [c.dataDir, c.result])).toEqual(DATA_DIRS.map((d) => [d, "renamed"]));
    const r = await child;
    web1.process = null;
    expect(r.exitCode).toBe(0);
    expectParked(s, web1, id);
    expect(logLines(web1.logFile).some((l) => l.msg === "operations still running at stopTimeout: ending rsync runs, finishing renames")).toBe(false);
  });

  it("past stopTimeout a rename under way is still finished and answered; exit 0", async () => {
    const { s, web1, client } = await agentWith({ fault: "pause-mid:park-data:1500", stopTimeout: 0.3 });
    const id = "graceful-stop-2";
    await register(s, client, id);
    const parking = apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    await waitForLines(web1.logFile, (l) => l.msg === "fault injection fired", "the first data dir renamed, the Apply paused");
    const { exitCode, ms } = await signalAndExit(web1, "SIGTERM");
    web1.process = null;
    expect(exitCode).toBe(0);
    // the two pauses (one per data dir), not cut short at 0.3 s
    expect(ms).toBeGreaterThan(1500);
    const answer = await parking;
    expect(answer.ok, JSON.stringify(answer)).toBe(true);
    expectParked(s, web1, id);
    expect(logLines(web1.logFile).find((l) => l.msg === "operations still running at stopTimeout: ending rsync runs, finishing renames")).toMatchObject({
      level: 40,
      inFlight: ["apply"],
      stopTimeout: 0.3,
    });
  });

  it("past stopTimeout an rsync still running is ended (UNAVAILABLE, STOPPING) and the agent exits 0", async () => {
    const { s, web1, client } = await agentWith({ stopTimeout: 1 });
    const id = "graceful-stop-3";
    await register(s, client, id);
    expect((await apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA })).ok).toBe(true);
    // the rsync daemon greets and then waits for a client that never answers (well within timeouts.unresponsive)
    const rsync = tunnel(client, [startFrame({ migrationId: id, step: "fetch-site", args: [...DAEMON_OVER_RSH] })], { cancelOnData: false, timeoutMs: 30_000 });
    await waitForLines(web1.logFile, (l) => l.msg === "rsync server start", "the rsync daemon started");
    const { exitCode, ms } = await signalAndExit(web1, "SIGTERM");
    web1.process = null;
    expect(exitCode).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(1000);
    expect(ms).toBeLessThan(8000);
    expect(await rsync).toMatchObject({ code: grpc.status.UNAVAILABLE, qmCode: "STOPPING", cancelledByUs: undefined });
    expect(logLines(web1.logFile).find((l) => l.msg === "operations still running at stopTimeout: ending rsync runs, finishing renames")).toMatchObject({ inFlight: ["rsync"] });
    expectParked(s, web1, id);
  });

  it("a second signal exits at once, 128 + its number", async () => {
    const { s, web1, client } = await agentWith({ fault: "pause-mid:park-data:20000", stopTimeout: 60 });
    const id = "graceful-stop-4";
    await register(s, client, id);
    const parking = apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    await waitForLines(web1.logFile, (l) => l.msg === "fault injection fired", "the first data dir renamed, the Apply paused");
    const child = web1.process;
    if (!child) throw new Error("agent not running");
    const started = Date.now();
    child.kill("SIGTERM");
    await waitForLines(web1.logFile, (l) => l.msg === "waiting for the operations in flight", "the stop waiting");
    child.kill("SIGTERM");
    const r = await child;
    web1.process = null;
    expect(r.exitCode).toBe(143);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(logLines(web1.logFile).find((l) => l.msg === "second signal: exiting at once")).toMatchObject({ level: 40, signal: "SIGTERM" });
    expect((await parking).ok).toBe(false);
  });
});
