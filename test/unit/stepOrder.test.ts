// The step order a front enforces (agent/stepOrder.ts), as a pure state machine: what each state
// accepts, what it refuses, and the states kept by records written before it existed.
import { describe, expect, it } from "vitest";
import { STEPS, type StepIO } from "../../controller/steps.js";
import { FRONT_STEPS, type FrontStep, frontStep } from "../../shared/frontSteps.js";
import type { FrontAction } from "../../shared/wire.js";
import { type Decision, type FrontRequest, type FrontState, INITIAL_STATE, begin, decide, deriveState, settle, stagesOf } from "../../agent/stepOrder.js";

const NOW = "2026-01-01T00:00:00.000Z";

const park: FrontRequest = { kind: "apply", step: "fronts-park-data", action: "park-data" };
const unpark: FrontRequest = { kind: "apply", step: "fronts-park-data", action: "unpark-data" };
const fetch: FrontRequest = { kind: "rsync", step: "fetch-site" };
const push: FrontRequest = { kind: "rsync", step: "push-site" };
const removeNew: FrontRequest = { kind: "apply", step: "push-site", action: "remove-new-site" };
const restore: FrontRequest = { kind: "apply", step: "fronts-restore-data", action: "restore-data" };
const unrestore: FrontRequest = { kind: "apply", step: "fronts-restore-data", action: "unrestore-data" };
const removeOld: FrontRequest = { kind: "apply", step: "fronts-remove-old", action: "remove-old-site" };
const ALL = { park, unpark, fetch, push, removeNew, restore, unrestore, removeOld };
type Name = keyof typeof ALL;

/** Runs requests in turn on a front (each accepted one succeeds unless listed in `failing`); throws on a refusal. */
function run(names: Name[], opts: { local?: boolean; from?: FrontState; failing?: Name[] } = {}): FrontState {
  let state = opts.from ?? INITIAL_STATE;
  const local = opts.local ?? false;
  for (const name of names) {
    const d = decide(state, local, ALL[name]);
    if (d.verdict === "refuse") throw new Error(`${name} refused: ${d.message}`);
    if (d.verdict === "repeat-of-end") continue;
    state = settle(begin(state, local, d), local, d, !opts.failing?.includes(name), NOW);
  }
  return state;
}

function verdict(state: FrontState, name: Name, local = false): Decision["verdict"] | string {
  const d = decide(state, local, ALL[name]);
  return d.verdict === "refuse" ? d.code : d.verdict;
}

/** Every request's verdict in a state, for one readable assertion. */
function verdicts(state: FrontState, local = false): Record<Name, string> {
  return Object.fromEntries((Object.keys(ALL) as Name[]).map((n) => [n, verdict(state, n, local)])) as Record<Name, string>;
}

