// The shipped no-drush database hooks (deploy/hooks/mariadb-dump.sh, mariadb-restore.sh) on a real
// MariaDB with a site database: migrations, rollbacks and crashes leave the database as it was, and a
// failing dump stops the migration before any data dir moves. Skipped, saying why, where MariaDB cannot start.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, runController } from "../../scripts/lib/cluster.js";
import { type MariaDb, startMariaDb } from "../helpers/mariadb.js";
import { type Scenario, expectMigrated, expectUnchanged, rescan, setupScenario } from "../helpers/scenario.js";

const HOOKS_DIR = path.join(repoRoot(), "deploy", "hooks");

let db: MariaDb | undefined;
let skipWhy = "";
beforeAll(async () => {
  const started = await startMariaDb();
  if ("skip" in started) {
    skipWhy = started.skip;
    console.warn(`mariadb-hooks tests skipped: ${skipWhy}`);
  } else {
    db = started;
  }
}, 60_000);
afterAll(async () => {
  await db?.stop();
});

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** A Drupal-like site database: a variable table (maintenance_mode 0) and content, some of it binary and non-ASCII. */
const SEED = `
CREATE TABLE variable (name VARCHAR(128) NOT NULL PRIMARY KEY, value LONGBLOB NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO variable VALUES ('maintenance_mode', 'i:0;'), ('site_name', 's:4:"Shop";'), ('cron_key', UNHEX('00FF10E2'));
CREATE TABLE node (nid INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, title VARCHAR(255) NOT NULL, body MEDIUMTEXT, KEY title (title)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO node (title, body) VALUES ('Über uns', 'Grüße — ✓'), ('Shop', REPEAT('x', 70000)), ('It''s "quoted"', NULL);
DELETE FROM node WHERE nid = 3;
`;

interface Site {
  readonly name: string;
  readonly cnf: string;
  readonly password: string;
  readonly before: string;
}

/** a fresh database for one test, seeded, with its option file; `before` is its dump */
async function makeSiteDb(name: string): Promise<Site> {
  if (!db) throw new Error("no MariaDB");
  const cnf = path.join(db.dir, `${name}.cnf`);
  const password = await db.createSite(name, cnf);
  await db.root(SEED, name);
  return { name, cnf, password, before: await db.snapshot(name) };
}

/** SQL through the site's own option file, as a hook runs it: an argument array, the password in the file */
function sql(site: Site, statements: string): string[] {
  return ["mariadb", `--defaults-extra-file=${site.cnf}`, site.name, "-e", statements];
}

const SCHEMA_CHANGE = "ALTER TABLE node ADD COLUMN qm_schema INT NOT NULL DEFAULT 1; CREATE TABLE qm_new (a INT); INSERT INTO qm_new VALUES (1);";

/** the shipped dump and restore hooks, and test hooks for maintenance and updatedb through the same option file */
function hooks(site: Site, opts: { updatedb?: string; dumpCnf?: string } = {}): Record<string, string[]> {
  return {
    maintenanceOn: sql(site, "UPDATE variable SET value = 'i:1;' WHERE name = 'maintenance_mode'"),
    dbDump: [path.join(HOOKS_DIR, "mariadb-dump.sh"), opts.dumpCnf ?? site.cnf, "{dump}"],
    updatedb: sql(site, opts.updatedb ?? SCHEMA_CHANGE),
    maintenanceOff: sql(site, "UPDATE variable SET value = 'i:0;' WHERE name = 'maintenance_mode'"),
    dbRestore: [path.join(HOOKS_DIR, "mariadb-restore.sh"), site.cnf, "{dump}"],
  };
}

async function expectDatabaseAsBefore(site: Site): Promise<void> {
  expect(await db?.snapshot(site.name), `${site.name} differs from before`).toBe(site.before);
}

/** after a completed migration: the schema change of updatedb is there; without it the database is as before */
async function expectDatabaseMigrated(site: Site): Promise<void> {
  expect(await db?.root("SELECT COUNT(*) FROM node WHERE qm_schema = 1", site.name)).toBe("2");
  await db?.root("ALTER TABLE node DROP COLUMN qm_schema; DROP TABLE qm_new;", site.name);
  await expectDatabaseAsBefore(site);
}

function dumpFile(s: Scenario, id: string): string {
  return path.join(s.cluster.masterState, "migrations", id, "db-dump.sql");
}

function fileIdentity(file: string): { ino: number; mtimeMs: number; sha256: string } {
  const st = fs.statSync(file);
  return { ino: st.ino, mtimeMs: st.mtimeMs, sha256: createHash("sha256").update(fs.readFileSync(file)).digest("hex") };
}

async function scenarioWith(site: Site, opts: Parameters<typeof hooks>[1] = {}): Promise<Scenario> {
  return (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: hooks(site, opts) }));
}

