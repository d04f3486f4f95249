// Shared by the crash tests: a migration killed (SIGKILL) at a chosen point, then recovered.
import fs from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import { STEP_NAMES } from "../../controller/steps.js";
import { fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectDataExactlyOnce, setupScenario } from "../helpers/scenario.js";

/** every boundary after the journal exists (a kill before the lock step leaves nothing to recover) */
export const BOUNDARIES = STEP_NAMES.slice(2);

/** fan-out steps, killed after web1 acknowledged and before the step ended */
export const MID_FAN_OUT = ["fronts-park-data", "push-site", "fronts-restore-data", "fronts-remove-old"] as const;

export const PAST_NO_RETURN = new Set(["fronts-remove-old", "maintenance-off", "finish"]);

export async function crashedScenario(fault: string): Promise<{ s: Scenario; id: string }> {
  const s = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() });
  const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAULT: fault } });
  expect(run.exitCode, `the controller should have been killed (${fault}):\n${run.stdout}${run.stderr}`).toBe(-1);
  const id = String(run.events[0]?.migrationId);
  expect(fs.existsSync(path.join(s.cluster.masterState, "migrations", id, "plan.json"))).toBe(true);

  // what status says of it: interrupted, not running, and the lock still held
  const status = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
  expect(status.exitCode, status.stderr).toBe(0);
  const [entry] = JSON.parse(status.stdout) as Array<{ state: string; id: string }>;
  expect(entry).toMatchObject({ id, state: "interrupted" });
  await expectDataExactlyOnce(s, id);

  // a new migration of the site is refused while this one is unfinished, naming it and its state
  // (killed after finish released the lock, it is refused all the same: the site has moved)
  const again = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
  if (fault === "kill-after-ack:finish:hostmaster") {
    expect(again.exitCode).toBe(2);
  } else {
    expect(again.exitCode).toBe(4);
    expect(String(again.events.at(-1)?.message)).toContain(`migration ${id} (interrupted)`);
  }
  return { s, id };
}
