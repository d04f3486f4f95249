// The front half of the step table (DESIGN §4): for each step that reaches a front's agent, its name,
// the action it sends forward and the one that undoes it there, and which way its rsync goes. It lives
// in shared/ because the agent, which never loads controller code, accepts the actions only in this
// order (agent/stepOrder.ts) and serves the rsyncs (agent/rsyncServer.ts). The controller's table
// (controller/steps.ts) builds each of these steps' entries from the one here: a front's action and its
// undo are written nowhere else. Pure.
import type { FrontAction } from "./wire.js";

export interface FrontStep {
  readonly step: string;
  /** what the step asks of a front: an Apply action, or an rsync the agent serves */
  readonly forward: FrontAction | "rsync";
  /** the Apply action that undoes it on a front; absent: nothing to undo there */
  readonly undo?: FrontAction;
  /** an rsync step: from the front's old site folder to the hostmaster (fetch), or from the hostmaster into the front's new one (push) */
  readonly rsync?: "fetch" | "push";
  /** the front is only read (fetch-site): not a stage of the front's state */
  readonly readOnly?: true;
  /** never asked of the hostmaster's own front (`local`): it gets no fetch and no push */
  readonly remoteOnly?: true;
}

/** Each front step by a name for code that needs one of them (a typed constant, not a copy of its name). */
export const FRONT_STEP = {
  parkData: { step: "fronts-park-data", forward: "park-data", undo: "unpark-data" },
  fetchSite: { step: "fetch-site", forward: "rsync", rsync: "fetch", readOnly: true, remoteOnly: true },
  pushSite: { step: "push-site", forward: "rsync", rsync: "push", undo: "remove-new-site", remoteOnly: true },
  restoreData: { step: "fronts-restore-data", forward: "restore-data", undo: "unrestore-data" },
  removeOld: { step: "fronts-remove-old", forward: "remove-old-site" },
} as const satisfies Record<string, FrontStep>;

type FrontStepEntry = (typeof FRONT_STEP)[keyof typeof FRONT_STEP];

/** The front steps in the order they run (the order of FRONT_STEP's entries). */
export const FRONT_STEPS: readonly FrontStepEntry[] = Object.freeze(Object.values(FRONT_STEP));

/** The steps that are an rsync through the agent channel. */
export type RsyncStepName = Extract<FrontStepEntry, { readonly rsync: string }>["step"];

export function frontStep(step: string): FrontStep | undefined {
  return (FRONT_STEPS as readonly FrontStep[]).find((s) => s.step === step);
}

/** The step whose rsync goes this way. */
export function rsyncStep(direction: "fetch" | "push"): RsyncStepName {
  const def = FRONT_STEPS.find((s): s is Extract<FrontStepEntry, { readonly rsync: string }> => "rsync" in s && s.rsync === direction);
  if (!def) throw new Error(`no front step rsyncs to ${direction}`);
  return def.step;
}
