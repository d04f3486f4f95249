// An agent killed (SIGKILL) in the middle of parking and of restoring, after its first rename and
// before its ledger recorded it. The controller cannot finish the rollback without it (exit 3); once
// the agent is back, `resume` ends migrated and, in a second run, `rollback` puts every tree back.
import { afterEach, describe, expect, it } from "vitest";
import { fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectDataExactlyOnce, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

const CASES = ["park-data", "restore-data"].flatMap((action) => (["resume", "rollback"] as const).map((recovery): [string, "resume" | "rollback"] => [action, recovery]));

describe("an agent killed mid-operation", () => {
  it.each(CASES)("kill-mid:%s, then %s", async (action, recovery) => {
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1", env: { QM_AGENT_FAULT: `kill-mid:${action}` } }, { name: "web2" }],
      symlinkFiles: ["web2"],
      hooks: fakeDrushHooks(),
    }));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(3);
    const id = String(run.events[0]?.migrationId);
    expect(String(run.events.at(-1)?.message)).toMatch(/rollback stopped: undo of .* failed on web1: agent unreachable/);
    await expectDataExactlyOnce(s, id);

    await s.cluster.stopAgent("web1");
    await s.cluster.startAgent("web1", { env: {} });
    const fixed = await runController(s.cluster.controllerConfig, [recovery, id, "--json"]);
    expect(fixed.exitCode, fixed.stdout + fixed.stderr).toBe(0);
    if (recovery === "resume") await expectMigrated(s);
    else await expectUnchanged(s);
  });
});
