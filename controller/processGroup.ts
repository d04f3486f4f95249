// A hook's process group on the hostmaster: each hook runs as the leader of its own group, so that
// ending it ends whatever it started too (drush → php → mysql). Read from /proc (Linux, as Aegir).
import { readFileSync, readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { QmError } from "../shared/errors.js";
import { processStartTime } from "../shared/processes.js";

/** How long a group has between SIGTERM and SIGKILL. */
export const KILL_GRACE_MS = 10_000;
/** How long SIGKILL may take (a process in uninterruptible sleep) before the group counts as unkillable. */
const KILL_WAIT_MS = 5_000;
const POLL_MS = 50;

/** A hook's process group as the journal records it: the leader's pid (= the group id) and its start time. */
export interface HookGroup {
  readonly pgid: number;
  /** the leader's start time (/proc/<pid>/stat field 22), so that a reused pid is not taken for it */
  readonly startTime: string;
}

export type EndedBy = "SIGTERM" | "SIGKILL";

/** The edge the runner ends a killed controller's hooks through (a fake in unit tests). */
export interface ProcessGroupsLike {
  /** whether the group still has a live process and is the one the journal names */
  running(g: HookGroup): boolean;
  /** SIGTERM to the whole group, SIGKILL after the grace; resolves once no process of it is left */
  end(g: HookGroup, graceMs?: number): Promise<EndedBy>;
}

/** The live processes (zombies left out: they run nothing) of a process group. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    // no /proc: the kernel still answers whether the group exists (zombies included)
    return signalGroup(pgid, 0) ? [pgid] : [];
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // after the command name's closing ")": state, ppid, pgrp, …
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") members.push(Number(name));
  }
  return members;
}

/** Sends a signal to every process of the group; false when there is none. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  if (!(pgid > 1)) throw new QmError("INTERNAL", `not a process group: ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ESRCH") return false;
    throw new QmError("HOOK_FAILED", `process group ${pgid} cannot be signalled: ${code ?? String(err)}`, {}, { cause: err });
  }
}

async function gone(pgid: number, withinMs: number): Promise<boolean> {
  const until = Date.now() + withinMs;
  for (;;) {
    if (groupMembers(pgid).length === 0) return true;
    if (Date.now() >= until) return false;
    await sleep(POLL_MS);
  }
}

/**
 * Ends every process of a group: SIGTERM, then SIGKILL if any is left after the grace. Resolves with the
 * signal that ended it; throws HOOK_FAILED when it cannot be signalled or outlives SIGKILL.
 */
export async function endGroup(pgid: number, graceMs = KILL_GRACE_MS): Promise<EndedBy> {
  signalGroup(pgid, "SIGTERM");
  if (await gone(pgid, graceMs)) return "SIGTERM";
  signalGroup(pgid, "SIGKILL");
  if (await gone(pgid, KILL_WAIT_MS)) return "SIGKILL";
  throw new QmError("HOOK_FAILED", `process group ${pgid} is still there ${KILL_WAIT_MS / 1000} s after SIGKILL (pids ${groupMembers(pgid).join(", ")})`);
}

/**
 * Whether a journaled group is still there. The leader's pid, if a process has it, must have the
 * journaled start time (else the pid was reused and the group is someone else's). A group whose
 * leader is gone while others of it live is still the hook's: Linux does not give a new process a pid
 * that still names a process group.
 */
export function isRunning(g: HookGroup): boolean {
  const leader = processStartTime(g.pgid);
  if (leader !== undefined && leader !== g.startTime) return false;
  return groupMembers(g.pgid).length > 0;
}

export const processGroups: ProcessGroupsLike = {
  running: isRunning,
  end: (g, graceMs) => endGroup(g.pgid, graceMs),
};
