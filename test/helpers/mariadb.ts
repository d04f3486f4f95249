// A scratch MariaDB server for the tests of the database hooks: its own data dir and socket in a temp
// folder, no network, started and stopped by the test file. Where it cannot start (not installed, no
// permission), startMariaDb returns why, and the tests skip saying so.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";

export const MARIADB_MISSING = "MariaDB is not installed: apt-get install -y mariadb-server mariadb-client";

export interface MariaDb {
  readonly dir: string;
  readonly socket: string;
  /** runs SQL as the server's root (unix socket authentication); returns the output, tab-separated */
  root(sql: string, database?: string): Promise<string>;
  /**
   * A database with a user of its own and a password, and a MySQL option file for it (mode 0600) as
   * deploy/hooks/mariadb-dump.sh reads it: [client] user, password, socket; [quick-migrate] database.
   */
  createSite(name: string, cnfFile: string, password?: string): Promise<string>;
  /** the database as text (mariadb-dump --skip-dump-date), to compare before and after */
  snapshot(database: string): Promise<string>;
  stop(): Promise<void>;
}

function findBinary(names: string[], dirs = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]): string | undefined {
  for (const name of names) for (const dir of dirs) if (fs.existsSync(path.join(dir, name))) return path.join(dir, name);
  return undefined;
}

/** Starts a server in a new temp folder, or says why it cannot. */
export async function startMariaDb(): Promise<MariaDb | { skip: string }> {
  const server = findBinary(["mariadbd", "mysqld"]);
  const installDb = findBinary(["mariadb-install-db", "mysql_install_db"]);
  if (!server || !installDb || !findBinary(["mariadb"]) || !findBinary(["mariadb-dump"])) return { skip: MARIADB_MISSING };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-mariadb-"));
  const dataDir = path.join(dir, "data");
  const socket = path.join(dir, "mysqld.sock");
  const user = process.getuid?.() === 0 ? ["--user=root"] : [];
  const install = await execa(installDb, ["--no-defaults", `--datadir=${dataDir}`, "--auth-root-authentication-method=socket", "--skip-test-db", ...user], { reject: false, all: true });
  if (install.exitCode !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    return { skip: `mariadb-install-db failed: ${String(install.all).trim().split("\n").pop()}` };
  }
  const errorLog = path.join(dir, "error.log");
  const child: ChildProcess = spawn(
    server,
    ["--no-defaults", `--datadir=${dataDir}`, `--socket=${socket}`, "--skip-networking", `--pid-file=${path.join(dir, "mysqld.pid")}`, `--log-error=${errorLog}`, "--innodb-buffer-pool-size=16M", "--skip-log-bin", ...user],
    { stdio: "ignore" },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let ended = false;
  void exited.then(() => (ended = true));
  const client = (args: string[], input?: string) => execa("mariadb", ["--no-defaults", `--socket=${socket}`, "--user=root", "--batch", "--skip-column-names", ...args], { ...(input !== undefined ? { input } : {}) });

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (ended || Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      const why = fs.existsSync(errorLog) ? fs.readFileSync(errorLog, "utf8").trim().split("\n").pop() : "no error log";
      fs.rmSync(dir, { recursive: true, force: true });
      return { skip: `mariadbd did not start: ${why}` };
    }
    if (fs.existsSync(socket) && (await client(["-e", "SELECT 1"]).then(() => true, () => false))) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    dir,
    socket,
    root: async (sql, database) => (await client([...(database ? [database] : []), "-e", sql])).stdout,
    createSite: async (name, cnfFile, password = `pw-${name}-${Math.random().toString(36).slice(2)}`) => {
      await client(["-e", `CREATE DATABASE \`${name}\`; CREATE USER '${name}'@'localhost' IDENTIFIED BY '${password}'; GRANT ALL ON \`${name}\`.* TO '${name}'@'localhost';`]);
      fs.writeFileSync(cnfFile, `[client]\nuser=${name}\npassword=${password}\nsocket=${socket}\n\n[quick-migrate]\ndatabase=${name}\n`, { mode: 0o600 });
      return password;
    },
    snapshot: async (database) => (await execa("mariadb-dump", ["--no-defaults", `--socket=${socket}`, "--user=root", "--skip-dump-date", "--routines", "--triggers", database])).stdout,
    stop: async () => {
      if (!ended) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
