// The examples that end `quick-migrate --help` and each command's help; the tests run every one of them
// through the real parser (test/integration/cli-help.test.ts). Paths are the shipped defaults.
import { EXAMPLE_MIGRATION_ID as ID, type Example } from "../shared/cliUsage.js";

/** Keyed by the command's name: "" is the program itself. */
export const CONTROLLER_EXAMPLES: Readonly<Record<string, readonly Example[]>> = {
  "": [
    { does: "migrate one site to another platform (its current one is found)", run: "quick-migrate migrate shop.example.com --to /var/aegir/platforms/drupal-7.99" },
    { does: "every site of a platform, four at a time", run: "quick-migrate migrate --all --from drupal-7.98 --to drupal-7.99 --concurrency 4" },
    { does: "after exit 3: continue the migration its message names, from its journal", run: `quick-migrate resume ${ID}` },
  ],
  migrate: [
    { does: "migrate one site to another platform (its current one is found)", run: "quick-migrate migrate shop.example.com --to /var/aegir/platforms/drupal-7.99" },
    { does: "check everything and print the plan per host; change nothing", run: "quick-migrate migrate shop.example.com --to drupal-7.99 --dry-run" },
    { does: "every site of a platform, four at a time", run: "quick-migrate migrate --all --from drupal-7.98 --to drupal-7.99 --concurrency 4" },
  ],
  status: [
    { does: "every migration: state, last step, each host's position", run: "quick-migrate status" },
    { does: "one migration, as JSON", run: `quick-migrate status ${ID} --json` },
  ],
  agents: [
    { does: "every front's agent: reachable, versions, free space, certificate expiry", run: "quick-migrate agents" },
    { does: "the same with another config, as JSON", run: "quick-migrate agents --config /etc/quick-migrate/controller.yaml --json" },
  ],
  resume: [
    { does: "find the interrupted migration (state interrupted or needs-attention)", run: "quick-migrate status" },
    { does: "continue it from its journal", run: `quick-migrate resume ${ID}` },
  ],
  rollback: [
    { does: "find the interrupted migration (state interrupted or needs-attention)", run: "quick-migrate status" },
    { does: "undo it from its journal (refused after the point of no return: resume it)", run: `quick-migrate rollback ${ID}` },
  ],
  health: [
    { does: "as Nagios runs it (check_quick_migrate): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", run: "quick-migrate health --config /etc/quick-migrate/controller.yaml --warn-ms 500 --crit-ms 2000" },
    { does: "the same check as one JSON object", run: "quick-migrate health --json" },
  ],
};
