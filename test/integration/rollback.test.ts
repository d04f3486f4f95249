// A failing hook before the point of no return rolls the migration back automatically: exit 1, and
// every host's tree exactly as before (the hostmaster's stale copy too: fetch-site only wrote a staging copy).
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectUnchanged, setupScenario, siteDir } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** Every host's whole tree and the shared storage exactly as before; the lock released. */
async function expectRolledBack(s: Scenario): Promise<void> {
  await expectUnchanged(s);
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "lock released").toEqual([]);
}

describe("automatic rollback", () => {
  it.each([
    // "1" is only in `vset maintenance_mode 1`: maintenanceOff (`… 0`) still works
    ["maintenanceOn", "1", ["vset", "vset"]],
    ["dbDump", "sql-dump", ["vset", "sql-dump", "vset"]],
    ["updatedb", "updatedb", ["vset", "sql-dump", "provision-verify", "updatedb", "sql-query", "provision-verify", "vset"]],
  ])("a failing %s hook rolls back (exit 1) and runs the undo hooks", async (_hook, failOn, expectedCalls) => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }));
    const log = path.join(s.baseDir, "drush.log");
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      env: { QM_FAKE_DRUSH_LOG: log, QM_FAKE_DRUSH_FAIL: failOn },
    });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(run.events.at(-1)).toMatchObject({ event: "result", outcome: "rolled-back", exitCode: 1 });
    const calls = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { argv: string[] }).argv);
    expect(calls.map((a) => a[1])).toEqual(expectedCalls);
    if (failOn === "updatedb") {
      const id = String(run.events[0]?.migrationId);
      expect(calls[4]).toContain(`--file=${path.join(s.cluster.masterState, "migrations", id, "db-dump.sql")}`);
    }
    await expectRolledBack(s);
  });

  it("a failing deploy after the rename moves the site back under its old name", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], hooks: fakeDrushHooks() }));
    const log = path.join(s.baseDir, "drush.log");
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--new-uri", "new.example.com", "--json"], {
      env: { QM_FAKE_DRUSH_LOG: log, QM_FAKE_DRUSH_FAIL: "@new.example.com" },
    });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    const undone = run.events.filter((e) => e.event === "step-end" && e.undo).map((e) => e.step);
    expect(undone).toEqual(["master-move-site", "fetch-site", "fronts-park-data", "master-park-data", "maintenance-on", "lock"]);
    const calls = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { argv: string[] }).argv.slice(0, 2).join(" "));
    expect(calls).toEqual([
      `@${s.site} vset`,
      `@${s.site} sql-dump`,
      "@new.example.com provision-verify",
      `@${s.site} provision-verify`,
      `@${s.site} vset`,
    ]);
    expect(fs.existsSync(siteDir(s.cluster.masterRoot, s.to, "new.example.com"))).toBe(false);
    await expectRolledBack(s);
  });
});
