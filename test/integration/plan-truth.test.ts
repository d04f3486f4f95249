// The plan tells the truth. For each shape of cluster (remote fronts, a hostmaster that is a front,
// --new-uri, --keep-master-data): the plan printed by --dry-run is the plan of the real run (apart from
// the migration id and dryRun), and the paths it says each step moves are the paths the run moved —
// replayed over every host's real tree before the run, they give the real tree after it.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, type ScenarioOptions, expectMigrated, setupScenario } from "../helpers/scenario.js";

interface Move {
  host: string;
  what: string;
  op: "rename" | "copy" | "remove";
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

const exists = (p: string) => {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
};

/** A path of a move on its host's root (a copy's source on another host is not a path of this one). */
const local = (p: string) => p.replace(/\/$/, "");

/**
 * Replays the plan's moves over which of their paths exist on each root before the run (renames carry
 * what lies under them), checking each move could happen; returns what must exist after the run.
 */
function replayMoves(s: Scenario, plan: PlanEvent): Map<string, boolean> {
  const state = new Map<string, boolean>();
  const key = (host: string, rel: string) => path.join(rootOf(s, host), local(rel));
  const moves = plan.steps.flatMap((st) => st.moves.map((mv) => ({ ...mv, step: st.name })));
  for (const mv of moves) {
    for (const rel of mv.op === "copy" ? [mv.to] : [mv.from, mv.to]) if (rel) state.set(key(mv.host, rel), exists(key(mv.host, rel)));
  }
  const under = (p: string) => [...state.keys()].filter((k) => k === p || k.startsWith(`${p}/`));
  for (const mv of moves) {
    const where = `${mv.step}: ${mv.host}: ${mv.what}`;
    if (mv.op === "copy") {
      state.set(key(mv.host, mv.to), true);
    } else if (mv.op === "remove") {
      expect(state.get(key(mv.host, mv.from)), `${where}: ${mv.from} is there to remove`).toBe(true);
      for (const k of under(key(mv.host, mv.from))) state.set(k, false);
    } else {
      const from = key(mv.host, mv.from);
      const to = key(mv.host, mv.to);
      expect(state.get(from), `${where}: ${mv.from} is there to rename`).toBe(true);
      expect(state.get(to), `${where}: ${mv.to} is free`).toBe(false);
      for (const k of under(from)) {
        state.set(to + k.slice(from.length), state.get(k) ?? false);
        state.set(k, false);
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

    // what the plan says must exist after the run, from the trees as they are before it
    const expected = replayMoves(s, dryPlan);
    const real = await runController(s.cluster.controllerConfig, args);
    expect(real.exitCode, real.stdout + real.stderr).toBe(0);
    const realPlan = real.events[0] as unknown as PlanEvent;
    expect(realPlan).toMatchObject({ event: "plan", dryRun: false });
    expect(comparable(realPlan)).toEqual(comparable(dryPlan));

    for (const [p, present] of expected) {
      expect(exists(p.split(dryPlan.migrationId).join(realPlan.migrationId)), `${p} after the run`).toBe(present);
    }
    const newSite = extra[0] === "--new-uri" ? extra[1] : undefined;
    const kept = extra.includes("--keep-master-data") ? { keptStaleData: { migrationId: realPlan.migrationId } } : {};
    await expectMigrated(s, { ...(newSite ? { newSite } : {}), ...kept });

    // every step that is not skipped has an undo in the plan exactly when the table gives it one
    const undoable = new Set(["lock", "maintenance-on", "master-park-data", "fronts-park-data", "fetch-site", "master-move-site", "push-site", "fronts-restore-data"]);
    for (const st of realPlan.steps) expect(st.undo !== null, st.name).toBe(!st.skipped && undoable.has(st.name));
  });
});
