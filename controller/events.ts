// The events a run emits: printed (JSON lines with --json, or human lines) and journaled — all but
// progress, which says how the step in flight is going and is gone once it ends.
import type { ErrorCode } from "../shared/errors.js";
import type { Move } from "./steps.js";

/** The hostmaster's name as a host of every step, in events, journals and acknowledgements. */
export const MASTER = "hostmaster";

export const OUTCOMES = {
  migrated: 0,
  "dry-run": 0,
  "rolled-back": 1,
  refused: 2,
  "needs-attention": 3,
  locked: 4,
} as const;
export type Outcome = keyof typeof OUTCOMES;

export type RunEvent =
  | {
      event: "plan";
      migrationId: string;
      site: string;
      newSite: string;
      from: string;
      to: string;
      dryRun: boolean;
      fetchFrom: string;
      steps: Array<{ name: string; hosts: readonly string[]; does: string; undo: string | null; skipped?: string; moves: readonly Move[] }>;
    }
  | { event: "step-start"; migrationId: string; step: string; undo?: true }
  | { event: "ack"; migrationId: string; step: string; host: string; ok: boolean; detail: string; code?: ErrorCode; undo?: true }
  | {
      event: "step-end";
      migrationId: string;
      step: string;
      ok: boolean;
      acked: number;
      expected: number;
      skipped?: string;
      durationMs: number;
      undo?: true;
    }
  /** resume and rollback, before they act: a hook the killed controller started was still running, and was ended */
  | { event: "orphaned-hook"; migrationId: string; step: string; hook: string; pgid: number; endedBy: "SIGTERM" | "SIGKILL"; undo?: true }
  | { event: "result"; migrationId: string | null; outcome: Outcome; exitCode: number; message: string; code?: ErrorCode; durationMs: number; journal?: string }
  | ProgressEvent;

/** The events that are journaled: every one but progress. */
export type JournaledEvent = Exclude<RunEvent, ProgressEvent>;

/**
 * Printed, never journaled: the step in flight, at most once a second, from a second after its start
 * until its end. Bytes (both ways, through the rsync tunnel) only on the rsync steps, once the host's
 * rsync has started; the rate over the last few seconds, only while the host is running.
 */
export interface ProgressEvent {
  event: "progress";
  migrationId: string;
  step: string;
  elapsedMs: number;
  hosts: HostProgress[];
  undo?: true;
}

export interface HostProgress {
  host: string;
  state: "running" | "ok" | "failed";
  bytesSent?: number;
  bytesReceived?: number;
  bytesPerSecond?: number;
}

/** Journal-only: written before a host's change is attempted. */
export interface IntentEvent {
  event: "intent";
  migrationId: string;
  step: string;
  host: string;
  action: string;
  undo?: true;
}

export interface Reporter {
  event(e: RunEvent): void;
}

/**
 * Journal-only: a hook's process group while it runs, and once it is gone (the hook ended, or resume
 * or rollback ended what a killed controller left running: `endedBy`; or found it gone: "gone").
 */
export type HookGroupEvent =
  | {
      event: "hook-started";
      migrationId: string;
      step: string;
      hook: string;
      pgid: number;
      startTime: string;
      /** its output file, relative to the journal folder (hooks/03-updatedb.log); absent in older journals and when no journal was open */
      output?: string;
      undo?: true;
    }
  | { event: "hook-ended"; migrationId: string; step: string; hook: string; pgid: number; ok?: boolean; endedBy?: "SIGTERM" | "SIGKILL" | "gone"; undo?: true };
