// Fault injection for tests, off unless QM_AGENT_FAULT sets it: main reads the variable once and passes
// the compiled hooks down, so nothing below it reads the environment.
import { QmError } from "../shared/errors.js";

export const FAULT_ENV = "QM_AGENT_FAULT";

/** The actions a fault can interrupt: those that rename data dirs. */
export const FAULT_ACTIONS = ["park-data", "unpark-data", "restore-data", "unrestore-data"] as const;
export type FaultAction = (typeof FAULT_ACTIONS)[number];

export interface AgentFaults {
  /** Runs after a data dir's rename is on disk and before the ledger records it. */
  afterRename(action: string, migrationId: string, dataDir: string): void;
}

export const NO_FAULTS: AgentFaults = Object.freeze({ afterRename: () => undefined });

/**
 * `kill-mid:<action>`: the agent SIGKILLs itself in the middle of that action, after its first data
 * dir's rename and before the ledger records it (the entry keeps `moving`). Unset or empty: no faults.
 * Anything else is refused, so that a typo does not make a fault test pass without its fault.
 */
export function parseFaults(value: string | undefined, onFire: (fault: string, fields: object) => void = () => undefined): AgentFaults {
  if (value === undefined || value === "") return NO_FAULTS;
  const match = /^kill-mid:(.+)$/.exec(value);
  const action = match?.[1];
  if (action === undefined || !(FAULT_ACTIONS as readonly string[]).includes(action)) {
    throw new QmError(
      "CONFIG_INVALID",
      `${FAULT_ENV}=${value}: expected kill-mid:<action> with action one of ${FAULT_ACTIONS.join(", ")}`,
      { key: FAULT_ENV },
    );
  }
  return Object.freeze({
    afterRename(current: string, migrationId: string, dataDir: string): void {
      if (current !== action) return;
      onFire(value, { migrationId, action: current, dataDir });
      process.kill(process.pid, "SIGKILL");
    },
  });
}
