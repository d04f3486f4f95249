// Fault injection for tests, off unless QM_AGENT_FAULT sets it: main reads the variable once and passes
// the compiled hooks down, so nothing below it reads the environment.
import { setTimeout as sleep } from "node:timers/promises";
import { QmError } from "../shared/errors.js";
import { RENAMING_ACTIONS } from "../shared/wire.js";

export const FAULT_ENV = "QM_AGENT_FAULT";

/** The actions a fault can interrupt: those that rename data dirs. */
export const FAULT_ACTIONS = RENAMING_ACTIONS;
export type FaultAction = (typeof FAULT_ACTIONS)[number];

export interface AgentFaults {
  /** Runs after a data dir's rename is on disk and before the ledger records it. */
  afterRename(action: string, migrationId: string, dataDir: string): void | Promise<void>;
}

export const NO_FAULTS: AgentFaults = Object.freeze({ afterRename: () => undefined });

/**
 * `kill-mid:<action>`: the agent SIGKILLs itself in the middle of that action, after its first data
 * dir's rename and before the ledger records it (the entry keeps `moving`). `pause-mid:<action>:<ms>`:
 * it waits `ms` there instead, after each data dir's rename (an operation held open mid-rename, for
 * the graceful-stop tests). `bug-mid:<action>`: it throws there what a bug would (a TypeError, no code
 * of the catalogue), for the tests of how an internal error is reported. Unset or empty: no faults.
 * Anything else is refused, so that a typo does not make a fault test pass without its fault.
 */
export function parseFaults(value: string | undefined, onFire: (fault: string, fields: object) => void = () => undefined): AgentFaults {
  if (value === undefined || value === "") return NO_FAULTS;
  const match = /^(kill|pause|bug)-mid:([a-z-]+)(?::(\d{1,7}))?$/.exec(value);
  const [, kind, action, ms] = match ?? [];
  if (action === undefined || !(FAULT_ACTIONS as readonly string[]).includes(action) || (kind === "pause") !== (ms !== undefined)) {
    throw new QmError(
      "CONFIG_INVALID",
      `${FAULT_ENV}=${value}: expected kill-mid:<action>, bug-mid:<action> or pause-mid:<action>:<ms> with action one of ${FAULT_ACTIONS.join(", ")}`,
      { key: FAULT_ENV },
    );
  }
  return Object.freeze({
    async afterRename(current: string, migrationId: string, dataDir: string): Promise<void> {
      if (current !== action) return;
      onFire(value, { migrationId, action: current, dataDir });
      if (kind === "kill") {
        process.kill(process.pid, "SIGKILL");
        return;
      }
      if (kind === "bug") throw new TypeError(`injected bug (${FAULT_ENV}=${value}): cannot read properties of undefined`);
      await sleep(Number(ms));
    },
  });
}
