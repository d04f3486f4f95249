// A site folder (or its parent `sites/`) swapped for a symlink to a folder outside the root between
// preflight and a step: every operation on it is refused, and nothing outside the root is touched.
// Driven straight at an agent (register, swap, then every Apply action and both rsync steps, each in a
// state where the step order allows it), and
// through the controller with a hook that makes the swap in the middle of a migration.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { makePlatform, makeSite } from "../../scripts/lib/fixtures.js";
import { type Manifest, diffManifests, excludePaths, manifest, summarizeDiff } from "../../scripts/lib/manifest.js";
import { Action, type AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { apply, insecureClient, preflight, rsyncRan, rsyncStarts, startFrame, tunnel } from "../helpers/agentRpc.js";
import { DATA_DIRS, PARK, type Scenario, setupScenario, siteDir } from "../helpers/scenario.js";
import { readRecordFile } from "../helpers/agentRecord.js";

const REFUSED = [grpc.status.FAILED_PRECONDITION, grpc.status.PERMISSION_DENIED];

let scenario: Scenario | undefined;
const clients: AgentClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await scenario?.cleanup();
  scenario = undefined;
});

/**
 * A folder outside every root with the same layout as a front's: both platforms, and a copy of the
 * site (with data) on each. Whatever a swapped symlink leads to is in here.
 */
function makeOutside(s: Scenario): string {
  const outside = path.join(s.baseDir, "outside-root");
  makePlatform(outside, s.from);
  makePlatform(outside, s.to);
  makeSite(outside, s.from, s.site, { files: 12, privateFiles: 3, seed: "outside-old" });
  makeSite(outside, s.to, s.site, { files: 12, privateFiles: 3, seed: "outside-new" });
  fs.writeFileSync(path.join(outside, s.to, "sites", "canary.txt"), "outside canary\n");
  return outside;
}

/** Replaces `link` by a symlink to `target`, keeping what was there at `aside` (outside the root). */
function swap(link: string, target: string, aside?: string): void {
  if (aside !== undefined) {
    fs.mkdirSync(path.dirname(aside), { recursive: true });
    fs.renameSync(link, aside);
  }
  fs.symlinkSync(target, link);
}

function expectSame(what: string, expected: Manifest | undefined, actual: Manifest): void {
  expect(expected, `${what}: no manifest before`).toBeDefined();
  const diff = diffManifests(expected as Manifest, actual);
  expect(diff, `${what} changed:\n${summarizeDiff(diff)}`).toEqual([]);
}

/** The park area holds no file or link: a refused step moved no data into it (an empty folder may be left). */
async function expectNothingParked(root: string): Promise<void> {
  const park = path.join(root, PARK);
  if (!fs.existsSync(park)) return;
  const entries = [...(await manifest(park)).entries()].filter(([, e]) => e.type !== "dir");
  expect(entries, `${park} holds data`).toEqual([]);
}

interface Tried {
  readonly op: string;
  readonly code: grpc.status;
  readonly qmCode: string | undefined;
  readonly rsyncRan?: boolean;
  readonly details: string;
}

type Stages = Array<{ step: string; status: "begun" | "done" }>;

/**
 * Puts the agent's record of migration `id` in the state where the step order allows an action, as the
 * agent keeps it (agent/stepOrder.ts): these tests are about the folders, not the order, and reaching
 * the state by doing the steps would move the data they compare.
 */
function putInState(stateDir: string, id: string, stages: Stages): void {
  const file = path.join(stateDir, "migrations", `${id}.json`);
  const record = readRecordFile(file);
  fs.writeFileSync(file, JSON.stringify({ ...record, state: { stages } }, null, 2));
}

const PARKED: Stages = [{ step: "fronts-park-data", status: "done" }];
const PUSHED: Stages = [...PARKED, { step: "push-site", status: "done" }];

async function tryEverything(s: Scenario, c: AgentClient, id: string, front: { stateDir: string; logFile: string }): Promise<Tried[]> {
  const out: Tried[] = [];
  const actions: Array<[string, string, Action, Stages]> = [
    ["park-data", "fronts-park-data", Action.ACTION_PARK_DATA, []],
    ["unpark-data", "fronts-park-data", Action.ACTION_UNPARK_DATA, [{ step: "fronts-park-data", status: "begun" }]],
    ["restore-data", "fronts-restore-data", Action.ACTION_RESTORE_DATA, PUSHED],
    ["unrestore-data", "fronts-restore-data", Action.ACTION_UNRESTORE_DATA, [...PUSHED, { step: "fronts-restore-data", status: "begun" }]],
    ["remove-old-site", "fronts-remove-old", Action.ACTION_REMOVE_OLD_SITE, [...PUSHED, { step: "fronts-restore-data", status: "done" }]],
    ["remove-new-site", "push-site", Action.ACTION_REMOVE_NEW_SITE, PUSHED],
  ];
  for (const [name, step, action, stages] of actions) {
    putInState(front.stateDir, id, stages);
    const o = await apply(c, { migrationId: id, step, action });
    out.push({ op: name, code: o.code, qmCode: o.ok ? undefined : o.qmCode, details: o.ok ? JSON.stringify(o.value.changes) : o.details });
  }
  const starts = rsyncStarts(front.logFile);
  // what a real client asks for: the agent picks the folder of (migration, step) itself
  for (const name of ["rsync fetch-site", "rsync push-site"]) {
    putInState(front.stateDir, id, PARKED);
    const o = await tunnel(c, [startFrame({ migrationId: id, step: name.replace("rsync ", ""), args: [...DAEMON_OVER_RSH] })], { timeoutMs: 5000 });
    out.push({ op: name, code: o.code, qmCode: o.qmCode, rsyncRan: rsyncRan(o), details: o.details });
  }
  expect(rsyncStarts(front.logFile), "an rsync server was started").toBe(starts);
  return out;
}

