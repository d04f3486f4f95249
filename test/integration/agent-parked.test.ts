// Recovery on a front without its hostmaster: an agent killed in the middle of a rename (QM_AGENT_FAULT)
// leaves its ledger with the rename in flight; `quick-migrate-agent parked list|restore`, run with the
// service stopped and no controller, show where each data dir is and put them back byte for byte; a
// restarted agent finishes an interrupted rename's undo.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type ClusterFront, fakeDrushHooks, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { type Manifest, diffManifests, manifest, manifestOrAbsent, summarizeDiff } from "../../scripts/lib/manifest.js";
import {
  Action,
  AgentClient,
  type ApplyRequest,
  type ApplyResponse,
  type PreflightRequest,
  type PreflightResponse,
} from "../../shared/generated/quickmigrate/v1/agent.js";
import { DATA_DIRS, PARK, type Scenario, setupScenario, siteDir } from "../helpers/scenario.js";
import { readRecord as recordIn } from "../helpers/agentRecord.js";

let scenario: Scenario | undefined;
const clients: AgentClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await scenario?.cleanup();
  scenario = undefined;
});

interface ParkedJson {
  migrationId: string;
  site: string;
  dataDir: string;
  kind: string;
  linkTarget?: string;
  originalPath: string;
  place: string;
  path: string;
  exists: boolean;
  ledgerAt: string;
  moving?: string;
}

interface RecordJson {
  ledger: Array<{ dataDir: string; kind: string; at: string; moving?: string; linkTarget?: string; ino?: number; born?: number }>;
  operations?: Record<string, { at: string; count: number; changes?: Array<{ dataDir: string; result: string }>; error?: unknown }>;
}

/** `quick-migrate-agent parked <args…> --config <front's config>` as the agent's user, with the service stopped. */
function parked(f: ClusterFront, ...args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runAgentCommand(f, ["parked", ...args]);
}

function client(f: ClusterFront): AgentClient {
  const c = new AgentClient(f.address, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

function preflight(c: AgentClient, req: PreflightRequest): Promise<PreflightResponse> {
  return new Promise((resolve, reject) => c.preflight(req, (err, res) => (err ? reject(err) : resolve(res))));
}

function apply(c: AgentClient, req: ApplyRequest): Promise<ApplyResponse> {
  return new Promise((resolve, reject) => c.apply(req, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(res))));
}

/** The ledger without the identity of each data dir (its inode, and birth time where the filesystem keeps one), after checking it is there. */
function known(ledger: RecordJson["ledger"]): Array<Omit<RecordJson["ledger"][number], "ino" | "born">> {
  return ledger.map(({ ino, born, ...rest }) => {
    expect(typeof ino, `${rest.dataDir}: inode recorded`).toBe("number");
    expect(born === undefined || typeof born === "number").toBe(true);
    return rest;
  });
}

function readRecord(f: ClusterFront, id: string): RecordJson {
  return recordIn<RecordJson>(f.stateDir, id);
}

/** Registers a migration of the scenario's site with a front's agent, as the controller's preflight does. */
async function register(s: Scenario, c: AgentClient, id: string): Promise<void> {
  const res = await preflight(c, {
    migration: { id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] },
    register: true,
    local: false,
  });
  expect(res.problems).toEqual([]);
}

function expectSame(what: string, expected: Manifest | null | undefined, actual: Manifest | null): void {
  expect(expected, `${what}: nothing recorded before`).not.toBeUndefined();
  if (expected === null || expected === undefined) {
    expect(actual, `${what} appeared`).toBeNull();
    return;
  }
  expect(actual, `${what} missing`).not.toBeNull();
  const diff = diffManifests(expected, actual as Manifest);
  expect(diff, `${what} differs:\n${summarizeDiff(diff)}`).toEqual([]);
}

/** A one-front scenario whose agent (web1) registered migration `id` and parked its data dirs (the Apply's answer). */
async function parkedOnWeb1(id: string): Promise<{ s: Scenario; web1: ClusterFront; c: AgentClient; parkedNow: Awaited<ReturnType<typeof apply>> }> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
  const web1 = s.cluster.front("web1");
  const c = client(web1);
  await register(s, c, id);
  const parkedNow = await apply(c, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
  return { s, web1, c, parkedNow };
}

