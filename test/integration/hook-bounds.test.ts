// Hooks are bounded and never outlive their migration, with real processes: a hook that hangs ends at
// timeouts.hook; a run cancelled (SIGTERM) during a hook still runs the undo hooks of its rollback; a
// hook that kills its controller is found still running by resume/rollback, which end its process
// group, say so, and only then act. Every case ends with every tree as expected and no lock held.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerEvent, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";
import { running } from "../helpers/processes.js";

let scenario: Scenario | undefined;
/** process groups of the hanging hooks: a failed test must not leave them running */
const hanging: number[] = [];
afterEach(async () => {
  for (const pgid of hanging.splice(0)) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone, as it should be
    }
  }
  await scenario?.cleanup();
  scenario = undefined;
});


interface HangingHook {
  /** the hook's own process: the leader of its group */
  readonly hook: number;
  /** a process it started, in its group */
  readonly child: number;
  readonly controller: number;
}

async function setup(): Promise<{ s: Scenario; drushLog: string; pidsFile: string; env: Record<string, string> }> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }));
  const drushLog = path.join(s.baseDir, "drush.jsonl");
  const pidsFile = path.join(s.baseDir, "hanging-hook.json");
  return { s, drushLog, pidsFile, env: { QM_FAKE_DRUSH_LOG: drushLog, QM_FAKE_DRUSH_PIDS: pidsFile } };
}

/** The fake drush calls, in order: the drush command of each ("sql-dump", "vset maintenance_mode 0", …). */
function drushCalls(log: string): string[] {
  if (!fs.existsSync(log)) return [];
  return fs
    .readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { argv: string[] }).argv.slice(1).filter((a) => !a.startsWith("--") && a !== "-y").join(" "));
}

async function hangingHook(file: string, withinMs = 60_000): Promise<HangingHook> {
  const until = Date.now() + withinMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > until) throw new Error(`${file}: the hook never started`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const hook = JSON.parse(fs.readFileSync(file, "utf8")) as HangingHook;
  hanging.push(hook.hook);
  return hook;
}

function expectNoLock(s: Scenario): void {
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no lock held").toEqual([]);
}

const stepEnd = (events: ControllerEvent[], step: string, undo = false) => events.find((e) => e.event === "step-end" && e.step === step && (e.undo === true) === undo);

describe("a hook that outlives timeouts.hook", () => {
  it("dbDump hanging: its whole process group is ended at the timeout, the step fails and the run rolls back", async () => {
    const { s, drushLog, pidsFile, env } = await setup();
    s.cluster.writeControllerConfig({ extra: { timeouts: { hook: 2 } } });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { ...env, QM_FAKE_DRUSH_HANG: "sql-dump" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    const ack = run.events.find((e) => e.event === "ack" && e.step === "db-dump");
    expect(ack).toMatchObject({ ok: false, code: "HOOK_FAILED", detail: expect.stringContaining("hook dbDump") });
    expect(String(ack?.detail)).toContain("timed out after 2 s");
    // bounded: the step took the timeout, and not much more (SIGTERM ends the fake drush at once)
    const took = Number(stepEnd(run.events, "db-dump")?.durationMs);
    expect(took).toBeGreaterThanOrEqual(2000);
    expect(took).toBeLessThan(6000);
    expect(run.durationMs).toBeLessThan(30_000);
    const hook = await hangingHook(pidsFile);
    expect(running(hook.hook), "the hook").toBe(false);
    expect(running(hook.child), "what the hook started").toBe(false);
    // the rollback's undo hook ran
    expect(drushCalls(drushLog)).toEqual(["vset maintenance_mode 1", "sql-dump", "vset maintenance_mode 0"]);
    await expectUnchanged(s);
    expectNoLock(s);
  });
});

describe("a run cancelled during a hook", () => {
  it("SIGTERM while updatedb runs: the hook is ended and the rollback still runs its undo hooks (dbRestore, deploy, maintenanceOff)", async () => {
    const { s, drushLog, pidsFile, env } = await setup();
    const cancel = new AbortController();
    const running_ = runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      env: { ...env, QM_FAKE_DRUSH_HANG: "updatedb" },
      signal: cancel.signal,
    });
    const hook = await hangingHook(pidsFile);
    cancel.abort(); // runController: SIGTERM to the controller
    const run = await running_;
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(String(run.events.at(-1)?.message)).toMatch(/^master-move-site failed on hostmaster: hook updatedb .* failed: cancelled \(interrupted by SIGTERM\); rolled back/);
    expect(running(hook.hook)).toBe(false);
    expect(running(hook.child)).toBe(false);
    expect(stepEnd(run.events, "maintenance-on", true)).toMatchObject({ ok: true });
    expect(drushCalls(drushLog)).toEqual([
      "vset maintenance_mode 1",
      "sql-dump",
      "provision-verify",
      "updatedb",
      // the rollback's
      "sql-query",
      "provision-verify",
      "vset maintenance_mode 0",
    ]);
    await expectUnchanged(s);
    expectNoLock(s);
  });
});

