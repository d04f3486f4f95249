// The agent's own policy, driven straight at a real agent over gRPC with the controller's (allowed)
// certificate, as a buggy or replaying controller could: its config, not the client, says which data
// dirs it protects; it accepts an action only where the step order allows it; a migration that ended
// (finished, or rolled back) accepts nothing more, and the live site's trees stay byte for byte as they
// were, and a rolled-back one is taken up again only by a new preflight that passes; the records of
// ended migrations are pruned after keepFinished days, unfinished ones never.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import YAML from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClusterFront, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Manifest, diffManifests, summarizeDiff } from "../../scripts/lib/manifest.js";
import { Action, type AgentClient, type InspectResponse, type Migration } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { type RpcOutcome, apply, preflight, rsyncRan, rsyncStarts, startFrame, tunnel } from "../helpers/agentRpc.js";
import { DATA_DIRS, type Scenario, expectMigrated, expectUnchanged, setupScenario, snapshotAll } from "../helpers/scenario.js";
import { agentClient, sslCredentials, targetName } from "../helpers/tls.js";
import { readRecord } from "../helpers/agentRecord.js";


let s: Scenario;
let web1: ClusterFront;
let client: AgentClient;

function connect(): AgentClient {
  const pki = s.pki;
  if (!pki) throw new Error("no pki");
  return agentClient(web1.address, sslCredentials(pki.ca, pki.controller), targetName("web1"));
}

beforeAll(async () => {
  s = await setupScenario({ fronts: [{ name: "web1" }], tls: true, hooks: fakeDrushHooks() });
  web1 = s.cluster.front("web1");
  client = connect();
});

afterAll(async () => {
  client?.close();
  await s?.cleanup();
});

function spec(id: string, dataDirs: readonly string[] = DATA_DIRS): Migration {
  return { id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...dataDirs] };
}

const registered = (): string[] => {
  const dir = path.join(web1.stateDir, "migrations");
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort() : [];
};

const recordOf = (id: string) => readRecord(web1.stateDir, id);

/** The outcome's gRPC status and quick-migrate code, for one readable assertion. */
const codes = (o: RpcOutcome<unknown>) => ({ code: grpc.status[o.code], qmCode: o.ok ? undefined : o.qmCode });

const ACTIONS: Array<[string, string, Action]> = [
  ["park-data", "fronts-park-data", Action.ACTION_PARK_DATA],
  ["unpark-data", "fronts-park-data", Action.ACTION_UNPARK_DATA],
  ["remove-new-site", "push-site", Action.ACTION_REMOVE_NEW_SITE],
  ["restore-data", "fronts-restore-data", Action.ACTION_RESTORE_DATA],
  ["unrestore-data", "fronts-restore-data", Action.ACTION_UNRESTORE_DATA],
  ["remove-old-site", "fronts-remove-old", Action.ACTION_REMOVE_OLD_SITE],
];

const act = (id: string, name: string): Promise<RpcOutcome<unknown>> => {
  const [, step, action] = ACTIONS.find(([n]) => n === name) ?? [];
  return apply(client, { migrationId: id, step: step as string, action: action as Action });
};

/**
 * Opens the two rsync steps of migration `id` as the controller's rsync would (the daemon invocation: the
 * agent picks each step's folder, here `m`'s); returns how each ended.
 */
async function rsyncs(id: string, _m: { from: string; to: string }): Promise<Record<string, { qmCode: string | undefined; ran: boolean }>> {
  const out: Record<string, { qmCode: string | undefined; ran: boolean }> = {};
  const starts = rsyncStarts(web1.logFile);
  for (const step of ["fetch-site", "push-site"]) {
    const o = await tunnel(client, [startFrame({ migrationId: id, step, args: [...DAEMON_OVER_RSH] })], { timeoutMs: 5000 });
    out[step] = { qmCode: o.qmCode, ran: rsyncRan(o) };
  }
  expect(rsyncStarts(web1.logFile), "an rsync server was started").toBe(starts);
  return out;
}

async function expectTreesAsIn(before: Map<string, Manifest>, what: string): Promise<void> {
  const after = await snapshotAll(s.cluster, s.sharedStorage);
  for (const [name, m] of before) {
    const diff = diffManifests(m, after.get(name) ?? new Map());
    expect(diff, `${what}: ${name} changed:\n${summarizeDiff(diff)}`).toEqual([]);
  }
}