/** Every data dir of the front's old site folder is exactly as before the migration. */
async function expectDataBack(s: Scenario, front: string): Promise<void> {
  const oldSite = siteDir(s.cluster.frontRoot(front), s.from, s.site);
  for (const d of DATA_DIRS) expectSame(`${front}: ${d}`, s.dataBefore.get(front)?.get(d), await manifestOrAbsent(path.join(oldSite, d)));
}

describe("quick-migrate-agent parked", () => {
  it("lists and restores what an agent killed in the middle of restore-data left parked, with the service stopped", async () => {
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1", env: { QM_AGENT_FAULT: "kill-mid:restore-data" } }, { name: "web2" }],
      symlinkFiles: ["web1"],
      hooks: fakeDrushHooks(),
    }));
    const web1 = s.cluster.front("web1");
    const agent = web1.process;
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    // web1 died mid-step, so the automatic rollback cannot reach it: stopped, needs attention
    expect(run.exitCode, run.stdout + run.stderr).toBe(3);
    expect((await agent)?.signal, "web1's agent killed itself").toBe("SIGKILL");
    await s.cluster.stopAgent("web1");
    const id = String(run.events[0]?.migrationId);

    const root = web1.root;
    const oldSite = siteDir(root, s.from, s.site);
    const newSite = siteDir(root, s.to, s.site);
    const parkDir = path.join(root, PARK, id);
    // `files` (a symlink to shared storage) was renamed into the new site folder, the ledger still says
    // park; both intents were written before the first rename, so `private/files` is moving too
    expect(known(readRecord(web1, id).ledger)).toEqual([
      { dataDir: "files", kind: "symlink", linkTarget: path.join(s.sharedStorage, "web1", "files"), at: "park", moving: "new" },
      { dataDir: "private/files", kind: "directory", at: "park", moving: "new" },
    ]);

    const list = await parked(web1, "list", "--json");
    expect(list.exitCode, list.stderr).toBe(0);
    const entries = JSON.parse(list.stdout) as ParkedJson[];
    expect(entries).toEqual([
      {
        migrationId: id,
        site: s.site,
        newSite: s.site,
        from: s.from,
        to: s.to,
        dataDir: "files",
        kind: "symlink",
        linkTarget: path.join(s.sharedStorage, "web1", "files"),
        originalPath: path.join(oldSite, "files"),
        place: "new",
        path: path.join(newSite, "files"),
        exists: true,
        ledgerAt: "park",
        moving: "new",
      },
      {
        migrationId: id,
        site: s.site,
        newSite: s.site,
        from: s.from,
        to: s.to,
        dataDir: "private/files",
        kind: "directory",
        originalPath: path.join(oldSite, "private", "files"),
        place: "park",
        path: path.join(parkDir, "private%2Ffiles"),
        exists: true,
        ledgerAt: "park",
        moving: "new",
      },
    ]);
    const human = await parked(web1, "list");
    expect(human.exitCode, human.stderr).toBe(0);
    const lines = human.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain(`${id} ${s.site} files: at new ${path.join(newSite, "files")} (ledger: at park, moving to new)`);
    expect(lines[0]).toContain(`symlink → ${path.join(s.sharedStorage, "web1", "files")}, present`);
    expect(lines[1]).toContain(`private/files: at park ${path.join(parkDir, "private%2Ffiles")} (ledger: at park, moving to new)`);
    expect(lines[1]).toContain(`original ${path.join(oldSite, "private", "files")}`);

    const restore = await parked(web1, "restore", id);
    expect(restore.exitCode, restore.stdout + restore.stderr).toBe(0);
    expect(restore.stdout).toContain(`files: restored to ${path.join(oldSite, "files")} from new`);
    expect(restore.stdout).toContain(`private/files: restored to ${path.join(oldSite, "private", "files")} from park`);
    expect(restore.stdout).toContain("all 2 data dir(s) are back");
    await expectDataBack(s, "web1");
    expect(fs.existsSync(parkDir), "park folder of the migration removed").toBe(false);
    const shared = diffManifests(s.before.get("shared-storage") as Manifest, await manifest(s.sharedStorage));
    expect(shared, "shared storage untouched").toEqual([]);
    expect(readRecord(web1, id).ledger.map((e) => [e.dataDir, e.at, e.moving])).toEqual([
      ["files", "old", undefined],
      ["private/files", "old", undefined],
    ]);

    const nothing = await parked(web1, "list");
    expect(nothing.exitCode).toBe(0);
    expect(nothing.stdout).toContain("nothing parked");
    expect(JSON.parse((await parked(web1, "list", "--json")).stdout)).toEqual([]);

    const again = await parked(web1, "restore", id);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain(`files: already at ${path.join(oldSite, "files")}`);
    expect(again.stdout).toContain(`private/files: already at ${path.join(oldSite, "private", "files")}`);
    expect(again.stdout).toContain("all 2 data dir(s) are back");
    await expectDataBack(s, "web1");
  });

  it("refuses an original path occupied by a non-empty directory, replaces an empty placeholder, and refuses without the old site folder", async () => {
    const id = "parked-refuse-1";
    const { s, web1, c, parkedNow } = await parkedOnWeb1(id);
    expect(parkedNow.changes.map((ch) => [ch.dataDir, ch.result])).toEqual([
      ["files", "renamed"],
      ["private/files", "renamed"],
    ]);
    await s.cluster.stopAgent("web1");

    const unknown = await parked(web1, "restore", "no-such-migration");
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain("no record of migration no-such-migration");

    const root = web1.root;
    const oldSite = siteDir(root, s.from, s.site);
    const parkDir = path.join(root, PARK, id);

    // without its old site folder nothing can go back
    fs.renameSync(oldSite, `${oldSite}.away`);
    const gone = await parked(web1, "restore", id);
    expect(gone.exitCode, gone.stdout + gone.stderr).toBe(1);
    expect(gone.stdout).toContain(`files: refused: the old site folder ${oldSite} is gone`);
    expect(gone.stdout).toContain(`private/files: refused: the old site folder ${oldSite} is gone`);
    fs.renameSync(`${oldSite}.away`, oldSite);

    // an empty placeholder where files was, and someone's new data where private/files was
    fs.mkdirSync(path.join(oldSite, "files"));
    const blocker = path.join(oldSite, "private", "files");
    fs.mkdirSync(blocker);
    fs.writeFileSync(path.join(blocker, "new-upload.txt"), "not ours\n");
    const parkedPrivate = await manifest(path.join(parkDir, "private%2Ffiles"));

    const refused = await parked(web1, "restore", id);
    expect(refused.exitCode, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stdout).toContain(`files: restored to ${path.join(oldSite, "files")} from park`);
    expect(refused.stdout).toContain("an empty placeholder directory there was removed");
    expect(refused.stdout).toContain(`private/files: refused: ${blocker} is occupied by a non-empty directory`);
    expect(refused.stdout).toContain("1 of 2 data dir(s) back");
    // files is back; private/files did not move, and the blocker is untouched
    expectSame("web1: files", s.dataBefore.get("web1")?.get("files"), await manifestOrAbsent(path.join(oldSite, "files")));
    expect(diffManifests(parkedPrivate, await manifest(path.join(parkDir, "private%2Ffiles")))).toEqual([]);
    expect(fs.readdirSync(blocker)).toEqual(["new-upload.txt"]);
    const left = JSON.parse((await parked(web1, "list", "--json")).stdout) as ParkedJson[];
    expect(left.map((e) => [e.dataDir, e.place, e.exists])).toEqual([["private/files", "park", true]]);

    fs.rmSync(blocker, { recursive: true });
    const done = await parked(web1, "restore", id);
    expect(done.exitCode, done.stdout + done.stderr).toBe(0);
    expect(done.stdout).toContain(`files: already at ${path.join(oldSite, "files")}`);
    expect(done.stdout).toContain(`private/files: restored to ${blocker} from park`);
    // the whole front is exactly as before: data, code, no park area left
    const diff = diffManifests(s.before.get("web1") as Manifest, await manifest(root));
    expect(diff, `web1 differs:\n${summarizeDiff(diff)}`).toEqual([]);
  });
});