describe("a hook that kills its controller", () => {
  for (const recovery of ["resume", "rollback"] as const) {
    it(`updatedb SIGKILLs the controller and runs on: ${recovery} ends its process group, says so, and only then acts`, async () => {
      const { s, drushLog, pidsFile, env } = await setup();
      const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
        env: { ...env, QM_FAKE_DRUSH_HANG: "updatedb", QM_FAKE_DRUSH_KILL_PARENT: "1" },
      });
      expect(run.exitCode, run.stdout + run.stderr).toBe(-1);
      const id = String(run.events[0]?.migrationId);
      const hook = await hangingHook(pidsFile);
      expect(running(hook.controller), "the controller").toBe(false);
      expect(running(hook.hook), "the orphaned hook").toBe(true);
      expect(running(hook.child), "what it started").toBe(true);
      const status = await runController(s.cluster.controllerConfig, ["status", id]);
      expect(status.stdout).toContain(`${id}  interrupted`);

      const callsBefore = drushCalls(drushLog).length;
      // resume as JSON lines, rollback as a human reads it
      const json = recovery === "resume";
      const fixed = await runController(s.cluster.controllerConfig, [recovery, id, ...(json ? ["--json"] : [])], { env });
      expect(fixed.exitCode, fixed.stdout + fixed.stderr).toBe(0);
      expect(running(hook.hook), "the orphaned hook").toBe(false);
      expect(running(hook.child), "what it started").toBe(false);
      if (json) {
        const said = fixed.events.findIndex((e) => e.event === "orphaned-hook");
        expect(fixed.events[said]).toEqual({ event: "orphaned-hook", migrationId: id, step: "master-move-site", hook: "updatedb", pgid: hook.hook, endedBy: "SIGTERM" });
        expect(said, "before any step").toBeLessThan(fixed.events.findIndex((e) => e.event === "step-start"));
      } else {
        const said = fixed.stdout.indexOf(`hook updatedb of the interrupted run (master-move-site) was still running as process group ${hook.hook}: ended by SIGTERM`);
        expect(said, fixed.stdout).toBeGreaterThan(0);
        expect(said, "before any step").toBeLessThan(fixed.stdout.indexOf("undo "));
      }
      // only then: the hooks of the recovery ran
      const after = drushCalls(drushLog).slice(callsBefore);
      if (recovery === "resume") {
        expect(after).toEqual(["provision-verify", "updatedb", "vset maintenance_mode 0"]);
        await expectMigrated(s);
      } else {
        expect(after).toEqual(["sql-query", "provision-verify", "vset maintenance_mode 0"]);
        await expectUnchanged(s);
      }
      expectNoLock(s);
      // said once: a second look finds nothing to end
      const again = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
      expect(JSON.parse(again.stdout)[0]).toMatchObject({ state: recovery === "resume" ? "migrated" : "rolled-back" });
    });
  }
});
