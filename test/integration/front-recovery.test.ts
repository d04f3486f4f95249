// Front-side recovery and the hostmaster agree. A migration killed at a step; on each front the
// operator runs `quick-migrate-agent parked restore` (the service running) before or after the
// hostmaster's `resume`/`rollback`. Every combination ends in one consistent state: every tree as
// before (or fully migrated past the point of no return), the data in one place, no lock held.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ClusterFront, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged } from "../helpers/scenario.js";
import { crashedScenario } from "./crash.helpers.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** `parked restore` as the front's operator would run it: as the agent's user, the service running. */
function parkedRestore(f: ClusterFront, id: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runAgentCommand(f, ["parked", "restore", id]);
}

async function restoreOnEveryFront(s: Scenario, id: string): Promise<void> {
  for (const f of s.cluster.fronts) {
    const r = await parkedRestore(f, id);
    expect(r.exitCode, `${f.name}: ${r.stdout}${r.stderr}`).toBe(0);
  }
}

function expectNoLock(s: Scenario): void {
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no lock left held").toEqual([]);
}

const BEFORE_NO_RETURN = [
  "kill-after-ack:fronts-park-data:web1",
  "kill-before:push-site",
  "kill-after-ack:push-site:web1",
  "kill-after-ack:fronts-restore-data:web1",
  "kill-before:fronts-remove-old",
];

describe("parked restore on the fronts, then the hostmaster", () => {
  it.each(BEFORE_NO_RETURN)("%s; parked restore on every front; rollback: exit 0, every tree as before", async (fault) => {
    const { s, id } = await crashedScenario(fault);
    scenario = s;
    await restoreOnEveryFront(s, id);
    const run = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it.each(["kill-after-ack:fronts-park-data:web1", "kill-before:push-site", "kill-after-ack:fronts-restore-data:web1", "kill-before:fronts-remove-old"])(
    "%s; parked restore on every front; resume rolls back instead (exit 1), every tree as before",
    async (fault) => {
      const { s, id } = await crashedScenario(fault);
      scenario = s;
      await restoreOnEveryFront(s, id);
      const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
      expect(run.exitCode, run.stdout + run.stderr).toBe(1);
      const result = run.events.at(-1) as { outcome: string; message: string; code: string };
      expect(result.outcome).toBe("rolled-back");
      expect(result.message).toMatch(/web1's data was put back in the old site folder by `quick-migrate-agent parked restore`/);
      expect(result.code).toBe("RESTORED_ON_FRONT");
      // nothing went forward: no step but the undos ran
      expect(run.events.filter((e) => e.event === "step-start" && !e.undo)).toEqual([]);
      await expectUnchanged(s);
      expectNoLock(s);
      // and a new migration of the site goes through
      const again = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
      expect(again.exitCode, again.stdout + again.stderr).toBe(0);
      await expectMigrated(s);
    },
  );

  it("parked restore on one front only (web1): resume rolls back every front, web2's data included", async () => {
    const { s, id } = await crashedScenario("kill-before:push-site");
    scenario = s;
    const r = await parkedRestore(s.cluster.front("web1"), id);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    await expectUnchanged(s);
    expectNoLock(s);
  });
});

describe("the hostmaster first, then parked restore on the fronts", () => {
  it("rolled back, then parked restore: nothing to do, every tree as before", async () => {
    const { s, id } = await crashedScenario("kill-after-ack:fronts-restore-data:web1");
    scenario = s;
    const run = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await restoreOnEveryFront(s, id);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("resumed to the end, then parked restore: refused past the point of no return, the site stays migrated", async () => {
    const { s, id } = await crashedScenario("kill-before:fronts-restore-data");
    scenario = s;
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    for (const f of s.cluster.fronts) {
      const r = await parkedRestore(f, id);
      expect(r.exitCode, `${f.name}: ${r.stdout}${r.stderr}`).not.toBe(0);
      expect(r.stderr).toContain("past the point of no return");
    }
    await expectMigrated(s);
    expectNoLock(s);
  });
});

describe("past the point of no return", () => {
  it("killed after web1 removed its old site folder: parked restore refuses there, resume finishes", async () => {
    const { s, id } = await crashedScenario("kill-after-ack:fronts-remove-old:web1");
    scenario = s;
    const r = await parkedRestore(s.cluster.front("web1"), id);
    expect(r.exitCode, r.stdout + r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/past the point of no return on this front .*`quick-migrate resume/);
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    expectNoLock(s);
  });
});