describe("a rename the agent recorded and the disk lost (a power cut)", () => {
  it("parked list finds each data dir at its original path and says so (not MISSING); restore and the agent's undo agree", async () => {
    const id = "lost-rename-1";
    const { s, web1 } = await parkedOnWeb1(id);
    const root = web1.root;
    const oldSite = siteDir(root, s.from, s.site);
    // the disk after the power cut: the ledger says parked, the renames never reached the disk
    for (const d of DATA_DIRS) fs.renameSync(path.join(root, PARK, id, encodeURIComponent(d)), path.join(oldSite, d));
    expect(readRecord(web1, id).ledger.map((e) => e.at)).toEqual(["park", "park"]);
    await s.cluster.stopAgent("web1");

    const list = JSON.parse((await parked(web1, "list", "--json")).stdout) as ParkedJson[];
    expect(list.map((e) => [e.dataDir, e.ledgerAt, e.place, e.path, e.exists])).toEqual([
      ["files", "park", "old", path.join(oldSite, "files"), true],
      ["private/files", "park", "old", path.join(oldSite, "private", "files"), true],
    ]);
    const human = await parked(web1, "list");
    expect(human.stdout).not.toContain("MISSING");
    expect(human.stdout).toContain(`files: at old ${path.join(oldSite, "files")} (ledger: at park; found at its original path: a rename recorded before a crash was lost)`);

    // the agent's own undo (a rollback's unpark-data) finds it in place and records it there
    await s.cluster.startAgent("web1");
    const undo = await apply(client(web1), { migrationId: id, step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA });
    expect(undo.changes.map((ch) => [ch.dataDir, ch.result])).toEqual([
      ["files", "found-at-destination"],
      ["private/files", "found-at-destination"],
    ]);
    await s.cluster.stopAgent("web1");
    expect(readRecord(web1, id).ledger.map((e) => e.at)).toEqual(["old", "old"]);
    expect((await parked(web1, "list")).stdout).toContain("nothing parked");
    const restore = await parked(web1, "restore", id);
    expect(restore.exitCode, restore.stdout + restore.stderr).toBe(0);
    expect(restore.stdout).toContain(`files: already at ${path.join(oldSite, "files")}`);
    await expectDataBack(s, "web1");
  });

  it("restore of data dirs found in the new site folder (their renames done, not recorded): both put back, no park folder left", async () => {
    const id = "lost-rename-new";
    const { s, web1 } = await parkedOnWeb1(id);
    await s.cluster.stopAgent("web1");
    // what a crash right after restore-data's renames leaves: both in the new site folder, the record saying park
    const newSite = siteDir(web1.root, s.to, s.site);
    fs.mkdirSync(path.join(newSite, "private"), { recursive: true });
    fs.renameSync(path.join(web1.root, PARK, id, "files"), path.join(newSite, "files"));
    fs.renameSync(path.join(web1.root, PARK, id, "private%2Ffiles"), path.join(newSite, "private", "files"));
    s.cluster.handOver(); // the folders made here are the agent's user's, as a step would have made them
    const restore = await parked(web1, "restore", id);
    expect(restore.exitCode, restore.stdout + restore.stderr).toBe(0);
    const oldSite = siteDir(web1.root, s.from, s.site);
    expect(restore.stdout).toContain(`files: restored to ${path.join(oldSite, "files")} from new`);
    expect(restore.stdout).toContain(`private/files: restored to ${path.join(oldSite, "private", "files")} from new`);
    await expectDataBack(s, "web1");
    expect(fs.existsSync(path.join(web1.root, PARK, id)), "the migration's empty park folder removed").toBe(false);
  });

  it("restore, with the service stopped, puts the record right and reports the data dir already at its original path", async () => {
    const id = "lost-rename-2";
    const { s, web1 } = await parkedOnWeb1(id);
    await s.cluster.stopAgent("web1");
    const oldSite = siteDir(web1.root, s.from, s.site);
    fs.renameSync(path.join(web1.root, PARK, id, "files"), path.join(oldSite, "files"));
    const restore = await parked(web1, "restore", id);
    expect(restore.exitCode, restore.stdout + restore.stderr).toBe(0);
    expect(restore.stdout).toContain(`files: already at ${path.join(oldSite, "files")}`);
    expect(restore.stdout).toContain(`private/files: restored to ${path.join(oldSite, "private", "files")} from park`);
    expect(readRecord(web1, id).ledger.map((e) => [e.dataDir, e.at, e.moving])).toEqual([
      ["files", "old", undefined],
      ["private/files", "old", undefined],
    ]);
    await expectDataBack(s, "web1");
  });
});

