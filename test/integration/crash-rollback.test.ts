// The controller killed with SIGKILL at every step boundary and in the middle of every fan-out step:
// `rollback` then puts every host's tree back exactly as it was — or, past the point of no return,
// refuses and `resume` finishes the migration.
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged } from "../helpers/scenario.js";
import { BOUNDARIES, MID_FAN_OUT, PAST_NO_RETURN, crashedScenario } from "./crash.helpers.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

const CASES: Array<[string, boolean]> = [
  // killed *before* fronts-remove-old nothing has been removed yet: rollback is still possible
  ...BOUNDARIES.map((b): [string, boolean] => [`kill-before:${b}`, b !== "fronts-remove-old" && PAST_NO_RETURN.has(b)]),
  ...MID_FAN_OUT.map((step): [string, boolean] => [`kill-after-ack:${step}:web1`, PAST_NO_RETURN.has(step)]),
  ["kill-after-ack:finish:hostmaster", true],
];

describe("rollback after the controller was killed", () => {
  it.each(CASES)("%s", async (fault, pastNoReturn) => {
    const { s, id } = await crashedScenario(fault);
    scenario = s;
    const run = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    if (pastNoReturn) {
      expect(run.exitCode, run.stdout + run.stderr).toBe(2);
      expect(String(run.events.at(-1)?.message)).toContain("past the point of no return");
      const resume = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
      expect(resume.exitCode, resume.stdout + resume.stderr).toBe(0);
      await expectMigrated(s);
      return;
    }
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ event: "result", migrationId: id, outcome: "rolled-back", exitCode: 0 });
    // it undid exactly the steps that ran whose plan entry has an undo, latest first
    const plan = run.events[0] as unknown as { steps: Array<{ name: string; hosts: string[]; undo: string | null }> };
    const [, point, step] = /^kill-(before|after-ack):([a-z-]+)/.exec(fault) ?? [];
    const ran = plan.steps.slice(0, plan.steps.findIndex((st) => st.name === step) + (point === "before" ? 0 : 1));
    const undone = run.events.filter((e) => e.event === "step-start" && e.undo).map((e) => e.step);
    expect(undone).toEqual(ran.filter((st) => st.undo !== null && st.hosts.length > 0).map((st) => st.name).reverse());
    await expectUnchanged(s);
    const status = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
    expect(JSON.parse(status.stdout)[0]).toMatchObject({ state: "rolled-back" });
    // and the site can be migrated again from scratch
    const again = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectMigrated(s);
  });
});
