// One writer at a time for an agent's record of a migration: the service (an Apply, a registration)
// and the `parked` command (run by a front's operator, service running or not) each take the record's
// lock file, created exclusively, for as long as they change the record or the tree under it. A lock
// left by a process that is gone (same pid, other start time, or none) is broken. The lock is a small
// file in the agent's state dir: it is made, read and removed synchronously (no fsync: a lock that a
// crash loses was held by a process that is gone).
import { closeSync, openSync, readFileSync, rmSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { QmError } from "../shared/errors.js";
import { checkMigrationId } from "../shared/names.js";
import { processStartTime } from "../shared/processes.js";

interface Holder {
  readonly pid: number;
  /** /proc/<pid>/stat field 22: a reused pid is not the holder */
  readonly startTime: string;
  readonly what: string;
}

const TORN_AFTER_MS = 2000;

const alive = (h: Holder): boolean => h.pid > 0 && processStartTime(h.pid) === h.startTime;

/** this process's start time, read once: it names every lock this process takes */
let ownStartTime: string | undefined;

export interface RecordLockOptions {
  /** how long to wait for another writer to finish (default 10 s) */
  readonly waitMs?: number;
  /** names this writer in the lock file, for the other's refusal */
  readonly what: string;
}

/** Runs `fn` holding the lock of migration `id`'s record; BUSY when another live writer keeps it past `waitMs`. */
export async function withRecordLock<T>(stateDir: string, id: string, opts: RecordLockOptions, fn: () => Promise<T>): Promise<T> {
  const file = join(stateDir, "migrations", `${checkMigrationId(id)}.lock`);
  ownStartTime ??= processStartTime(process.pid) ?? "";
  const me: Holder = { pid: process.pid, startTime: ownStartTime, what: opts.what };
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  for (;;) {
    try {
      const fd = openSync(file, "wx", 0o600);
      try {
        writeSync(fd, `${JSON.stringify(me)}\n`);
      } catch (err) {
        // a full state dir: no lock half-made is left behind to block every later writer
        closeSync(fd);
        rmSync(file, { force: true });
        throw err;
      }
      closeSync(fd);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new QmError("NOT_REGISTERED", `no record of migration ${id} in ${stateDir}/migrations`, { key: "migrationId" });
      if (code !== "EEXIST") throw err;
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(readFileSync(file, "utf8")) as Holder;
    } catch {
      holder = undefined; // being written, or torn by a crash: judged again on the next round
    }
    // an unreadable lock a few seconds old was torn by a crash, not being written
    const torn = holder === undefined && Date.now() - (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > TORN_AFTER_MS;
    if (torn || (holder && !alive(holder))) {
      rmSync(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new QmError("BUSY", `the record of migration ${id} is being changed by ${holder ? `${holder.what} (pid ${holder.pid})` : "another process"}; try again when it is done`, {
        key: "migrationId",
      });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    return await fn();
  } finally {
    // our own lock file: unlinked without a look first (gone: broken by a writer that judged us dead)
    try {
      unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}
