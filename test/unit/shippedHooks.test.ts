// The hook configs and scripts shipped in deploy/hooks/: each config is valid for the real controller
// config loader, each script parses (sh -n), and the drush wrappers behave with a stand-in for drush.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";
import { loadControllerConfig } from "../../controller/config.js";

const HOOKS_DIR = path.join(repoRoot(), "deploy", "hooks");
const shipped = (ext: string) => fs.readdirSync(HOOKS_DIR).filter((f) => f.endsWith(ext)).sort();

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-shipped-hooks-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const BASE = `
root: /var/aegir/platforms
stateDir: /var/aegir/quick-migrate
insecure: true
fronts:
  - { name: web1, address: "127.0.0.1:7101" }
`;

describe("deploy/hooks", () => {
  it("ships the Drupal 7, Drupal 8+ and no-drush configs and their scripts", () => {
    expect(shipped(".yaml")).toEqual(["drupal7.yaml", "drupal8.yaml", "mariadb.yaml"]);
    expect(shipped(".sh")).toEqual(["drush-dump.sh", "drush-restore.sh", "drush-updatedb.sh", "mariadb-dump.sh", "mariadb-restore.sh"]);
  });

  it.each(shipped(".yaml"))("%s is a valid hooks section for controller.yaml, naming scripts that are shipped", async (name) => {
    const file = path.join(tmp, "controller.yaml");
    fs.writeFileSync(file, BASE + fs.readFileSync(path.join(HOOKS_DIR, name), "utf8"));
    const c = await loadControllerConfig(file);
    expect(c.hooks.dbDump, "every shipped config dumps the database").toBeDefined();
    expect(c.hooks.dbRestore).toBeDefined();
    for (const argv of Object.values(c.hooks)) {
      const command = argv?.[0] ?? "";
      if (command.startsWith("/opt/quick-migrate/current/deploy/hooks/")) expect(fs.existsSync(path.join(HOOKS_DIR, path.basename(command))), command).toBe(true);
      else expect(command).toBe("drush");
    }
  });

  it.each(shipped(".sh"))("%s parses (sh -n) and is executable", async (name) => {
    const file = path.join(HOOKS_DIR, name);
    expect(fs.statSync(file).mode & 0o755).toBe(0o755);
    const r = await execa("sh", ["-n", file], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe("the drush wrappers, with a stand-in for drush", () => {
  /** a drush that logs its arguments and, for sql-dump, writes what QM_TEST_DUMP holds */
  function fakeDrush(): { env: Record<string, string>; log: string } {
    const log = path.join(tmp, "drush.log");
    const bin = path.join(tmp, "drush");
    fs.writeFileSync(
      bin,
      `#!/bin/sh
echo "$*" >>"${log}"
[ -n "\${QM_TEST_FAIL:-}" ] && case "$*" in *"$QM_TEST_FAIL"*) exit 1 ;; esac
case "$2" in sql-dump) printf '%s' "$QM_TEST_DUMP" >"\${3#--result-file=}" ;; sql-cli) cat >>"${log}" ;; esac
exit 0
`,
      { mode: 0o755 },
    );
    return { env: { DRUSH: bin }, log };
  }
  const script = (name: string) => path.join(HOOKS_DIR, name);
  const COMPLETE = "CREATE TABLE t (a int);\n-- Dump completed\n";

  it("drush-dump.sh writes a complete dump with mode 0600 under a loose umask", async () => {
    const { env } = fakeDrush();
    const dump = path.join(tmp, "db-dump.sql");
    const r = await execa("sh", ["-c", 'umask 022; exec "$0" "$@"', script("drush-dump.sh"), "@shop", dump], { env: { ...env, QM_TEST_DUMP: COMPLETE }, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readFileSync(dump, "utf8")).toBe(COMPLETE);
    expect(fs.statSync(dump).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it.each([
    ["an empty dump", "", undefined],
    ["a dump without the completion trailer", "CREATE TABLE t (a int);\n", undefined],
    ["a failing drush", COMPLETE, "sql-dump"],
  ])("drush-dump.sh fails on %s and leaves no dump", async (_what, content, fail) => {
    const { env } = fakeDrush();
    const dump = path.join(tmp, "db-dump.sql");
    const r = await execa(script("drush-dump.sh"), ["@shop", dump], { env: { ...env, QM_TEST_DUMP: content, ...(fail ? { QM_TEST_FAIL: fail } : {}) }, reject: false });
    expect(r.exitCode).toBe(1);
    expect(fs.readdirSync(tmp).sort()).toEqual(["drush", "drush.log"]);
  });

  it("drush-restore.sh empties the database, then loads the dump through sql-cli; an incomplete dump is refused before anything is dropped", async () => {
    const { env, log } = fakeDrush();
    const dump = path.join(tmp, "db-dump.sql");
    fs.writeFileSync(dump, "CREATE TABLE t (a int);\n");
    const refused = await execa(script("drush-restore.sh"), ["@shop", dump], { env, reject: false });
    expect(refused.exitCode).toBe(1);
    expect(fs.existsSync(log)).toBe(false);
    fs.writeFileSync(dump, COMPLETE);
    const r = await execa(script("drush-restore.sh"), ["@shop", dump], { env, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readFileSync(log, "utf8")).toBe(`@shop sql-drop -y\n@shop sql-cli\n${COMPLETE}`);
  });

  it.each([
    ["7", "@shop cc all"],
    ["8", "@shop cr"],
  ])("drush-updatedb.sh for Drupal %s: updatedb, then %s", async (version, clear) => {
    const { env, log } = fakeDrush();
    const r = await execa(script("drush-updatedb.sh"), ["@shop", version], { env, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readFileSync(log, "utf8")).toBe(`@shop updatedb -y\n${clear}\n`);
    const failed = await execa(script("drush-updatedb.sh"), ["@shop", version], { env: { ...env, QM_TEST_FAIL: "updatedb" }, reject: false });
    expect(failed.exitCode).toBe(1);
  });
});

describe("the no-drush scripts' guards, with stand-ins for mariadb-dump and mariadb", () => {
  /** PATH with mariadb-dump printing QM_TEST_DUMP (exit QM_TEST_EXIT) and a mariadb that logs that it ran */
  function standIns(): { env: Record<string, string>; log: string; cnf: string } {
    const bin = path.join(tmp, "bin");
    fs.mkdirSync(bin);
    const log = path.join(tmp, "mariadb.log");
    fs.writeFileSync(path.join(bin, "mariadb-dump"), `#!/bin/sh\necho "$*" >>"${log}"\nprintf '%s' "$QM_TEST_DUMP"\nexit "\${QM_TEST_EXIT:-0}"\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bin, "mariadb"), `#!/bin/sh\necho "mariadb $*" >>"${log}"\ncat >/dev/null\n`, { mode: 0o755 });
    const cnf = path.join(tmp, "site.cnf");
    fs.writeFileSync(cnf, "[client]\nuser=shop\npassword=secret\n\n[quick-migrate]\ndatabase = shop_db\n", { mode: 0o600 });
    return { env: { PATH: `${bin}:${process.env.PATH ?? ""}` }, log, cnf };
  }
  const script = (name: string) => path.join(HOOKS_DIR, name);

  it("mariadb-dump.sh passes the option file, never the password, and the database from [quick-migrate]", async () => {
    const { env, log, cnf } = standIns();
    const dump = path.join(tmp, "db-dump.sql");
    const r = await execa(script("mariadb-dump.sh"), [cnf, dump], { env: { ...env, QM_TEST_DUMP: "-- x\n-- Dump completed\n" }, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const argv = fs.readFileSync(log, "utf8");
    expect(argv).toContain(`--defaults-extra-file=${cnf}`);
    expect(argv).toContain("--single-transaction --quick");
    expect(argv.trim().endsWith("-- shop_db")).toBe(true);
    expect(argv).not.toContain("secret");
    expect(fs.statSync(dump).mode & 0o777).toBe(0o600);
  });

  it.each([
    ["mariadb-dump fails", "-- x\n-- Dump completed\n", "2"],
    ["the dump is empty", "", "0"],
    ["the dump is cut off", "CREATE TABLE t (\n", "0"],
  ])("mariadb-dump.sh fails when %s, and leaves no dump (nor its .tmp)", async (_what, content, exit) => {
    const { env, cnf } = standIns();
    const dump = path.join(tmp, "db-dump.sql");
    const r = await execa(script("mariadb-dump.sh"), [cnf, dump], { env: { ...env, QM_TEST_DUMP: content, QM_TEST_EXIT: exit }, reject: false });
    expect(r.exitCode).toBe(1);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith("db-dump"))).toEqual([]);
  });

  it("mariadb-dump.sh and mariadb-restore.sh refuse an option file without a database", async () => {
    const { env, cnf } = standIns();
    fs.writeFileSync(cnf, "[client]\nuser=shop\ndatabase=shop_db\n");
    for (const name of ["mariadb-dump.sh", "mariadb-restore.sh"]) {
      const r = await execa(script(name), [cnf, path.join(tmp, "db-dump.sql")], { env, reject: false });
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain("no database= under [quick-migrate]");
    }
  });

  it.each([
    ["missing", undefined],
    ["empty", ""],
    ["cut off", "CREATE TABLE t (\n"],
  ])("mariadb-restore.sh refuses a %s dump before it touches the database", async (_what, content) => {
    const { env, log, cnf } = standIns();
    const dump = path.join(tmp, "db-dump.sql");
    if (content !== undefined) fs.writeFileSync(dump, content);
    const r = await execa(script("mariadb-restore.sh"), [cnf, dump], { env, reject: false });
    expect(r.exitCode).toBe(1);
    expect(fs.existsSync(log), "mariadb was not run").toBe(false);
  });
});
