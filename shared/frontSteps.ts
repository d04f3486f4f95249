// The steps of the sequence (DESIGN §4) that reach a front's agent, in order, and what each sends
// forward and as its undo. The controller's step table sends these; the agent accepts them only in
// this order (agent/stepOrder.ts). One table, read by both ends. Pure.
import type { FrontAction } from "./wire.js";

export interface FrontStep {
  readonly step: string;
  /** what the step asks of a front: an Apply action, or an rsync the agent serves */
  readonly forward: FrontAction | "rsync";
  /** the Apply action that undoes it on a front; absent: nothing to undo there */
  readonly undo?: FrontAction;
  /** the front is only read (fetch-site): not a stage of the front's state */
  readonly readOnly?: true;
  /** never asked of the hostmaster's own front (`local`): it gets no fetch and no push */
  readonly remoteOnly?: true;
}

export const FRONT_STEPS = [
  { step: "fronts-park-data", forward: "park-data", undo: "unpark-data" },
  { step: "fetch-site", forward: "rsync", readOnly: true, remoteOnly: true },
  { step: "push-site", forward: "rsync", undo: "remove-new-site", remoteOnly: true },
  { step: "fronts-restore-data", forward: "restore-data", undo: "unrestore-data" },
  { step: "fronts-remove-old", forward: "remove-old-site" },
] as const satisfies readonly FrontStep[];

export type FrontStepName = (typeof FRONT_STEPS)[number]["step"];

export function frontStep(step: string): FrontStep | undefined {
  return (FRONT_STEPS as readonly FrontStep[]).find((s) => s.step === step);
}

/** The Apply action a step sends to a front, forward or as its undo (for the controller's step table). */
export function frontAction<N extends FrontStepName>(step: N, direction: "forward" | "undo"): FrontAction {
  const def = frontStep(step);
  const action = direction === "forward" ? def?.forward : def?.undo;
  if (action === undefined || action === "rsync") throw new Error(`step ${step} sends no Apply ${direction}`);
  return action;
}
