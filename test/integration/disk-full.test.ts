// A full disk loses nothing. The hostmaster's state dir, the hostmaster's root, a front's root or a
// front's state dir is a small tmpfs that fills up at a chosen step — filled by a hook as the run goes,
// or while the controller is down (killed at a step boundary) before `resume`. The run then ends rolled
// back (exit 1) or needing attention (exit 3), never "refused, nothing was changed" (exit 2); once the
// space is freed, the command it names finishes. Every tree ends byte for byte as migrated or as
// before, with no lock, no takeover marker and no temporary file left. Mounting needs root: skipped
// otherwise.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerRun, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { fillDisk, fillDiskCommand, isRoot, mountTmpfsOver } from "../helpers/disk.js";
import { STEP_NAMES } from "../../controller/steps.js";
import { type Scenario, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
const unmounts: Array<() => void> = [];
afterEach(async () => {
  await scenario?.cluster.stop();
  for (const u of unmounts.splice(0)) u();
  await scenario?.cleanup();
  scenario = undefined;
});

type Disk = "hostmaster state" | "hostmaster root" | "web1 root" | "web1 state";

/** The folder that is a small tmpfs, and the file that fills it. */
function diskOf(s: Scenario, disk: Disk): { dir: string; filler: string } {
  const dir = {
    "hostmaster state": s.cluster.masterState,
    "hostmaster root": s.cluster.masterRoot,
    "web1 root": s.cluster.frontRoot("web1"),
    "web1 state": s.cluster.front("web1").stateDir,
  }[disk];
  return { dir, filler: path.join(dir, ".filler") };
}

async function scenarioOn(disk: Disk): Promise<{ s: Scenario; filler: string }> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }));
  const { dir, filler } = diskOf(s, disk);
  unmounts.push(mountTmpfsOver(dir, "16m"));
  return { s, filler };
}

/** Names ending in .tmp anywhere under `dir` (writeFileAtomic's temporary files), and takeover markers. */
function leftovers(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => /\.tmp$|\.lock\.next-/.test(path.basename(n)));
}

/**
 * After a run that hit the full disk: never exit 2, the space freed, the command the message names
 * run until it finishes, then the final state checked.
 */
async function expectRecovered(s: Scenario, filler: string, run: ControllerRun, what: string): Promise<void> {
  const out = `${what}:\n${run.stdout}${run.stderr}`;
  expect(run.exitCode, out).not.toBe(2);
  expect([0, 1, 3], out).toContain(run.exitCode);
  const id = String(run.events.find((e) => e.migrationId)?.migrationId);
  fs.rmSync(filler, { force: true });

  let last = run;
  for (let i = 0; i < 3 && last.exitCode === 3; i++) {
    const named = /`quick-migrate (resume|rollback) ([^`]+)`/.exec(String(last.events.at(-1)?.message));
    expect(named, `exit 3 names the command to run:\n${last.stdout}`).not.toBeNull();
    last = await runController(s.cluster.controllerConfig, [named?.[1] as string, id, "--json"]);
    expect(last.exitCode, `${named?.[1]} once space is freed:\n${last.stdout}${last.stderr}`).not.toBe(2);
  }
  const outcome = String(last.events.at(-1)?.outcome);
  expect(["migrated", "rolled-back"], `${what}: ends finished:\n${last.stdout}${last.stderr}`).toContain(outcome);
  if (outcome === "migrated") await expectMigrated(s);
  else await expectUnchanged(s);

  // the journal parses and agrees; nothing is left locked or half-written
  const status = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
  expect(status.exitCode, status.stderr).toBe(0);
  expect(JSON.parse(status.stdout)).toMatchObject([{ id, state: outcome }]);
  const locks = path.join(s.cluster.masterState, "locks");
  expect(fs.existsSync(locks) ? fs.readdirSync(locks) : [], "no lock left").toEqual([]);
  for (const dir of [s.cluster.masterState, s.cluster.masterRoot, ...s.cluster.fronts.flatMap((f) => [f.root, f.stateDir])]) {
    expect(leftovers(dir), `temporary files left in ${dir}`).toEqual([]);
  }
}

describe.skipIf(!isRoot)("a disk that fills up during a run (a hook fills it; needs root for mount)", () => {
  const CASES: Array<[Disk, string]> = [
    ["hostmaster state", "maintenanceOn"],
    ["hostmaster state", "dbDump"],
    ["hostmaster state", "deploy"],
    ["hostmaster state", "maintenanceOff"],
    ["hostmaster root", "maintenanceOn"],
    ["web1 root", "maintenanceOn"],
    ["web1 root", "deploy"],
    ["web1 state", "maintenanceOn"],
    ["web1 state", "deploy"],
  ];
  it.each(CASES)("%s full from hook %s on", async (disk, hook) => {
    const { s, filler } = await scenarioOn(disk);
    const hooks = fakeDrushHooks();
    s.cluster.writeControllerConfig({ hooks: { ...hooks, [hook]: fillDiskCommand(filler, hooks[hook]) } });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    // the rest of the run and the recovery run without the filling hook
    s.cluster.writeControllerConfig({ hooks });
    await expectRecovered(s, filler, run, `migrate, ${disk} filled by ${hook}`);
  });
});

describe.skipIf(!isRoot)("a disk full when the controller resumes (killed at a step, the disk filled meanwhile; needs root for mount)", () => {
  // with a few pages left, the resumed run takes the lock and runs out of space part-way, at a point
  // that depends on the step; with none, it cannot even take the lock
  const LITTLE = 12 * 1024;
  const CASES: Array<[Disk, string, number]> = [
    ...STEP_NAMES.slice(2).map((step): [Disk, string, number] => ["hostmaster state", step, LITTLE]),
    ["hostmaster state", "fronts-park-data", 0],
    ["hostmaster state", "finish", 0],
    ["hostmaster root", "master-park-data", 0],
    ["hostmaster root", "fetch-site", 0],
    ["web1 root", "fronts-park-data", 0],
    ["web1 root", "push-site", 0],
    ["web1 root", "fronts-restore-data", 0],
    ["web1 state", "fronts-park-data", 0],
    ["web1 state", "push-site", 0],
    ["web1 state", "fronts-restore-data", 0],
    ["web1 state", "fronts-remove-old", 0],
  ];
  it.each(CASES)("%s full, resumed before %s (%i bytes left)", async (disk, step, left) => {
    const { s, filler } = await scenarioOn(disk);
    const killed = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAULT: `kill-before:${step}` } });
    expect(killed.exitCode, killed.stdout + killed.stderr).toBe(-1);
    const id = String(killed.events[0]?.migrationId);
    fillDisk(filler, left);
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    await expectRecovered(s, filler, run, `resume before ${step} with ${disk} full`);
  });
});