describe("a remote front, the whole way", () => {
  it("accepts the sequence in order, each action repeated too, and ends finished", () => {
    const state = run(["park", "park", "fetch", "fetch", "push", "push", "restore", "restore", "removeOld"]);
    expect(state).toEqual({
      stages: [
        { step: "fronts-park-data", status: "done" },
        { step: "push-site", status: "done" },
        { step: "fronts-restore-data", status: "done" },
        { step: "fronts-remove-old", status: "done" },
      ],
      ended: { as: "finished", at: NOW },
    });
  });

  it("right after registration: only park-data (and the undo of a park-data that may have been lost)", () => {
    expect(verdicts(INITIAL_STATE)).toEqual({
      park: "run",
      unpark: "run",
      fetch: "OUT_OF_ORDER",
      push: "OUT_OF_ORDER",
      removeNew: "OUT_OF_ORDER",
      restore: "OUT_OF_ORDER",
      unrestore: "OUT_OF_ORDER",
      removeOld: "OUT_OF_ORDER",
    });
  });

  it("parked: fetch, push, park again, unpark, and the undo of a push that may have been lost", () => {
    expect(verdicts(run(["park"]))).toEqual({
      park: "run",
      unpark: "run",
      fetch: "run",
      push: "run",
      removeNew: "run",
      restore: "OUT_OF_ORDER",
      unrestore: "OUT_OF_ORDER",
      removeOld: "OUT_OF_ORDER",
    });
  });

  it("pushed: restore, push again, remove-new-site, and the undo of a restore that may have been lost; no unpark before the push is undone", () => {
    expect(verdicts(run(["park", "push"]))).toEqual({
      park: "OUT_OF_ORDER",
      unpark: "OUT_OF_ORDER",
      fetch: "OUT_OF_ORDER",
      push: "run",
      removeNew: "run",
      restore: "run",
      unrestore: "run",
      removeOld: "OUT_OF_ORDER",
    });
  });

  it("restored: remove-old-site, restore again, or its undo", () => {
    expect(verdicts(run(["park", "push", "restore"]))).toEqual({
      park: "OUT_OF_ORDER",
      unpark: "OUT_OF_ORDER",
      fetch: "OUT_OF_ORDER",
      push: "OUT_OF_ORDER",
      removeNew: "OUT_OF_ORDER",
      restore: "run",
      unrestore: "run",
      removeOld: "run",
    });
  });

  it("finished: refuses everything but a repeat of remove-old-site, which is answered from the record", () => {
    const finished = run(["park", "push", "restore", "removeOld"]);
    expect(verdicts(finished)).toEqual({
      park: "MIGRATION_FINISHED",
      unpark: "MIGRATION_FINISHED",
      fetch: "MIGRATION_FINISHED",
      push: "MIGRATION_FINISHED",
      removeNew: "MIGRATION_FINISHED",
      restore: "MIGRATION_FINISHED",
      unrestore: "MIGRATION_FINISHED",
      removeOld: "repeat-of-end",
    });
    const d = decide(finished, false, removeNew);
    expect(d.verdict === "refuse" && d.message).toBe(`remove-new-site (step push-site): the migration finished on this front at ${NOW}; it accepts nothing more`);
  });

  it("remove-old-site that failed (data still in the old folder) is retried, never undone", () => {
    const state = run(["park", "push", "restore", "removeOld"], { failing: ["removeOld"] });
    expect(state.ended).toBeUndefined();
    expect(state.stages.at(-1)).toEqual({ step: "fronts-remove-old", status: "begun" });
    expect(verdict(state, "removeOld")).toBe("run");
    expect(verdict(state, "unrestore")).toBe("OUT_OF_ORDER");
  });
});

describe("undo", () => {
  it("goes in reverse order down to nothing parked, and then the migration is rolled back", () => {
    const state = run(["park", "push", "restore", "unrestore", "unrestore", "removeNew", "removeNew", "unpark"]);
    expect(state).toEqual({ stages: [], ended: { as: "rolled-back", at: NOW } });
    expect(verdicts(state)).toEqual({
      park: "MIGRATION_FINISHED",
      unpark: "repeat-of-end",
      fetch: "MIGRATION_FINISHED",
      push: "MIGRATION_FINISHED",
      removeNew: "MIGRATION_FINISHED",
      restore: "MIGRATION_FINISHED",
      unrestore: "MIGRATION_FINISHED",
      removeOld: "MIGRATION_FINISHED",
    });
  });

  it("an undo is refused before its forward action: remove-new-site or unrestore-data right after registration, unrestore-data before the push", () => {
    expect(verdict(INITIAL_STATE, "removeNew")).toBe("OUT_OF_ORDER");
    expect(verdict(INITIAL_STATE, "unrestore")).toBe("OUT_OF_ORDER");
    expect(verdict(run(["park"]), "unrestore")).toBe("OUT_OF_ORDER");
    const d = decide(run(["park"]), false, unrestore);
    expect(d.verdict === "refuse" && d.message).toBe("unrestore-data (step fronts-restore-data) needs push-site done first; on this front: fronts-park-data done");
  });

  it("an undo out of reverse order is refused: unpark-data while the push is in effect", () => {
    const d = decide(run(["park", "push"]), false, unpark);
    expect(d.verdict === "refuse" && d.message).toBe("unpark-data (step fronts-park-data): undo push-site first (undos go in reverse order); on this front: fronts-park-data done, push-site done");
  });

  it("of a half-done action: a park-data that failed part-way is undone, and nothing goes forward from it", () => {
    const state = run(["park"], { failing: ["park"] });
    expect(state).toEqual({ stages: [{ step: "fronts-park-data", status: "begun" }] });
    expect(verdicts(state)).toMatchObject({ park: "run", unpark: "run", fetch: "OUT_OF_ORDER", push: "OUT_OF_ORDER", removeNew: "OUT_OF_ORDER" });
    expect(run(["unpark"], { from: state })).toEqual({ stages: [], ended: { as: "rolled-back", at: NOW } });
  });

  it("a failed undo stays undoing: it is retried, and the stage can be redone (resume after a stopped rollback)", () => {
    const state = run(["park", "push", "removeNew"], { failing: ["removeNew"] });
    expect(state.stages.at(-1)).toEqual({ step: "push-site", status: "undoing" });
    expect(verdicts(state)).toMatchObject({ removeNew: "run", push: "run", restore: "OUT_OF_ORDER", unpark: "OUT_OF_ORDER" });
    // resume pushes again, then restores
    expect(run(["push", "restore"], { from: state }).stages.at(-1)).toEqual({ step: "fronts-restore-data", status: "done" });
  });

  it("after a partial rollback, forward again: restore-data undone, then redone", () => {
    const state = run(["park", "push", "restore", "unrestore"]);
    expect(state.stages).toEqual([
      { step: "fronts-park-data", status: "done" },
      { step: "push-site", status: "done" },
    ]);
    expect(run(["restore", "removeOld"], { from: state }).ended?.as).toBe("finished");
  });
});

