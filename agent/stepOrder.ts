// The order in which a front accepts the actions of one migration (DESIGN §5.6, §9). Each registered
// migration has a state here: the stages (front steps that change this front) in effect, and whether it
// ended. An Apply or an rsync is accepted only where the step sequence allows it; a migration that
// ended (finished, or rolled back) accepts nothing more. Pure: the agent keeps the state in its record.
import { FRONT_STEP, FRONT_STEPS, type FrontStep } from "../shared/frontSteps.js";
import type { FrontAction } from "../shared/wire.js";

/**
 * begun: the forward action was accepted (it may be under way, have failed part-way, or been cut by a
 * crash); done: it succeeded; undoing: its undo was accepted and has not succeeded yet.
 */
export type StageStatus = "begun" | "done" | "undoing";

export interface StageState {
  readonly step: string;
  readonly status: StageStatus;
}

export interface FrontState {
  /** the stages begun and not undone, a prefix of this front's sequence */
  readonly stages: readonly StageState[];
  /** the migration can take nothing more here: the old site folder was removed, or everything was undone */
  readonly ended?: { readonly as: "finished" | "rolled-back"; readonly at: string };
}

export const INITIAL_STATE: FrontState = Object.freeze({ stages: Object.freeze([]) });

export type FrontRequest = { readonly kind: "apply"; readonly step: string; readonly action: FrontAction } | { readonly kind: "rsync"; readonly step: string };

export type Decision =
  /** do it (forward or undo of the stage at `index`; `readOnly`: fetch-site, which changes no state) */
  | { readonly verdict: "run"; readonly direction: "forward" | "undo"; readonly index: number; readonly readOnly: boolean }
  /** a repeat of the action that ended the migration (a retry after a lost reply): answered from the record, nothing done */
  | { readonly verdict: "repeat-of-end" }
  | { readonly verdict: "refuse"; readonly code: "OUT_OF_ORDER" | "MIGRATION_FINISHED"; readonly message: string };

/** The stages of a front's sequence: the front steps that change it (the hostmaster's own front gets no push). */
export function stagesOf(local: boolean): readonly FrontStep[] {
  return (FRONT_STEPS as readonly FrontStep[]).filter((s) => !s.readOnly && !(local && s.remoteOnly));
}

const describeState = (state: FrontState): string =>
  state.stages.length === 0 ? "nothing begun on this front" : `on this front: ${state.stages.map((s) => `${s.step} ${s.status}`).join(", ")}`;

const what = (req: FrontRequest): string => (req.kind === "apply" ? `${req.action} (step ${req.step})` : `rsync of step ${req.step}`);

/** Whether `req` may run now, and how. */
export function decide(state: FrontState, local: boolean, req: FrontRequest): Decision {
  const refuse = (message: string, code: "OUT_OF_ORDER" | "MIGRATION_FINISHED" = "OUT_OF_ORDER"): Decision => ({ verdict: "refuse", code, message });
  const def = (FRONT_STEPS as readonly FrontStep[]).find((s) => s.step === req.step);
  if (!def) return refuse(`${what(req)}: step ${req.step} asks nothing of a front`);
  const direction = req.kind === "rsync" ? (def.forward === "rsync" ? "forward" : undefined) : req.action === def.forward ? "forward" : req.action === def.undo ? "undo" : undefined;
  if (!direction) return refuse(`${what(req)}: step ${req.step} does not send that`);
  if (local && def.remoteOnly) return refuse(`${what(req)}: this is the hostmaster's own front, which step ${req.step} never reaches`);

  const stages = stagesOf(local);
  if (state.ended) {
    const last = stages.length - 1;
    const endedBy = state.ended.as === "finished" ? { step: stages[last]?.step, direction: "forward" } : { step: stages[0]?.step, direction: "undo" };
    if (req.kind === "apply" && req.step === endedBy.step && direction === endedBy.direction) return { verdict: "repeat-of-end" };
    return refuse(`${what(req)}: the migration ${state.ended.as === "finished" ? "finished" : "was rolled back"} on this front at ${state.ended.at}; it accepts nothing more`, "MIGRATION_FINISHED");
  }

  const inEffect = state.stages.length;
  const lastDone = (n: number): boolean => n === 0 || state.stages[n - 1]?.status === "done";
  if (def.readOnly) {
    // read between the stages before it and the one after it: those before done, none after begun
    const before = stages.filter((s) => FRONT_STEPS.findIndex((f) => f.step === s.step) < FRONT_STEPS.findIndex((f) => f.step === def.step)).length;
    if (inEffect === before && lastDone(before)) return { verdict: "run", direction, index: before, readOnly: true };
    return refuse(`${what(req)} runs only once ${stages[before - 1]?.step ?? "registration"} is done and before ${stages[before]?.step ?? "the end"} begins; ${describeState(state)}`);
  }

  const index = stages.findIndex((s) => s.step === def.step);
  const previous = stages[index - 1]?.step;
  // in effect here (a repeat, a retry after a lost reply, the undo of a half-done or done stage)
  if (inEffect === index + 1) return { verdict: "run", direction, index, readOnly: false };
  // next in line once the one before it is done; for an undo, the stage is not in effect here (undone
  // already, or never begun: its request was journaled by the controller and lost), so it finds nothing to do
  if (inEffect === index && lastDone(index)) return { verdict: "run", direction, index, readOnly: false };
  if (inEffect <= index) return refuse(`${what(req)} needs ${previous ?? "registration"} done first; ${describeState(state)}`);
  const later = state.stages[inEffect - 1]?.step ?? "";
  return refuse(
    direction === "forward"
      ? `${what(req)}: ${later} has begun since; ${describeState(state)}`
      : `${what(req)}: undo ${later} first (undos go in reverse order); ${describeState(state)}`,
  );
}