async function registered(s: Scenario, front: string, id: string): Promise<AgentClient> {
  const c = insecureClient(s.cluster.front(front).address);
  clients.push(c);
  const res = await preflight(c, { migration: { id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] }, register: true, local: false });
  expect(res.ok && res.value.problems, JSON.stringify(res)).toEqual([]);
  return c;
}

describe("swapped after preflight, driven straight at the agent", () => {
  it("the old and the new site folder, each a symlink to a folder outside the root: every action and both rsync steps refused", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
    const web1 = s.cluster.front("web1");
    const outside = makeOutside(s);
    const c = await registered(s, "web1", "swap-site-1");
    const oldSite = siteDir(web1.root, s.from, s.site);
    const newSite = siteDir(web1.root, s.to, s.site);
    // after preflight: the old site folder moved out of the root and replaced by a link to another
    // site's copy; the new one (as if push-site had made it) a link to a folder outside
    const aside = path.join(s.baseDir, "aside", "old-site");
    swap(oldSite, siteDir(outside, s.from, s.site), aside);
    swap(newSite, siteDir(outside, s.to, s.site));
    const outsideBefore = await manifest(outside);
    const rootBefore = excludePaths(await manifest(web1.root), [PARK]);

    const tried = await tryEverything(s, c, "swap-site-1", web1);
    expect(tried.filter((t) => !REFUSED.includes(t.code) || t.rsyncRan === true)).toEqual([]);
    // what each refusal says (kept exact: a change of reason shows up here)
    expect(tried.map((t) => [t.op, t.qmCode])).toEqual([
      ["park-data", "OUTSIDE_ROOT"],
      ["unpark-data", "OUTSIDE_ROOT"],
      ["restore-data", "OUTSIDE_ROOT"],
      ["unrestore-data", "OUTSIDE_ROOT"],
      ["remove-old-site", "PRECONDITION"],
      ["remove-new-site", "PRECONDITION"],
      ["rsync fetch-site", "OUTSIDE_ROOT"],
      ["rsync push-site", "OUTSIDE_ROOT"],
    ]);

    expectSame("the folder outside the root", outsideBefore, await manifest(outside));
    expectSame("web1's real site folder (moved aside)", excludeRoot(s.before.get("web1") as Manifest, `${s.from}/sites/${s.site}`), await manifest(aside));
    expectSame("web1's root", rootBefore, excludePaths(await manifest(web1.root), [PARK]));
    await expectNothingParked(web1.root);
  });

  it("the parent sites/ of both platforms, each a symlink leading out of the root: every action and both rsync steps refused", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
    const web1 = s.cluster.front("web1");
    const outside = makeOutside(s);
    const c = await registered(s, "web1", "swap-sites-1");
    const aside = path.join(s.baseDir, "aside", "sites");
    swap(path.join(web1.root, s.from, "sites"), path.join(outside, s.from, "sites"), aside);
    swap(path.join(web1.root, s.to, "sites"), path.join(outside, s.to, "sites"), path.join(s.baseDir, "aside", "new-sites"));
    const outsideBefore = await manifest(outside);
    const rootBefore = excludePaths(await manifest(web1.root), [PARK]);

    const tried = await tryEverything(s, c, "swap-sites-1", web1);
    expect(tried.filter((t) => !REFUSED.includes(t.code) || t.rsyncRan === true)).toEqual([]);
    expect(tried.map((t) => [t.op, t.qmCode])).toEqual([
      ["park-data", "OUTSIDE_ROOT"],
      ["unpark-data", "OUTSIDE_ROOT"],
      ["restore-data", "OUTSIDE_ROOT"],
      ["unrestore-data", "OUTSIDE_ROOT"],
      ["remove-old-site", "OUTSIDE_ROOT"],
      ["remove-new-site", "OUTSIDE_ROOT"],
      ["rsync fetch-site", "OUTSIDE_ROOT"],
      ["rsync push-site", "OUTSIDE_ROOT"],
    ]);

    expectSame("the folder outside the root", outsideBefore, await manifest(outside));
    expectSame("web1's real sites/ (moved aside)", excludeRoot(s.before.get("web1") as Manifest, `${s.from}/sites`), await manifest(aside));
    expectSame("web1's root", rootBefore, excludePaths(await manifest(web1.root), [PARK]));
    await expectNothingParked(web1.root);
  });
});