describe("the data dirs are the agent's own", () => {
  it("an empty list is refused at preflight: INVALID_ARGUMENT, nothing registered", async () => {
    const o = await preflight(client, { migration: spec("policy-empty", []), register: true, local: false });
    expect(codes(o), o.ok ? "" : o.details).toEqual({ code: "INVALID_ARGUMENT", qmCode: "INVALID_NAME" });
    expect(o.ok ? "" : o.details).toContain("no data dirs");
    expect(registered()).toEqual([]);
  });

  it.each([
    ["fewer", ["files"]],
    ["more", ["files", "private/files", "private/temp"]],
    ["other", ["files", "uploads"]],
  ])("a list with %s data dirs than the agent's is refused at preflight, naming both lists; nothing registered", async (_why, dirs) => {
    const o = await preflight(client, { migration: spec("policy-other", dirs), register: true, local: false });
    expect(o.ok, JSON.stringify(o)).toBe(true);
    const problems = o.ok ? o.value.problems : [];
    expect(problems.map((p) => p.code)).toEqual(["DATA_DIRS_MISMATCH"]);
    expect(problems[0]?.message).toContain("[files, private/files] (dataDirs in its agent config)");
    expect(problems[0]?.message).toContain(`the migration lists [${dirs.join(", ")}]`);
    expect(registered()).toEqual([]);
  });

  it("the same data dirs in another order are the same list", async () => {
    const o = await preflight(client, { migration: spec("policy-order", [...DATA_DIRS].reverse()), register: false, local: false });
    expect(o.ok && o.value.problems, JSON.stringify(o)).toEqual([]);
  });

  it("16,000 data dirs in one preflight are refused by the bound, before any is looked at", async () => {
    const dirs = Array.from({ length: 16_000 }, (_, i) => `files-${i}`);
    const o = await preflight(client, { migration: spec("policy-many", dirs), register: true, local: false });
    expect(codes(o)).toEqual({ code: "INVALID_ARGUMENT", qmCode: "INVALID_NAME" });
    expect(o.ok ? "" : o.details).toBe("16000 data dirs: at most 64 are allowed");
    expect(registered()).toEqual([]);
  });
});