/** The state once a `run` decision's action is accepted (written before it changes anything). */
export function begin(state: FrontState, local: boolean, decision: Extract<Decision, { verdict: "run" }>): FrontState {
  if (decision.readOnly) return state;
  const def = stagesOf(local)[decision.index] as FrontStep;
  const { index } = decision;
  if (decision.direction === "forward") {
    // an rsync's outcome is the controller's to judge: a push counts once it is served
    const status: StageStatus = def.forward === "rsync" ? "done" : "begun";
    return { stages: [...state.stages.slice(0, index), { step: def.step, status }] };
  }
  if (state.stages.length !== index + 1) return state;
  return { stages: [...state.stages.slice(0, index), { step: def.step, status: "undoing" }] };
}

/** The state once the accepted action ended (`ok`: it succeeded), at `now`. */
export function settle(state: FrontState, local: boolean, decision: Extract<Decision, { verdict: "run" }>, ok: boolean, now: string): FrontState {
  if (decision.readOnly || !ok) return state;
  const stages = stagesOf(local);
  const { index } = decision;
  if (decision.direction === "forward") {
    const done = [...state.stages.slice(0, index), { step: (stages[index] as FrontStep).step, status: "done" as const }];
    return index === stages.length - 1 ? { stages: done, ended: { as: "finished", at: now } } : { stages: done };
  }
  const left = state.stages.slice(0, Math.min(index, state.stages.length));
  return index === 0 ? { stages: left, ended: { as: "rolled-back", at: now } } : { stages: left };
}

/** One kept operation result, as records written before the state was kept have them. */
export interface PastOperation {
  /** `"<step>/<action>"` */
  readonly key: string;
  readonly at: string;
  readonly ok: boolean;
}

/**
 * The state of a record written before the state was kept: its operation results replayed in time order
 * (the step names they were sent with are not trusted: the action says which stage), then the ledger
 * where it shows data moved that no result accounts for (an agent killed mid-action). A push was not
 * recorded then: it counts as done once a later stage was asked for. Pure.
 */
export function deriveState(local: boolean, operations: readonly PastOperation[], ledger: ReadonlyArray<{ at: string; moving?: string }>): FrontState {
  const stages = stagesOf(local);
  let state: FrontState = INITIAL_STATE;
  const sorted = [...operations].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  for (const op of sorted) {
    const action = op.key.slice(op.key.lastIndexOf("/") + 1);
    const index = stages.findIndex((s) => s.forward === action || s.undo === action);
    const def = stages[index];
    if (!def) continue;
    const cur = state.stages;
    if (def.forward === action) {
      // stages before it that no result shows (a push) were done for it to be asked
      const before = stages.slice(0, index).map((s, i): StageState => cur[i] ?? { step: s.step, status: "done" });
      const done = [...before, { step: def.step, status: op.ok ? "done" : "begun" } as const];
      state = op.ok && index === stages.length - 1 ? { stages: done, ended: { as: "finished", at: op.at } } : { stages: done };
    } else if (cur.length > index) {
      const left = op.ok ? cur.slice(0, index) : [...cur.slice(0, index), { step: def.step, status: "undoing" as const }];
      state = op.ok && index === 0 ? { stages: left, ended: { as: "rolled-back", at: op.at } } : { stages: left };
    } else if (op.ok && index === 0) {
      state = { stages: [], ended: { as: "rolled-back", at: op.at } };
    }
  }
  // data away from the old site folder that no kept result explains: its stage was begun
  const away = ledger.filter((e) => e.at !== "old" || (e.moving !== undefined && e.moving !== "old"));
  if (state.stages.length === 0 && away.length > 0) {
    const intoNew = away.some((e) => e.at === "new" || e.moving === "new");
    const restoreStep = FRONT_STEP.restoreData.step;
    const restore = stages.findIndex((s) => s.step === restoreStep);
    state = intoNew
      ? { stages: [...stages.slice(0, restore).map((s): StageState => ({ step: s.step, status: "done" })), { step: restoreStep, status: "begun" }] }
      : { stages: [{ step: stages[0]?.step ?? FRONT_STEP.parkData.step, status: "begun" }] };
  }
  return state;
}
