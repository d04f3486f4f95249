// The plan tells the truth. For each shape of cluster (remote fronts, a hostmaster that is a front,
// --new-uri, --keep-master-data): the plan printed by --dry-run is the plan of the real run (apart from
// the migration id and dryRun), and the paths it says each step creates, renames or removes are all the
// run changes — its moves, replayed over every root's whole tree (every path, its type, mode and
// content) before the run, give every root's whole tree after it, so a path the plan leaves out fails.
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type ManifestEntry, diffManifests, manifest, summarizeDiff } from "../../scripts/lib/manifest.js";
import { type Scenario, type ScenarioOptions, DATA_DIRS, expectMigrated, setupScenario } from "../helpers/scenario.js";

interface Move {
  host: string;
  what: string;
  op: "rename" | "copy" | "remove" | "mkdir" | "rmdir";
  from: string;
  to: string;
}
interface PlanEvent {
  event: "plan";
  migrationId: string;
  dryRun: boolean;
  steps: Array<{ name: string; hosts: string[]; undo: string | null; skipped?: string; moves: Move[] }>;
}

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** The plan without what differs between two runs of the same migration: its id (in paths too) and dryRun. */
function comparable(plan: PlanEvent): unknown {
  const { migrationId, dryRun: _dryRun, ...rest } = plan;
  return JSON.parse(JSON.stringify(rest).split(migrationId).join("<id>"));
}

function rootOf(s: Scenario, host: string): string {
  return host === "hostmaster" ? s.cluster.masterRoot : s.cluster.frontRoot(host);
}

/** One root's tree: every path under it (relative, `.` the root itself) and what is there. */
type Tree = Map<string, ManifestEntry>;

/** Every root's whole tree, by the root's path (the hostmaster's own front shares the hostmaster's). */
async function trees(s: Scenario): Promise<Map<string, Tree>> {
  const out = new Map<string, Tree>();
  for (const { root } of s.cluster.roots()) out.set(root, new Map(await manifest(root)));
  return out;
}

const below = (tree: Tree, rel: string): string[] => [...tree.keys()].filter((k) => k === rel || k.startsWith(`${rel}/`));
const parentOf = (rel: string): string => path.posix.dirname(rel);

/**
 * Replays the plan's moves over the trees as they were before the run, checking each move could
 * happen; returns the trees the run must leave. A rename carries what lies under it; a copy (rsync,
 * data dirs excluded) makes its destination what its source is on the other host at that point; a
 * mkdir makes a missing folder (mode 0700, as the park folders are made); an rmdir removes a folder
 * only when nothing is left in it.
 */
function replayMoves(s: Scenario, plan: PlanEvent, before: Map<string, Tree>): Map<string, Tree> {
  const state = new Map([...before].map(([root, tree]) => [root, new Map(tree)]));
  const treeOf = (host: string): Tree => {
    const tree = state.get(rootOf(s, host));
    if (!tree) throw new Error(`no tree for ${host}`);
    return tree;
  };
  for (const step of plan.steps) {
    for (const mv of step.moves) {
      const where = `${step.name}: ${mv.host}: ${mv.what}`;
      const tree = treeOf(mv.host);
      const isDir = (rel: string) => tree.get(rel)?.type === "dir";
      if (mv.op === "copy") {
        const [srcHost, srcPath] = mv.from.split(":") as [string, string];
        const src = treeOf(srcHost);
        const from = srcPath.replace(/\/$/, "");
        const to = mv.to.replace(/\/$/, "");
        expect(src.has(from), `${where}: ${mv.from} is there to copy`).toBe(true);
        expect(isDir(parentOf(to)), `${where}: the folder of ${to} is there`).toBe(true);
        for (const k of below(tree, to)) tree.delete(k);
        const excluded = DATA_DIRS.map((d) => `${from}/${d}`);
        for (const k of below(src, from)) {
          if (excluded.some((x) => k === x || k.startsWith(`${x}/`))) continue;
          tree.set(to + k.slice(from.length), src.get(k) as ManifestEntry);
        }
      } else if (mv.op === "remove") {
        expect(tree.has(mv.from), `${where}: ${mv.from} is there to remove`).toBe(true);
        for (const k of below(tree, mv.from)) tree.delete(k);
      } else if (mv.op === "mkdir") {
        expect(isDir(parentOf(mv.to)), `${where}: the folder of ${mv.to} is there`).toBe(true);
        if (!tree.has(mv.to)) tree.set(mv.to, { type: "dir", mode: 0o700 });
        expect(isDir(mv.to), `${where}: ${mv.to} is a folder`).toBe(true);
      } else if (mv.op === "rmdir") {
        if (below(tree, mv.from).length === 1) tree.delete(mv.from);
      } else {
        expect(tree.has(mv.from), `${where}: ${mv.from} is there to rename`).toBe(true);
        expect(tree.has(mv.to), `${where}: ${mv.to} is free`).toBe(false);
        expect(isDir(parentOf(mv.to)), `${where}: the folder of ${mv.to} is there`).toBe(true);
        for (const k of below(tree, mv.from)) {
          tree.set(mv.to + k.slice(mv.from.length), tree.get(k) as ManifestEntry);
          tree.delete(k);
        }
      }
    }
  }
  return state;
}