describe("database hooks without drush, on a real MariaDB", () => {
  it("a migration keeps the database as it was; the dump is complete, mode 0600, and no password is on a command line", async (ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb("qm_migrate");
    const s = await scenarioWith(site);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_LOG_LEVEL: "info" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    const id = String(run.events[0]?.migrationId);
    const dump = dumpFile(s, id);
    expect(fs.statSync(dump).mode & 0o777).toBe(0o600);
    const text = fs.readFileSync(dump, "utf8");
    expect(text.trimEnd().split("\n").at(-1)).toBe("-- Dump completed");
    // dumped during maintenance: the dump holds maintenance_mode 1
    expect(text).toContain("('maintenance_mode','i:1;')");
    expect(fs.readdirSync(path.dirname(dump)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    // the hooks' arguments are logged (info): the password is not among them
    expect(run.stderr).toContain("hook start");
    expect(run.stdout + run.stderr).not.toContain(site.password);
    await expectDatabaseMigrated(site);
  });

  it("updatedb changes the schema and then fails: rolled back, the database identical to before", async (ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb("qm_updatedb_fails");
    // the update applies its schema changes, then fails on a table that is not there (mariadb exits 1)
    const s = await scenarioWith(site, { updatedb: `${SCHEMA_CHANGE} UPDATE qm_missing SET a = 1;` });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(run.events.at(-1)).toMatchObject({ event: "result", outcome: "rolled-back", exitCode: 1 });
    await expectUnchanged(s);
    // the table updatedb made is gone too, not only the altered ones put back
    await expectDatabaseAsBefore(site);
  });

  it("a later step fails after updatedb changed the schema (push-site to a front): rolled back, the database identical to before", async (ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb("qm_push_fails");
    let s = await scenarioWith(site);
    // web2's target platform takes no new site folder: the push there fails, after updatedb ran
    const sites = path.join(s.cluster.front("web2").root, s.to, "sites");
    fs.chmodSync(sites, 0o555);
    s = scenario = await rescan(s);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(run.events.at(-1)).toMatchObject({ event: "result", outcome: "rolled-back", exitCode: 1 });
    expect(String(run.events.at(-1)?.message)).toMatch(/^push-site failed on web2/);
    const ran = run.events.filter((e) => e.event === "ack" && e.ok).map((e) => `${e.undo ? "undo " : ""}${String(e.step)}`);
    expect(ran).toContain("undo master-move-site");
    await expectUnchanged(s);
    await expectDatabaseAsBefore(site);
  });

  it("a controller killed after db-dump, then resume: the first dump is kept, not dumped over", async (ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb("qm_resume");
    const s = await scenarioWith(site);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAULT: "kill-after-ack:db-dump:hostmaster" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(-1);
    const id = String(run.events[0]?.migrationId);
    const first = fileIdentity(dumpFile(s, id));
    // what the dump must keep holding: the database as it was when dumped, not as resume finds it
    await db.root("UPDATE node SET title = 'changed after the dump' WHERE nid = 1", site.name);
    const resume = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(resume.exitCode, resume.stdout + resume.stderr).toBe(0);
    expect(resume.events.find((e) => e.event === "ack" && e.step === "db-dump")).toMatchObject({ ok: true, detail: expect.stringContaining("not run again") });
    await expectMigrated(s);
    expect(fileIdentity(dumpFile(s, id))).toEqual(first);
    expect(fs.readFileSync(dumpFile(s, id), "utf8")).not.toContain("changed after the dump");
    await db.root("UPDATE node SET title = 'Über uns' WHERE nid = 1", site.name);
    await expectDatabaseMigrated(site);
  });

  it("a controller killed after updatedb, then rollback: the database restored, every tree as before", async (ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb("qm_rollback");
    const s = await scenarioWith(site);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAULT: "kill-after-ack:master-move-site:hostmaster" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(-1);
    const id = String(run.events[0]?.migrationId);
    expect(await db.root("SELECT COUNT(*) FROM node WHERE qm_schema = 1", site.name), "updatedb ran before the kill").toBe("2");
    const rollback = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(rollback.exitCode, rollback.stdout + rollback.stderr).toBe(0);
    await expectUnchanged(s);
    await expectDatabaseAsBefore(site);
  });

  it.for([
    ["a wrong password", "qm_dump_wrong_password", (cnf: string, site: Site) => cnf.replace(`password=${site.password}`, "password=wrong")],
    ["a server that does not answer", "qm_dump_no_server", (cnf: string) => cnf.replace(/^socket=.*$/m, `socket=${path.join(db?.dir ?? "", "nothing-here.sock")}`)],
  ] as const)("a dump that fails (%s) stops the migration before any data dir moves, and leaves no partial dump", async ([, name, breakCnf], ctx) => {
    if (!db) return ctx.skip(skipWhy);
    const site = await makeSiteDb(name);
    const badCnf = path.join(db.dir, `${site.name}-broken.cnf`);
    fs.writeFileSync(badCnf, breakCnf(fs.readFileSync(site.cnf, "utf8"), site), { mode: 0o600 });
    const s = await scenarioWith(site, { dumpCnf: badCnf });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(run.events.at(-1)).toMatchObject({ event: "result", outcome: "rolled-back", exitCode: 1 });
    expect(String(run.events.at(-1)?.message)).toContain("mariadb-dump of");
    const steps = new Set(run.events.filter((e) => e.event === "step-start").map((e) => e.step));
    expect(steps.has("master-park-data") || steps.has("fronts-park-data"), "no data dir step started").toBe(false);
    await expectUnchanged(s);
    const id = String(run.events[0]?.migrationId);
    expect(fs.readdirSync(path.dirname(dumpFile(s, id))).filter((f) => f.startsWith("db-dump")), "no dump, partial or not").toEqual([]);
    // maintenanceOn was undone: the database as before
    await expectDatabaseAsBefore(site);
  });
});
