// An agent at its maxConcurrentOps refuses a call with BUSY before it does anything: the call is made
// again after a short pause that grows, for as long as the call's own deadline allows. One policy for
// every agent call: AgentConnection's unary calls and RsyncTunnel's streams use it, nothing above them.
import { setTimeout as sleepFor } from "node:timers/promises";
import { QmError } from "../shared/errors.js";

export const BUSY_FIRST_DELAY_MS = 50;
export const BUSY_MAX_DELAY_MS = 1000;

export interface BusyWait {
  /** epoch ms: no attempt starts after it (the call's deadline); a function when it is known only once the call is first sent */
  readonly deadline: number | (() => number);
  /** ends the wait (not an attempt in flight): the signal's reason is thrown */
  readonly signal?: AbortSignal;
  /** each refusal, before its pause */
  readonly onBusy?: (err: QmError, attempt: number, delayMs: number) => void;
  readonly now?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
}

export function isBusy(err: unknown): err is QmError {
  return err instanceof QmError && err.code === "BUSY";
}

/**
 * The pause after the `attempt`th refusal (1-based): doubling from BUSY_FIRST_DELAY_MS up to
 * BUSY_MAX_DELAY_MS, and a random part of up to half of it, so that the callers one agent turned away
 * together do not all come back at the same instant. Pure.
 */
export function busyDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(BUSY_MAX_DELAY_MS, BUSY_FIRST_DELAY_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (1 + random() / 2));
}

/** Runs `attempt` until the agent takes it; BUSY once the next attempt would start past the deadline. */
export async function retryWhileBusy<T>(attempt: () => Promise<T>, wait: BusyWait): Promise<T> {
  const now = wait.now ?? Date.now;
  const sleep = wait.sleep ?? ((ms: number, signal?: AbortSignal) => sleepFor(ms, undefined, signal ? { signal } : {}));
  const started = now();
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!isBusy(err)) throw err;
      const delay = busyDelay(n, wait.random);
      if (now() + delay >= (typeof wait.deadline === "number" ? wait.deadline : wait.deadline())) {
        const waited = ((now() - started) / 1000).toFixed(1);
        throw new QmError("BUSY", `${err.message}; still busy after ${n} attempts in ${waited} s (the call's deadline)`, err.context, { cause: err });
      }
      wait.onBusy?.(err, n, delay);
      if (wait.signal?.aborted) throw wait.signal.reason;
      try {
        await sleep(delay, wait.signal);
      } catch (e) {
        throw wait.signal?.aborted ? wait.signal.reason : e;
      }
    }
  }
}
