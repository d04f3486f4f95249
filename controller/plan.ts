// The migration plan as data: the step table (steps.ts) read for one migration — the hosts that must
// acknowledge each step, what it does, its undo, and every path it moves on every host. Built without
// any I/O; the plan event, --dry-run and the journal's plan.json are this object.
import { QmError } from "../shared/errors.js";
import type { MigrationSpec } from "../shared/migration.js";
import type { HookName } from "./hooks.js";
import { type Move, type PlanShape, STEPS, type StepName } from "./steps.js";

export interface PlanFront {
  readonly name: string;
  readonly local: boolean;
}

export interface PlanStep {
  readonly name: StepName;
  /** the hosts that must acknowledge; empty when the step is skipped */
  readonly hosts: readonly string[];
  readonly does: string;
  /** what a rollback does to put it back; null exactly when a rollback leaves it as it is */
  readonly undo: string | null;
  readonly skipped?: string;
  readonly moves: readonly Move[];
}

export interface Plan {
  readonly migration: MigrationSpec;
  readonly master: string;
  readonly fronts: readonly PlanFront[];
  /** the front whose site folder is fetched; a local front means the hostmaster's copy is live and no fetch is needed */
  readonly fetchFrom: string;
  readonly masterIsFront: boolean;
  readonly keepMasterData: boolean;
  readonly steps: readonly PlanStep[];
}

export interface PlanInput {
  readonly migration: MigrationSpec;
  readonly master: string;
  readonly fronts: readonly PlanFront[];
  readonly fetchFrom?: string;
  readonly hooks: ReadonlySet<HookName>;
  readonly keepMasterData?: boolean;
}

export function buildPlan(input: PlanInput): Plan {
  const { migration, master, fronts } = input;
  if (fronts.length === 0) throw new QmError("USAGE", "a plan needs at least one front", { key: "fronts" });
  const local = fronts.find((f) => f.local);
  const fetchFrom = input.fetchFrom ?? local?.name ?? (fronts[0] as PlanFront).name;
  if (!fronts.some((f) => f.name === fetchFrom)) throw new QmError("USAGE", `fetch-from front ${fetchFrom} is not in the config`, { key: "fetch-from" });
  const shape: PlanShape = {
    migration,
    master,
    fronts,
    fetchFrom,
    masterIsFront: local !== undefined,
    keepMasterData: input.keepMasterData ?? false,
    hooks: input.hooks,
  };
  const steps = STEPS.map((def): PlanStep => {
    const hosts = def.hosts(shape);
    if ("skipped" in hosts) return Object.freeze({ name: def.name, hosts: [], does: def.does(shape), undo: null, skipped: hosts.skipped, moves: [] });
    return Object.freeze({ name: def.name, hosts: [...hosts], does: def.does(shape), undo: def.undo?.does(shape) ?? null, moves: def.moves(shape) });
  });
  return Object.freeze({
    migration,
    master,
    fronts: Object.freeze([...fronts]),
    fetchFrom,
    masterIsFront: shape.masterIsFront,
    keepMasterData: shape.keepMasterData,
    steps: Object.freeze(steps),
  });
}