describe("the controller's crash matrices, as one front sees them", () => {
  // killed after web1 acknowledged a fan-out step: web2 may never have had the request, and rollback
  // sends it the step's undo all the same (it was journaled as sent)
  it.each([
    ["fronts-park-data", [] as Name[], ["unpark"] as Name[]],
    ["push-site", ["park"], ["removeNew", "unpark"]],
    ["fronts-restore-data", ["park", "push"], ["unrestore", "removeNew", "unpark"]],
  ] as const)("%s lost on its way to web2: rollback's undos are accepted there, down to rolled back", (_step, before, undos) => {
    expect(run([...before, ...undos]).ended?.as).toBe("rolled-back");
  });

  it.each([
    ["fronts-park-data", ["park"] as Name[], ["park", "fetch", "push", "restore", "removeOld"] as Name[]],
    ["push-site", ["park", "push"], ["push", "restore", "removeOld"]],
    ["fronts-restore-data", ["park", "push", "restore"], ["restore", "removeOld"]],
    ["fronts-remove-old", ["park", "push", "restore", "removeOld"], ["removeOld"]],
  ] as const)("resume after %s: the interrupted step is re-run where it ran, and the migration finishes", (_step, before, resumed) => {
    expect(run([...before, ...resumed]).ended?.as).toBe("finished");
  });
});

describe("the hostmaster's own front (local)", () => {
  it("has no fetch and no push: park, restore, remove-old-site", () => {
    expect(stagesOf(true).map((s) => s.step)).toEqual(["fronts-park-data", "fronts-restore-data", "fronts-remove-old"]);
    expect(verdicts(run(["park"], { local: true }), true)).toEqual({
      park: "run",
      unpark: "run",
      fetch: "OUT_OF_ORDER",
      push: "OUT_OF_ORDER",
      removeNew: "OUT_OF_ORDER",
      restore: "run",
      unrestore: "run",
      removeOld: "OUT_OF_ORDER",
    });
    expect(run(["park", "restore", "removeOld"], { local: true }).ended?.as).toBe("finished");
    expect(run(["park", "restore", "unrestore", "unpark"], { local: true }).ended?.as).toBe("rolled-back");
  });
});

describe("requests that name the wrong step", () => {
  it.each([
    ["park-data sent by another step", { kind: "apply", step: "fronts-restore-data", action: "park-data" }],
    ["an action by a step that sends none to a front", { kind: "apply", step: "master-move-site", action: "remove-new-site" }],
    ["a step name no step has", { kind: "apply", step: "swap-test", action: "park-data" }],
    ["rsync for a step that sends an Apply", { kind: "rsync", step: "fronts-park-data" }],
    ["an Apply for the fetch step", { kind: "apply", step: "fetch-site", action: "park-data" }],
  ] as Array<[string, FrontRequest]>)("%s: refused", (_why, req) => {
    expect(decide(run(["park"]), false, req).verdict).toBe("refuse");
  });
});

