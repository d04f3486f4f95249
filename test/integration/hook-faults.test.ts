// Each hook failing in turn, and a front going away during the rollback. After each case a first run
// ends with `resume` → migrated, a second run from the same point with `rollback` → every tree as before.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerRun, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { auditLines } from "../helpers/auditLog.js";
import { eventually } from "../helpers/eventually.js";
import { type Scenario, expectDataExactlyOnce, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** fake drush hooks, deploy naming its platform so that the deploy of the rollback (old platform) differs */
function hooks(): Record<string, string[]> {
  const h = fakeDrushHooks();
  return { ...h, deploy: [...(h.deploy ?? []), "--platform={to}"] };
}

async function failingRun(env: Record<string, string>, setup?: (s: Scenario) => Record<string, string>): Promise<{ s: Scenario; id: string; run: ControllerRun }> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: hooks() }));
  const extra = setup?.(s) ?? {};
  const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { ...env, ...extra } });
  const id = String(run.events[0]?.migrationId);
  return { s, id, run };
}

describe("a failing hook", () => {
  // before the point of no return: rolled back at once (exit 1); resume then migrates it afresh,
  // a second run's explicit rollback has nothing left to do but is not refused
  it.each([
    ["maintenanceOn", "1"],
    ["dbDump", "sql-dump"],
    ["deploy", "--platform=drupal-7.99"],
    ["updatedb", "updatedb"],
  ])("%s: rolled back automatically", async (_hook, failOn) => {
    const { s, run } = await failingRun({ QM_FAKE_DRUSH_FAIL: failOn });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    await expectUnchanged(s);
    const status = await runController(s.cluster.controllerConfig, ["status", "--json"]);
    expect(JSON.parse(status.stdout)).toMatchObject([{ state: "rolled-back" }]);
  });

  it("maintenanceOff (after the point of no return): retried, exit 3; resume finishes once the hook works", async () => {
    const { s, id, run } = await failingRun({ QM_FAKE_DRUSH_FAIL: "0" });
    expect(run.exitCode, run.stdout + run.stderr).toBe(3);
    expect(run.events.filter((e) => e.event === "ack" && e.step === "maintenance-off")).toHaveLength(3);
    expect(String(run.events.at(-1)?.message)).toContain(`quick-migrate resume ${id}`);
    const rollback = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(rollback.exitCode).toBe(2);
    const resume = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(resume.exitCode, resume.stdout + resume.stderr).toBe(0);
    await expectMigrated(s);
  });

  for (const recovery of ["resume", "rollback"] as const) {
    it(`dbRestore failing during the rollback after updatedb failed: exit 3, then ${recovery}`, async () => {
      const { s, id, run } = await failingRun({ QM_FAKE_DRUSH_FAIL: "updatedb", QM_FAKE_DRUSH_FAIL_ALSO: "sql-query" });
      expect(run.exitCode, run.stdout + run.stderr).toBe(3);
      expect(String(run.events.at(-1)?.message)).toContain("undo of master-move-site failed on hostmaster");
      await expectDataExactlyOnce(s, id);
      const status = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
      expect(JSON.parse(status.stdout)[0]).toMatchObject({ state: "needs-attention", lastStep: "undo master-move-site" });
      const fixed = await runController(s.cluster.controllerConfig, [recovery, id, "--json"]);
      expect(fixed.exitCode, fixed.stdout + fixed.stderr).toBe(0);
      if (recovery === "resume") await expectMigrated(s);
      else await expectUnchanged(s);
    });

    it(`a front unreachable during the rollback: exit 3, the front comes back, then ${recovery}`, async () => {
      const { s, id, run } = await failingRun({ QM_FAKE_DRUSH_FAIL: "updatedb" }, (sc) => ({
        QM_FAKE_DRUSH_KILL_PID: String(sc.cluster.front("web2").process?.pid),
      }));
      expect(run.exitCode, run.stdout + run.stderr).toBe(3);
      expect(String(run.events.at(-1)?.message)).toMatch(/undo of fronts-park-data failed on web2: agent unreachable/);
      await s.cluster.stopAgent("web2"); // reaps the killed process
      await s.cluster.startAgent("web2");
      const fixed = await runController(s.cluster.controllerConfig, [recovery, id, "--json"]);
      expect(fixed.exitCode, fixed.stdout + fixed.stderr).toBe(0);
      if (recovery === "resume") await expectMigrated(s);
      else await expectUnchanged(s);
    });
  }
});

describe("the controller killed during its own rollback", () => {
  for (const recovery of ["resume", "rollback"] as const) {
    it(`after updatedb failed, killed while undoing fronts-park-data (web1 done), then ${recovery}`, async () => {
      const { s, id, run } = await failingRun({ QM_FAKE_DRUSH_FAIL: "updatedb", QM_FAULT: "kill-after-ack:undo:fronts-park-data:web1" });
      expect(run.exitCode, run.stdout + run.stderr).toBe(-1);
      // web2's undo went out with web1's: its agent finishes it after the controller is gone, and its
      // trees are read once it has (a request that never reached it leaves no line: then nothing moves)
      const web2Log = s.cluster.front("web2").logFile;
      await eventually("web2's unpark-data to end", () => auditLines(web2Log).some((l) => l.migrationId === id && l.action === "unpark-data"), (done) => done, 5000).catch(() => undefined);
      await expectDataExactlyOnce(s, id);
      const status = await runController(s.cluster.controllerConfig, ["status", id]);
      expect(status.stdout).toContain(`${id}  interrupted`);
      expect(status.stdout).toMatch(/web1 +undo fronts-park-data ok/);
      const fixed = await runController(s.cluster.controllerConfig, [recovery, id, "--json"]);
      expect(fixed.exitCode, fixed.stdout + fixed.stderr).toBe(0);
      if (recovery === "resume") await expectMigrated(s);
      else await expectUnchanged(s);
    });
  }
});

describe("resume and rollback refuse bad input, changing nothing", () => {
  it("an unknown id, an invalid id, and a journal that does not parse", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
    for (const cmd of ["resume", "rollback"]) {
      const unknown = await runController(s.cluster.controllerConfig, [cmd, "20260101T000000Z-000000", "--json"]);
      expect(unknown.exitCode).toBe(2);
      expect(String(unknown.events.at(-1)?.message)).toContain("no migration 20260101T000000Z-000000");
      const invalid = await runController(s.cluster.controllerConfig, [cmd, "../../etc", "--json"]);
      expect(invalid.exitCode).toBe(2);
      expect(String(invalid.events.at(-1)?.message)).toContain("invalid migration id");
    }
    const dir = path.join(s.cluster.masterState, "migrations", "20260101T000000Z-badbad");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "plan.json"), "{ not json");
    for (const cmd of ["resume", "rollback"]) {
      const run = await runController(s.cluster.controllerConfig, [cmd, "20260101T000000Z-badbad", "--json"]);
      expect(run.exitCode).toBe(2);
      expect(String(run.events.at(-1)?.message)).toMatch(/journal .* does not parse: plan.json is not JSON/);
    }
    const status = await runController(s.cluster.controllerConfig, ["status", "--json"]);
    expect(JSON.parse(status.stdout)).toMatchObject([{ id: "20260101T000000Z-badbad", state: "needs-attention" }]);
    await expectUnchanged(s);
  });
});
