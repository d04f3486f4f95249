// What a migration's journal says: replayed from its events, with no I/O. The single source of truth
// for `status`, `resume` and `rollback`: which steps are done, which hosts were sent which step, what
// must be undone and where, and where each host stands.
import { STEP_NAMES, type StepName, UNDOABLE, isPastPointOfNoReturn, isStepName } from "./steps.js";

export type MigrationStateName = "running" | "migrated" | "rolled-back" | "needs-attention" | "interrupted";

/** A journal line, as written by the runner (RunEvent or IntentEvent, with a time). */
export interface JournalEvent {
  readonly event: string;
  readonly time?: string;
  readonly step?: string;
  readonly host?: string;
  readonly ok?: boolean;
  readonly undo?: boolean;
  readonly action?: string;
  readonly outcome?: string;
  readonly exitCode?: number;
  readonly message?: string;
  readonly detail?: string;
  readonly hook?: string;
  readonly pgid?: number;
  readonly startTime?: string;
}

/** A hook whose start the journal records and whose end it does not: its controller was killed meanwhile. */
export interface UnendedHook {
  readonly step: string;
  readonly hook: string;
  readonly undo: boolean;
  /** its process group (the leader's pid) and the leader's start time */
  readonly pgid: number;
  readonly startTime: string;
}

export interface HostPosition {
  readonly step: string;
  readonly undo: boolean;
  /** undefined while the host's part is in flight (intent without acknowledgement) */
  readonly ok: boolean | undefined;
}

/** A host's failed acknowledgement: its detail says why (a failed hook's goes on with its last lines of output). */
export interface HostFailure {
  readonly host: string;
  readonly step: string;
  readonly undo: boolean;
  readonly detail: string;
}

export interface Replay {
  /** the last result event, if the last run of this migration ended */
  readonly result: { outcome: string; exitCode: number; message: string } | undefined;
  readonly lastStep: { step: string; undo: boolean } | undefined;
  /** forward steps that completed and were not undone since */
  readonly done: ReadonlySet<StepName>;
  /** the first step `resume` has to run; undefined when every step is done */
  readonly resumeFrom: StepName | undefined;
  /** whether any host was sent a step at or after the point of no return */
  readonly pastPointOfNoReturn: boolean;
  /** what `rollback` has to undo, latest step first, on the hosts that were sent it and have not undone it */
  readonly undoPlan: ReadonlyArray<{ step: StepName; hosts: string[] }>;
  /** "step/action" of every sub-action a forward step journaled an intent for (e.g. master-move-site/hook:updatedb) */
  readonly ran: ReadonlySet<string>;
  readonly hosts: ReadonlyMap<string, HostPosition>;
  /** hooks started and not seen to end: `resume` and `rollback` make sure they are gone before they act */
  readonly unendedHooks: readonly UnendedHook[];
  /**
   * the dbDump hook ended well in an earlier run: its dump holds the database as it was before anything
   * of the migration could change it, and a resume must not dump over it (updatedb may have run since)
   */
  readonly dumped: boolean;
  /**
   * the last failed acknowledgement of each host and step (forward or undo) that no acknowledgement of
   * the same made good since, in journal order: why the migration stopped or went back
   */
  readonly failures: readonly HostFailure[];
}

export function replay(events: readonly JournalEvent[]): Replay {
  let result: Replay["result"];
  let lastStep: Replay["lastStep"];
  const done = new Set<StepName>();
  const ran = new Set<string>();
  /** per step: hosts sent the forward step since their last completed undo */
  const pending = new Map<StepName, Set<string>>();
  const hosts = new Map<string, HostPosition>();
  const hooks = new Map<number, UnendedHook>();
  let pastPointOfNoReturn = false;
  let dumped = false;
  const failures = new Map<string, HostFailure>();

  for (const e of events) {
    const step = e.step;
    switch (e.event) {
      case "result":
        result = { outcome: String(e.outcome), exitCode: Number(e.exitCode), message: String(e.message ?? "") };
        break;
      case "step-start":
        if (!isStepName(step)) break;
        lastStep = { step, undo: e.undo === true };
        result = undefined;
        if (e.undo) done.delete(step);
        break;
      case "step-end":
        if (isStepName(step) && !e.undo && e.ok) done.add(step);
        break;
      case "intent":
        if (!isStepName(step) || e.host === undefined) break;
        hosts.set(e.host, { step, undo: e.undo === true, ok: undefined });
        if (e.undo) break;
        if (e.action && e.action !== step) ran.add(`${step}/${e.action}`);
        if (isPastPointOfNoReturn(step)) pastPointOfNoReturn = true;
        if (!pending.has(step)) pending.set(step, new Set());
        pending.get(step)?.add(e.host);
        break;
      case "hook-started":
        if (typeof e.pgid !== "number") break;
        hooks.set(e.pgid, { step: String(step), hook: String(e.hook), undo: e.undo === true, pgid: e.pgid, startTime: String(e.startTime ?? "") });
        break;
      case "hook-ended":
        if (typeof e.pgid === "number") hooks.delete(e.pgid);
        if (e.hook === "dbDump" && e.ok === true && e.undo !== true) dumped = true;
        break;
      case "ack":
        if (!isStepName(step) || e.host === undefined) break;
        hosts.set(e.host, { step, undo: e.undo === true, ok: e.ok === true });
        if (e.undo && e.ok) pending.get(step)?.delete(e.host);
        {
          const key = JSON.stringify([e.host, step, e.undo === true]);
          // deleted first: a failure again goes to the end, in journal order
          failures.delete(key);
          if (e.ok !== true) failures.set(key, { host: e.host, step, undo: e.undo === true, detail: String(e.detail ?? "") });
        }
        break;
    }
  }

  const resumeFrom = STEP_NAMES.slice(1).find((s) => !done.has(s));
  const undoPlan = [...STEP_NAMES]
    .reverse()
    .filter((s) => UNDOABLE.has(s))
    .map((s) => ({ step: s, hosts: [...(pending.get(s) ?? [])] }))
    .filter((u) => u.hosts.length > 0);
  return { result, lastStep, done, resumeFrom, pastPointOfNoReturn, undoPlan, ran, hosts, unendedHooks: [...hooks.values()], dumped, failures: [...failures.values()] };
}

/** The state `status` shows: from the last result, else from whether the controller still runs. */
export function stateOf(r: Replay, controllerAlive: boolean): MigrationStateName {
  if (r.result) {
    const o = r.result.outcome;
    if (o === "migrated" || o === "rolled-back" || o === "needs-attention") return o;
  }
  return controllerAlive ? "running" : "interrupted";
}