describe("the table", () => {
  it("is what the controller's step table sends, step by step", async () => {
    const sent: FrontAction[] = [];
    // only what the front steps use of their StepIO
    const io = {
      apply: async (_host: string, action: FrontAction) => {
        sent.push(action);
        return [];
      },
    } as unknown as StepIO;
    for (const f of FRONT_STEPS as readonly FrontStep[]) {
      const def = STEPS.find((s) => s.name === f.step);
      expect(def, f.step).toBeDefined();
      sent.length = 0;
      if (f.forward !== "rsync") await def?.run(io, "web1");
      if (f.undo) await def?.undo?.run(io, "web1");
      expect(sent, f.step).toEqual([...(f.forward !== "rsync" ? [f.forward] : []), ...(f.undo ? [f.undo] : [])]);
      expect(def?.undo !== undefined, `${f.step} has an undo on the hostmaster or the fronts`).toBe(f.step !== "fronts-remove-old");
    }
  });

  it("lists the front steps in the order the controller's table runs them, each defined there from its front entry", () => {
    expect(STEPS.map((s) => s.name).filter((n) => frontStep(n) !== undefined)).toEqual(FRONT_STEPS.map((f) => f.step));
    // an Apply step of the fronts has an undo exactly when its front entry has one
    for (const f of FRONT_STEPS as readonly FrontStep[]) {
      if (f.forward === "rsync") continue;
      expect(STEPS.find((s) => s.name === f.step)?.undo !== undefined, f.step).toBe(f.undo !== undefined);
    }
  });
});

describe("records written before the state was kept", () => {
  const op = (key: string, at: string, ok = true) => ({ key, at, ok });

  it("a finished migration is finished, at the time of its remove-old-site", () => {
    const state = deriveState(
      false,
      [
        op("fronts-restore-data/restore-data", "2025-01-01T00:02:00Z"),
        op("fronts-park-data/park-data", "2025-01-01T00:01:00Z"),
        op("fronts-remove-old/remove-old-site", "2025-01-01T00:03:00Z"),
      ],
      [{ at: "new" }],
    );
    expect(state.ended).toEqual({ as: "finished", at: "2025-01-01T00:03:00Z" });
  });

  it("a rolled-back migration is rolled back; a park-data then unpark-data by any step name too", () => {
    const rolled = deriveState(
      false,
      [op("fronts-park-data/park-data", "2025-01-01T00:01:00Z"), op("push-site/remove-new-site", "2025-01-01T00:04:00Z"), op("fronts-park-data/unpark-data", "2025-01-01T00:05:00Z")],
      [{ at: "old" }],
    );
    expect(rolled).toEqual({ stages: [], ended: { as: "rolled-back", at: "2025-01-01T00:05:00Z" } });
  });

  it("a restore that was asked for implies the push before it", () => {
    const state = deriveState(false, [op("fronts-park-data/park-data", "2025-01-01T00:01:00Z"), op("fronts-restore-data/restore-data", "2025-01-01T00:02:00Z", false)], [{ at: "park" }]);
    expect(state.stages).toEqual([
      { step: "fronts-park-data", status: "done" },
      { step: "push-site", status: "done" },
      { step: "fronts-restore-data", status: "begun" },
    ]);
  });

  it("without results: the ledger says how far the data went", () => {
    expect(deriveState(false, [], [])).toEqual(INITIAL_STATE);
    expect(deriveState(false, [], [{ at: "old", moving: "park" }]).stages).toEqual([{ step: "fronts-park-data", status: "begun" }]);
    expect(deriveState(true, [], [{ at: "park", moving: "new" }]).stages).toEqual([
      { step: "fronts-park-data", status: "done" },
      { step: "fronts-restore-data", status: "begun" },
    ]);
  });

  it("an agent killed in the middle of park-data (no result kept): park-data begun", () => {
    expect(deriveState(false, [], [{ at: "old", moving: "park" }, { at: "old" }])).toEqual({ stages: [{ step: "fronts-park-data", status: "begun" }] });
  });
});