describe("the step order", () => {
  const ID = "order-1";

  it("right after registration: remove-old-site, restore-data, every undo but unpark-data's, and both rsync steps are refused; nothing changes", async () => {
    const o = await preflight(client, { migration: spec(ID), register: true, local: false });
    expect(o.ok && o.value.problems, JSON.stringify(o)).toEqual([]);
    const record = fs.readFileSync(path.join(web1.stateDir, "migrations", `${ID}.json`), "utf8");
    const tried: Record<string, unknown> = {};
    for (const name of ["remove-old-site", "restore-data", "unrestore-data", "remove-new-site"]) {
      const r = await act(ID, name);
      tried[name] = codes(r);
      if (name === "remove-old-site") expect(r.ok ? "" : r.details).toBe(`migration ${ID}: remove-old-site (step fronts-remove-old) needs fronts-restore-data done first; nothing begun on this front`);
    }
    expect(tried).toEqual({
      "remove-old-site": { code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" },
      "restore-data": { code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" },
      "unrestore-data": { code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" },
      "remove-new-site": { code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" },
    });
    expect(await rsyncs(ID, s)).toEqual({ "fetch-site": { qmCode: "OUT_OF_ORDER", ran: false }, "push-site": { qmCode: "OUT_OF_ORDER", ran: false } });
    // a refusal is not recorded: the record is byte for byte as registered
    expect(fs.readFileSync(path.join(web1.stateDir, "migrations", `${ID}.json`), "utf8")).toBe(record);
    await expectUnchanged(s);
  });

  it("an action sent with another step's name is refused", async () => {
    const o = await apply(client, { migrationId: ID, step: "fronts-restore-data", action: Action.ACTION_PARK_DATA });
    expect(codes(o)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" });
    await expectUnchanged(s);
  });

  it("parked: restore-data before push-site and unrestore-data before restore-data are refused; park-data again is accepted", async () => {
    expect(codes(await act(ID, "park-data"))).toEqual({ code: "OK", qmCode: undefined });
    const before = await snapshotAll(s.cluster, s.sharedStorage);
    const restore = await act(ID, "restore-data");
    expect(codes(restore)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" });
    expect(restore.ok ? "" : restore.details).toContain("needs push-site done first");
    expect(codes(await act(ID, "unrestore-data"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" });
    expect(codes(await act(ID, "remove-old-site"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" });
    await expectTreesAsIn(before, "after the refusals");
    const again = await act(ID, "park-data");
    expect(again.ok && (again.value as { repeated: boolean }).repeated).toBe(true);
    await expectTreesAsIn(before, "after a repeated park-data");
  });

  it("unpark-data puts everything back; then the migration is rolled back and accepts nothing more", async () => {
    expect(codes(await act(ID, "unpark-data"))).toEqual({ code: "OK", qmCode: undefined });
    await expectUnchanged(s);
    expect(recordOf(ID).state).toMatchObject({ stages: [], ended: { as: "rolled-back" } });
    const park = await act(ID, "park-data");
    expect(codes(park)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" });
    expect(park.ok ? "" : park.details).toMatch(/was rolled back on this front at .*; it accepts nothing more/);
    await expectUnchanged(s);
  });
});

describe("requests of an earlier run of the controller", () => {
  const ID = "stale-1";
  const actIn = (run: number | undefined, name: string): Promise<RpcOutcome<unknown>> => {
    const [, step, action] = ACTIONS.find(([n]) => n === name) ?? [];
    return apply(client, { migrationId: ID, step: step as string, action: action as Action, ...(run === undefined ? {} : { run }) });
  };

  it("once run 2 was accepted, run 1's push and undos (held up by a cut link, say) are refused and change nothing; run 3 goes on", async () => {
    const o = await preflight(client, { migration: spec(ID), register: true, local: false });
    expect(o.ok && o.value.problems, JSON.stringify(o)).toEqual([]);
    expect(codes(await actIn(1, "park-data"))).toEqual({ code: "OK", qmCode: undefined });
    // run 2 (a rollback) has been here: its undo of push-site found nothing to do
    expect(codes(await actIn(2, "remove-new-site"))).toEqual({ code: "OK", qmCode: undefined });
    expect(recordOf(ID).run).toBe(2);
    const before = await snapshotAll(s.cluster, s.sharedStorage);
    // run 1's push-site arrives late: refused before any rsync starts
    const starts = rsyncStarts(web1.logFile);
    const push = await tunnel(client, [startFrame({ migrationId: ID, step: "push-site", args: [...DAEMON_OVER_RSH], run: 1 })], { timeoutMs: 5000 });
    expect({ qmCode: push.qmCode, ran: rsyncRan(push) }).toEqual({ qmCode: "STALE_REQUEST", ran: false });
    expect(push.details).toContain("comes from run 1 of its controller, and run 2 has been here since");
    expect(rsyncStarts(web1.logFile)).toBe(starts);
    const late = await actIn(1, "unpark-data");
    expect(codes(late)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "STALE_REQUEST" });
    await expectTreesAsIn(before, "after run 1's late requests");
    expect(recordOf(ID).state).toMatchObject({ stages: [{ step: "fronts-park-data", status: "done" }] });
    // a later run goes on; a request that does not say its run is judged by the step order alone
    expect(codes(await actIn(3, "unpark-data"))).toEqual({ code: "OK", qmCode: undefined });
    expect(recordOf(ID).run).toBe(3);
    expect(codes(await actIn(undefined, "park-data"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" });
    await expectUnchanged(s);
  });
});

/** the migration there (finished) and the one back (rolled back), made below and pruned last */
let there = "";
let back = "";

describe("a rolled-back migration taken up again", () => {
  const ID = "order-1";
  const inspect = (id: string) =>
    new Promise<InspectResponse>((resolve, reject) => client.inspect({ migrationId: id }, (err, res) => (err ? reject(err) : resolve(res as InspectResponse))));

  it("only by a new preflight with register, which must pass (here TARGET_EXISTS first, then clean): then it runs again, and ends again", async () => {
    expect(await inspect(ID)).toMatchObject({ registered: true, endedAs: "rolled-back" });
    // a preflight that finds a problem takes nothing up
    const target = path.join(web1.root, s.to, "sites", s.site);
    fs.mkdirSync(target);
    const refused = await preflight(client, { migration: spec(ID), register: true, local: false });
    expect(refused.ok && refused.value.problems.map((p) => p.code)).toEqual(["TARGET_EXISTS"]);
    fs.rmdirSync(target);
    expect(codes(await act(ID, "park-data"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" });
    // the one the hostmaster's resume sends when a rollback that stopped part-way had put this front back
    const again = await preflight(client, { migration: spec(ID), register: true, local: false });
    expect(again.ok && again.value.problems).toEqual([]);
    expect(await inspect(ID)).toMatchObject({ registered: true, endedAs: "" });
    expect(codes(await act(ID, "park-data"))).toEqual({ code: "OK", qmCode: undefined });
    expect(codes(await act(ID, "unpark-data"))).toEqual({ code: "OK", qmCode: undefined });
    expect(await inspect(ID)).toMatchObject({ endedAs: "rolled-back" });
    await expectUnchanged(s);
  });
});

describe("replaying ended migrations", () => {
  it("a migration there, finished; one back again, rolled back (updatedb fails): the site is live on the target platform", async () => {
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    there = String(run.events[0]?.migrationId);
    await expectMigrated(s);
    const failed = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--from", s.to, "--to", s.from, "--json"], { env: { QM_FAKE_DRUSH_FAIL: "updatedb" } });
    expect(failed.exitCode, failed.stdout + failed.stderr).toBe(1);
    back = String(failed.events[0]?.migrationId);
    await expectMigrated(s);
    expect(recordOf(there).state).toMatchObject({ ended: { as: "finished" } });
    expect(recordOf(back).state).toMatchObject({ ended: { as: "rolled-back" } });
  });

  it("every action and rsync of the finished one is refused, but a repeat of remove-old-site, answered from the record; the live site is byte for byte unchanged", async () => {
    const before = await snapshotAll(s.cluster, s.sharedStorage);
    const tried: Record<string, unknown> = {};
    for (const [name] of ACTIONS) tried[name] = codes(await act(there, name));
    expect(tried).toEqual({
      "park-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "unpark-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      // what deleted a live site's code before: the undo of push-site, replayed
      "remove-new-site": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "restore-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "unrestore-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      // a retry after a lost reply must still succeed; it does nothing
      "remove-old-site": { code: "OK", qmCode: undefined },
    });
    const repeat = await act(there, "remove-old-site");
    expect(repeat.ok && (repeat.value as { repeated: boolean; changes: Array<{ result: string }> })).toMatchObject({ repeated: true, changes: [{ result: "already-done" }] });
    const r = await rsyncs(there, s);
    expect(r["push-site"]).toEqual({ qmCode: "MIGRATION_FINISHED", ran: false });
    // the old site folder is gone: the fetch is refused before its migration is looked at
    expect(r["fetch-site"]?.ran).toBe(false);
    await expectTreesAsIn(before, "after replaying the finished migration");
  });

  it("every action and rsync of the rolled-back one is refused, but a repeat of unpark-data, answered from the record; the live site is byte for byte unchanged", async () => {
    const before = await snapshotAll(s.cluster, s.sharedStorage);
    const tried: Record<string, unknown> = {};
    for (const [name] of ACTIONS) tried[name] = codes(await act(back, name));
    expect(tried).toEqual({
      // would park the live site's data
      "park-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "unpark-data": { code: "OK", qmCode: undefined },
      "remove-new-site": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "restore-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "unrestore-data": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
      "remove-old-site": { code: "FAILED_PRECONDITION", qmCode: "MIGRATION_FINISHED" },
    });
    expect(await rsyncs(back, { from: s.to, to: s.from })).toEqual({
      "fetch-site": { qmCode: "MIGRATION_FINISHED", ran: false },
      "push-site": { qmCode: "MIGRATION_FINISHED", ran: false },
    });
    await expectTreesAsIn(before, "after replaying the rolled-back migration");
  });

  it("a record written before this change, with an empty data-dir list, whose new site folder is the live site: remove-new-site is refused by the agent's own data dirs, remove-old-site by the step order", async () => {
    const id = "legacy-empty-1";
    // as an older agent wrote it: no state; its park-data went through (with nothing to park)
    const legacy = {
      migration: { id, from: "legacy-platform", site: s.site, to: s.to, newSite: s.site, dataDirs: [] },
      local: false,
      registeredAt: "2025-06-01T10:00:00.000Z",
      ledger: [],
      operations: { "fronts-park-data/park-data": { at: "2025-06-01T10:01:00.000Z", count: 1, changes: [] } },
    };
    fs.writeFileSync(path.join(web1.stateDir, "migrations", `${id}.json`), JSON.stringify(legacy, null, 2));
    const before = await snapshotAll(s.cluster, s.sharedStorage);
    const removeNew = await act(id, "remove-new-site");
    expect(codes(removeNew)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "NOT_EMPTY" });
    expect(removeNew.ok ? "" : removeNew.details).toContain(`refusing to remove ${s.to}/sites/${s.site}: data dir ${s.to}/sites/${s.site}/files is not empty`);
    expect(codes(await act(id, "remove-old-site"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "OUT_OF_ORDER" });
    // forward, its list is not the agent's
    const park = await apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    expect(codes(park)).toEqual({ code: "FAILED_PRECONDITION", qmCode: "DATA_DIRS_MISMATCH" });
    await expectTreesAsIn(before, "after the legacy record's actions");
  });
});

describe("records of ended migrations are pruned", () => {
  /** Restarts web1's agent with `patch` in its config and waits until its first pruning round is logged or the agent answers. */
  async function restart(patch: Record<string, unknown>): Promise<void> {
    client.close();
    await s.cluster.stopAgent("web1");
    const config = YAML.parse(fs.readFileSync(web1.configFile, "utf8")) as Record<string, unknown>;
    fs.writeFileSync(web1.configFile, YAML.stringify({ ...config, ...patch }));
    await s.cluster.startAgent("web1");
    client = connect();
  }

  async function eventually(what: string, check: () => boolean, ms = 10_000): Promise<void> {
    const until = Date.now() + ms;
    while (!check()) {
      if (Date.now() > until) throw new Error(`${what}: not within ${ms / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const prunedLines = (): Array<{ migrationIds: string[] }> =>
    fs
      .readFileSync(web1.logFile, "utf8")
      .split("\n")
      .filter((l) => l.includes('"msg":"records of ended migrations pruned"'))
      .map((l) => JSON.parse(l) as { migrationIds: string[] });

  it("at start, those that ended more than keepFinished days ago go (an old-format finished record too); unfinished ones stay, however old", async () => {
    const write = (id: string, record: object) => fs.writeFileSync(path.join(web1.stateDir, "migrations", `${id}.json`), JSON.stringify(record, null, 2));
    const old = (id: string, site: string) => ({ id, from: "old-a", site, to: "old-b", newSite: site, dataDirs: [...DATA_DIRS] });
    // finished in 2024, written by an older agent (no state)
    write("old-finished", {
      migration: old("old-finished", "gone.example.com"),
      local: false,
      registeredAt: "2024-01-01T00:00:00.000Z",
      ledger: [{ dataDir: "files", kind: "directory", at: "new" }],
      operations: {
        "fronts-park-data/park-data": { at: "2024-01-01T00:01:00.000Z", count: 1, changes: [] },
        "fronts-restore-data/restore-data": { at: "2024-01-01T00:02:00.000Z", count: 1, changes: [] },
        "fronts-remove-old/remove-old-site": { at: "2024-01-01T00:03:00.000Z", count: 1, changes: [] },
      },
    });
    // parked in 2024 and never finished: its data is still in the park area
    write("old-unfinished", {
      migration: old("old-unfinished", "stuck.example.com"),
      local: false,
      registeredAt: "2024-01-01T00:00:00.000Z",
      ledger: [{ dataDir: "files", kind: "directory", at: "park" }],
      operations: { "fronts-park-data/park-data": { at: "2024-01-01T00:01:00.000Z", count: 1, changes: [] } },
    });
    const seen = prunedLines().length;
    await restart({});
    await eventually("a pruning log line", () => prunedLines().length > seen);
    expect(prunedLines().at(-1)?.migrationIds).toEqual(["old-finished"]);
    expect(registered()).toEqual([`${back}.json`, `${there}.json`, "legacy-empty-1.json", "old-unfinished.json", "order-1.json", "stale-1.json"].sort());
  });

  it("with keepFinished: 0, every ended one goes at the next start; the unfinished and the open ones stay", async () => {
    const seen = prunedLines().length;
    await restart({ keepFinished: 0 });
    await eventually("a pruning log line", () => prunedLines().length > seen);
    expect(prunedLines().at(-1)?.migrationIds).toEqual([back, there, "order-1", "stale-1"].sort());
    expect(registered()).toEqual(["legacy-empty-1.json", "old-unfinished.json"]);
    // a pruned migration is unknown from then on
    expect(codes(await act(there, "remove-old-site"))).toEqual({ code: "FAILED_PRECONDITION", qmCode: "NOT_REGISTERED" });
    await expectMigrated(s);
  });
});
