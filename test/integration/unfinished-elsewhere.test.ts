// A front refuses a new migration of a site while its own records hold an unfinished one, whatever the
// hostmaster remembers: a migration killed mid-way, then the hostmaster rebuilt (its state dir gone),
// is refused at preflight (exit 2) naming the id, where the data is and the fix; `quick-migrate-agent
// parked restore <id>` on each front makes the site migratable again, data intact.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ClusterFront, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { Action } from "../../shared/generated/quickmigrate/v1/agent.js";
import { apply, insecureClient, preflight } from "../helpers/agentRpc.js";
import { DATA_DIRS, PARK, type Scenario, expectMigrated, expectRefused, expectUnchanged, setupScenario } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** `quick-migrate-agent parked restore <id>` on a front, with its service stopped, then the service started again. */
async function parkedRestore(s: Scenario, f: ClusterFront, id: string): Promise<void> {
  await s.cluster.stopAgent(f.name);
  const r = await runAgentCommand(f, ["parked", "restore", id]);
  expect(r.exitCode, `${f.name}: ${String(r.stdout)}${String(r.stderr)}`).toBe(0);
  expect(String(r.stdout)).toContain(`all ${DATA_DIRS.length} data dir(s) are back`);
  await s.cluster.startAgent(f.name);
}

/** Runs a migration that the controller's fault injection kills (SIGKILL) at `fault`; returns its id. */
async function killedMigration(s: Scenario, fault: string): Promise<string> {
  const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAULT: fault } });
  expect(run.exitCode, `the controller should have been killed (${fault}):\n${run.stdout}${run.stderr}`).toBe(-1);
  return String(run.events[0]?.migrationId);
}

/** The hostmaster's state dir is lost: no journal, no lock, nothing that remembers the migration. */
function loseStateDir(s: Scenario): void {
  fs.rmSync(s.cluster.masterState, { recursive: true, force: true });
}

function expectNamesUnfinished(message: string, s: Scenario, id: string, fronts: readonly string[]): void {
  for (const f of fronts) {
    expect(message).toContain(`${f}: migration ${id} of ${s.site} (${s.from} → ${s.to}) is unfinished on this front: files parked at ${PARK}/${id}/files, private/files parked at ${PARK}/${id}/private%2Ffiles`);
  }
  expect(message).toContain(`\`quick-migrate resume ${id}\` or \`quick-migrate rollback ${id}\` on the hostmaster that has its journal`);
  expect(message).toContain(`\`quick-migrate-agent parked restore ${id}\` on this front`);
}

describe("a front holding an unfinished migration of the site", () => {
  it("killed before push-site, hostmaster rebuilt: refused, naming the id; parked restore on each front, then a new migration succeeds", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    // the hostmaster is rebuilt from a backup made before the migration: its tree as it was, its state dir empty
    const backup = path.join(s.baseDir, "hostmaster-backup");
    execFileSync("rsync", ["-a", `${s.cluster.masterRoot}/`, `${backup}/`]);
    const id = await killedMigration(s, "kill-before:push-site");
    loseStateDir(s);
    execFileSync("rsync", ["-a", "--delete", `${backup}/`, `${s.cluster.masterRoot}/`]);

    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expectNamesUnfinished(message, s, id, ["web1", "web2"]);
    expect(message).not.toMatch(/hostmaster:/);

    for (const f of s.cluster.fronts) await parkedRestore(s, f, id);
    await expectUnchanged(s);

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
  });

  it("killed before fetch-site, only the state dir lost: refused the same; parked restore, the hostmaster's stale park removed, then a new migration succeeds", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    const id = await killedMigration(s, "kill-before:fetch-site");
    loseStateDir(s);
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expectNamesUnfinished(message, s, id, ["web1", "web2"]);

    for (const f of s.cluster.fronts) await parkedRestore(s, f, id);
    // what is left on the hostmaster is its own stale copy of the data dirs, parked by that migration
    const staleOnMaster = path.join(s.cluster.masterRoot, PARK, id);
    expect(fs.readdirSync(staleOnMaster).sort()).toEqual(["files", "private%2Ffiles"]);
    fs.rmSync(staleOnMaster, { recursive: true });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
  });

  it("a repeated preflight of the same id is not refused; finished migrations block nothing", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
    const web1 = s.cluster.front("web1");
    const c = insecureClient(web1.address);
    const spec = (id: string) => ({ id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] });
    try {
      expect(await preflight(c, { migration: spec("m-one"), register: true, local: false })).toMatchObject({ ok: true, value: { problems: [] } });
      expect(await apply(c, { migrationId: "m-one", step: "fronts-park-data", action: Action.ACTION_PARK_DATA })).toMatchObject({ ok: true });
      // the same id again (a retried preflight): its own record does not count
      expect(await preflight(c, { migration: spec("m-one"), register: true, local: false })).toMatchObject({ ok: true, value: { problems: [] } });
      // another id for the same site, or renaming another site to it: refused
      const other = await preflight(c, { migration: spec("m-two"), register: true, local: false });
      expect(other.ok && other.value.problems.map((p) => p.code)).toEqual(["UNFINISHED_MIGRATION"]);
      const renameOnto = await preflight(c, { migration: { ...spec("m-three"), site: "other.example.com", newSite: s.site }, register: false, local: false });
      expect(renameOnto.ok && renameOnto.value.problems.map((p) => p.code)).toContain("UNFINISHED_MIGRATION");
      expect(fs.existsSync(path.join(web1.stateDir, "migrations", "m-two.json")), "a refused preflight registers nothing").toBe(false);

      // rolled back: finished, so a new migration of the site is checked as usual
      expect(await apply(c, { migrationId: "m-one", step: "fronts-park-data", action: Action.ACTION_UNPARK_DATA })).toMatchObject({ ok: true });
      expect(await preflight(c, { migration: spec("m-two"), register: false, local: false })).toMatchObject({ ok: true, value: { problems: [] } });
    } finally {
      c.close();
    }
    // a completed migration, then one back the other way: the first record blocks nothing
    const there = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(there.exitCode, there.stdout + there.stderr).toBe(0);
    const back = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--from", s.to, "--to", s.from, "--json"]);
    expect(back.exitCode, back.stdout + back.stderr).toBe(0);
  });
});