const SHAPES: Array<[string, ScenarioOptions, string[]]> = [
  ["remote fronts", { fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }, []],
  ["a hostmaster that is a front", { fronts: [{ name: "self", local: true }, { name: "web1" }], hooks: fakeDrushHooks() }, []],
  ["--new-uri", { fronts: [{ name: "web1" }, { name: "web2" }, { name: "web3" }], symlinkFiles: ["web1"] }, ["--new-uri", "renamed.example.com"]],
  ["--keep-master-data", { fronts: [{ name: "web1" }, { name: "web2" }] }, ["--keep-master-data"]],
];

describe("the plan tells the truth", () => {
  it.each(SHAPES)("%s: --dry-run prints the real run's plan, and the run moves exactly the paths it names", async (_shape, opts, extra) => {
    const s = (scenario = await setupScenario(opts));
    const args = ["migrate", s.site, "--to", s.to, ...extra, "--json"];
    const dry = await runController(s.cluster.controllerConfig, [...args, "--dry-run"]);
    expect(dry.exitCode, dry.stdout + dry.stderr).toBe(0);
    const dryPlan = dry.events[0] as unknown as PlanEvent;
    expect(dryPlan).toMatchObject({ event: "plan", dryRun: true });

    // every root's whole tree before the run; what the plan says they become is checked against them after it
    const before = await trees(s);
    const real = await runController(s.cluster.controllerConfig, args);
    expect(real.exitCode, real.stdout + real.stderr).toBe(0);
    const realPlan = real.events[0] as unknown as PlanEvent;
    expect(realPlan).toMatchObject({ event: "plan", dryRun: false });
    expect(comparable(realPlan)).toEqual(comparable(dryPlan));

    const expected = replayMoves(s, realPlan, before);
    const after = await trees(s);
    for (const [root, tree] of expected) {
      const diff = diffManifests(tree, after.get(root) ?? new Map());
      expect(diff, `${root}: what the run changed that its plan does not say (or the other way round):\n${summarizeDiff(diff, 30)}`).toEqual([]);
    }
    const newSite = extra[0] === "--new-uri" ? extra[1] : undefined;
    const kept = extra.includes("--keep-master-data") ? { keptStaleData: { migrationId: realPlan.migrationId } } : {};
    await expectMigrated(s, { ...(newSite ? { newSite } : {}), ...kept });

    // every step that is not skipped has an undo in the plan exactly when the table gives it one
    const undoable = new Set(["lock", "maintenance-on", "master-park-data", "fronts-park-data", "fetch-site", "master-move-site", "push-site", "fronts-restore-data"]);
    for (const st of realPlan.steps) expect(st.undo !== null, st.name).toBe(!st.skipped && undoable.has(st.name));
  });
});
