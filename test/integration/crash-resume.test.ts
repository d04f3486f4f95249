// The controller killed with SIGKILL at every step boundary and in the middle of every fan-out step:
// `resume` then ends migrated, every host's tree as a clean migration leaves it.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated } from "../helpers/scenario.js";
import { BOUNDARIES, MID_FAN_OUT, crashedScenario } from "./crash.helpers.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

const CASES = [
  ...BOUNDARIES.map((b) => `kill-before:${b}`),
  ...MID_FAN_OUT.map((step) => `kill-after-ack:${step}:web1`),
  // after the last step, before the result: resume only has the lock to release
  "kill-after-ack:finish:hostmaster",
];

describe("resume after the controller was killed", () => {
  it.each(CASES)("%s", async (fault) => {
    const { s, id } = await crashedScenario(fault);
    scenario = s;
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ event: "result", migrationId: id, outcome: "migrated", exitCode: 0 });
    await expectMigrated(s);
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "lock released").toEqual([]);
    const status = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
    expect(JSON.parse(status.stdout)[0]).toMatchObject({ state: "migrated" });
    // finished: neither resume nor rollback may touch it again
    for (const cmd of ["resume", "rollback"]) {
      const again = await runController(s.cluster.controllerConfig, [cmd, id, "--json"]);
      expect(again.exitCode).toBe(2);
      expect(String(again.events.at(-1)?.message)).toContain(`migration ${id} is finished (migrated)`);
      expect(again.events.at(-1)).toMatchObject({ event: "result", migrationId: id, code: "MIGRATION_FINISHED" });
    }
  });
});
