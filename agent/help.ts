// The examples that end `quick-migrate-agent --help` and each command's help; the tests run every one of
// them through the real parser (test/integration/cli-help.test.ts). Paths are the shipped defaults.
import { EXAMPLE_MIGRATION_ID as ID, type Example } from "../shared/cliUsage.js";

/** Keyed by the command's path below the program: "" is the program itself (the service). */
export const AGENT_EXAMPLES: Readonly<Record<string, readonly Example[]>> = {
  "": [
    { does: "run the service, as its systemd unit does (as the aegir user)", run: "quick-migrate-agent --config /etc/quick-migrate/agent.yaml" },
    { does: "data dirs this front's records say are not back in their old site folder", run: "quick-migrate-agent parked list" },
    { does: "check the running agent, as NRPE runs it", run: "sudo -u aegir quick-migrate-agent health" },
  ],
  parked: [
    { does: "what is parked here, per migration and data dir", run: "quick-migrate-agent parked list" },
    { does: "put one migration's data dirs back (the hostmaster's journal is lost)", run: `sudo -u aegir quick-migrate-agent parked restore ${ID}` },
  ],
  "parked list": [
    { does: "what is parked here, per migration and data dir", run: "quick-migrate-agent parked list" },
    { does: "the same as one JSON array, with another config", run: "quick-migrate-agent parked list --json --config /etc/quick-migrate/agent.yaml" },
  ],
  "parked restore": [
    { does: "find the migration's id", run: "quick-migrate-agent parked list" },
    { does: "put its data dirs back in the old site folder, as the agent's user", run: `sudo -u aegir quick-migrate-agent parked restore ${ID}` },
  ],
  health: [
    { does: "as NRPE runs it (check_quick_migrate_agent): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", run: "sudo -u aegir quick-migrate-agent health --warn-ms 500 --crit-ms 2000" },
    { does: "the same check as one JSON object", run: "quick-migrate-agent health --json" },
  ],
};