describe("QM_AGENT_FAULT=kill-mid", () => {
  it("kill-mid:park-data leaves the rename on disk with the ledger entry still moving; a restarted agent's unpark-data puts it back", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1", env: { QM_AGENT_FAULT: "kill-mid:park-data" } }] }));
    const web1 = s.cluster.front("web1");
    const agent = web1.process;
    const id = "kill-mid-park-1";
    await register(s, client(web1), id);
    const killed = await apply(client(web1), { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA }).then(
      () => undefined,
      (err: grpc.ServiceError) => err,
    );
    expect(killed?.code, "the Apply gets no reply").toBe(grpc.status.UNAVAILABLE);
    expect((await agent)?.signal).toBe("SIGKILL");
    await s.cluster.stopAgent("web1");

    const root = web1.root;
    const oldFiles = path.join(siteDir(root, s.from, s.site), "files");
    const parkedFiles = path.join(root, PARK, id, "files");
    const record = readRecord(web1, id);
    // both intents were written before the first rename: `private/files`, never renamed, is moving too
    expect(known(record.ledger)).toEqual([
      { dataDir: "files", kind: "directory", at: "old", moving: "park" },
      { dataDir: "private/files", kind: "directory", at: "old", moving: "park" },
    ]);
    expect(record.operations?.["fronts-park-data/park-data"], "no result for an Apply that never ended").toBeUndefined();
    expect(fs.existsSync(oldFiles)).toBe(false);
    expectSame("web1: parked files", s.dataBefore.get("web1")?.get("files"), await manifestOrAbsent(parkedFiles));
    const list = JSON.parse((await parked(web1, "list", "--json")).stdout) as ParkedJson[];
    expect(list.map((e) => [e.dataDir, e.ledgerAt, e.moving, e.place, e.path, e.exists])).toEqual([
      ["files", "old", "park", "park", parkedFiles, true],
      ["private/files", "old", "park", "old", path.join(siteDir(root, s.from, s.site), "private", "files"), true],
    ]);

    await s.cluster.startAgent("web1", { env: {} });
    const c = client(web1);
    const undo = await apply(c, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA });
    // private/files is found where it was moving from: its intent never ran, and is settled
    expect(undo.changes.map((ch) => [ch.dataDir, ch.result])).toEqual([
      ["files", "renamed"],
      ["private/files", "already-done"],
    ]);
    expect(undo.repeated).toBe(false);
    const diff = diffManifests(s.before.get("web1") as Manifest, await manifest(root));
    expect(diff, `web1 differs:\n${summarizeDiff(diff)}`).toEqual([]);

    // a repeat does the work again (finds nothing to do) and says so
    const repeat = await apply(c, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA });
    expect(repeat.repeated).toBe(true);
    expect(repeat.changes.map((ch) => [ch.dataDir, ch.result])).toEqual([
      ["files", "already-done"],
      ["private/files", "already-done"],
    ]);
    const after = readRecord(web1, id);
    expect(known(after.ledger)).toEqual([
      { dataDir: "files", kind: "directory", at: "old" },
      { dataDir: "private/files", kind: "directory", at: "old" },
    ]);
    const op = after.operations?.["fronts-park-data/unpark-data"];
    expect(op?.count).toBe(2);
    expect(op?.changes?.map((ch) => ch.result)).toEqual(["already-done", "already-done"]);
    expect(Number.isNaN(Date.parse(String(op?.at)))).toBe(false);
  });
});