/** The part of a root's manifest under `rel`, re-rooted there (`rel` itself becomes `.`). */
function excludeRoot(m: Manifest, rel: string): Manifest {
  const out = new Map();
  for (const [key, entry] of m) {
    if (key === rel) out.set(".", entry);
    else if (key.startsWith(`${rel}/`)) out.set(key.slice(rel.length + 1), entry);
  }
  return out;
}

/** A hook (run by the controller on the hostmaster) that does `swap(link, target, aside)`. */
function swapHook(s: Scenario, link: string, target: string, aside: string): string[] {
  const script = path.join(s.baseDir, "swap-hook.mjs");
  fs.writeFileSync(
    script,
    [
      'import fs from "node:fs";',
      'import path from "node:path";',
      "const [link, target, aside] = process.argv.slice(2);",
      "if (!fs.lstatSync(link).isSymbolicLink()) {",
      "  fs.mkdirSync(path.dirname(aside), { recursive: true });",
      "  fs.renameSync(link, aside);",
      "  fs.symlinkSync(target, link);",
      "}",
      "",
    ].join("\n"),
  );
  return [process.execPath, script, link, target, aside];
}

describe("swapped in the middle of a migration run by the controller", () => {
  it("web1's old site folder swapped by the maintenanceOn hook (after preflight): never exit 0, nothing outside the root touched", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    const web1 = s.cluster.front("web1");
    const outside = makeOutside(s);
    const aside = path.join(s.baseDir, "aside", "old-site");
    s.cluster.writeControllerConfig({ hooks: { maintenanceOn: swapHook(s, siteDir(web1.root, s.from, s.site), siteDir(outside, s.from, s.site), aside) } });
    const outsideBefore = await manifest(outside);

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(fs.lstatSync(siteDir(web1.root, s.from, s.site)).isSymbolicLink(), "the hook made the swap").toBe(true);
    expect([1, 3], `exit ${run.exitCode}: ${run.stdout}${run.stderr}`).toContain(run.exitCode);

    expectSame("the folder outside the root", outsideBefore, await manifest(outside));
    expectSame("web1's real site folder (moved aside)", excludeRoot(s.before.get("web1") as Manifest, `${s.from}/sites/${s.site}`), await manifest(aside));
    const web1Root = excludePaths(await manifest(web1.root), [`${s.from}/sites/${s.site}`, PARK]);
    expectSame("web1's root", excludePaths(s.before.get("web1") as Manifest, [`${s.from}/sites/${s.site}`]), web1Root);
    await expectNothingParked(web1.root);
    if (run.exitCode === 1) {
      // rolled back: the other hosts are as before
      expectSame("web2's root", s.before.get("web2"), await manifest(s.cluster.frontRoot("web2")));
      expectSame("the hostmaster's root", s.before.get("hostmaster"), await manifest(s.cluster.masterRoot));
    }
  });

  it("web1's target sites/ swapped for a link out of the root by the deploy hook (before push-site): never exit 0, nothing written outside the root", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    const web1 = s.cluster.front("web1");
    const outside = makeOutside(s);
    // outside: a target platform whose sites/ holds no copy of the site yet (push-site would create it there)
    fs.rmSync(siteDir(outside, s.to, s.site), { recursive: true, force: true });
    const aside = path.join(s.baseDir, "aside", "new-sites");
    s.cluster.writeControllerConfig({ hooks: { deploy: swapHook(s, path.join(web1.root, s.to, "sites"), path.join(outside, s.to, "sites"), aside) } });
    const outsideBefore = await manifest(outside);

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(fs.lstatSync(path.join(web1.root, s.to, "sites")).isSymbolicLink(), "the hook made the swap").toBe(true);
    expect([1, 3], `exit ${run.exitCode}: ${run.stdout}${run.stderr}`).toContain(run.exitCode);

    expectSame("the folder outside the root", outsideBefore, await manifest(outside));
    expectSame("web1's real target sites/ (moved aside)", excludeRoot(s.before.get("web1") as Manifest, `${s.to}/sites`), await manifest(aside));
    if (run.exitCode === 1) {
      // rolled back: web1's data is back in its old site folder, the other hosts are as before
      const web1Root = excludePaths(await manifest(web1.root), [`${s.to}/sites`, PARK]);
      expectSame("web1's root", excludePaths(s.before.get("web1") as Manifest, [`${s.to}/sites`]), web1Root);
      expectSame("web2's root", s.before.get("web2"), await manifest(s.cluster.frontRoot("web2")));
      expectSame("the hostmaster's root", s.before.get("hostmaster"), await manifest(s.cluster.masterRoot));
    }
  });
});
