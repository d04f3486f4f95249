// The per-site lock (DESIGN §7): a file per site under the state dir, created exclusively, naming the
// migration and the controller process that holds it, so that running can be told from interrupted.
import { readFileSync } from "node:fs";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { QmError } from "../shared/errors.js";
import { fsyncDir, writeFileAtomic } from "../shared/fsutil.js";

/** Who holds a site lock: the migration, and the controller process (to tell running from interrupted). */
export interface LockHolder {
  readonly migrationId: string;
  readonly pid: number;
  /** the process's start time in clock ticks since boot (/proc/<pid>/stat field 22), so a reused pid is not mistaken for it */
  readonly startTime: string;
  readonly host: string;
}

export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // the command name may hold spaces and parentheses: fields are counted after its closing ")"
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function thisProcess(migrationId: string): LockHolder {
  return { migrationId, pid: process.pid, startTime: processStartTime(process.pid) ?? "", host: hostname() };
}

/** Per-site lock: a file created exclusively, naming the migration and the controller process. Not stolen silently. */
export class SiteLock {
  private constructor(private readonly files: readonly string[]) {}

  static file(stateDir: string, site: string): string {
    return join(stateDir, "locks", `${site}.lock`);
  }

  static async holder(stateDir: string, site: string): Promise<LockHolder | undefined> {
    let text: string;
    try {
      text = (await readFile(SiteLock.file(stateDir, site), "utf8")).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    try {
      return JSON.parse(text) as LockHolder;
    } catch {
      // a hand-made or truncated lock file: the first word is taken as the migration id
      return { migrationId: text.split(/\s/)[0] ?? "?", pid: 0, startTime: "", host: "" };
    }
  }

  /** Whether the controller process that took the lock is still running (on this host). */
  static isAlive(holder: LockHolder): boolean {
    if (holder.pid <= 0 || holder.host !== hostname()) return false;
    return processStartTime(holder.pid) === holder.startTime;
  }

  /** Locks every named site (the source and, when renamed, the new name), or none of them. */
  static async acquire(stateDir: string, sites: readonly string[], migrationId: string): Promise<SiteLock> {
    const dir = join(stateDir, "locks");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const taken: string[] = [];
    try {
      for (const site of new Set(sites)) {
        const file = SiteLock.file(stateDir, site);
        let fh;
        try {
          fh = await open(file, "wx", 0o600);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "EEXIST") {
            const holder = (await SiteLock.holder(stateDir, site))?.migrationId ?? "?";
            throw new QmError("LOCKED", `site ${site} is locked by migration ${holder}`, { key: site });
          }
          throw err;
        }
        try {
          await fh.writeFile(`${JSON.stringify(thisProcess(migrationId))}\n`);
          await fh.sync();
        } finally {
          await fh.close();
        }
        taken.push(file);
      }
      await fsyncDir(dir);
    } catch (err) {
      await Promise.all(taken.map((f) => rm(f, { force: true })));
      throw err;
    }
    return new SiteLock(taken);
  }

  /**
   * Takes over the locks of an interrupted migration (resume, rollback): each must name this
   * migration and its process must be gone. A missing lock is taken again.
   */
  static async takeOver(stateDir: string, sites: readonly string[], migrationId: string): Promise<SiteLock> {
    const files: string[] = [];
    for (const site of new Set(sites)) {
      const holder = await SiteLock.holder(stateDir, site);
      if (holder && holder.migrationId !== migrationId) {
        throw new QmError("LOCKED", `site ${site} is locked by migration ${holder.migrationId}`, { key: site });
      }
      if (holder && SiteLock.isAlive(holder)) {
        throw new QmError("LOCKED", `migration ${migrationId} is running (controller pid ${holder.pid})`, { key: site });
      }
      const file = SiteLock.file(stateDir, site);
      await writeFileAtomic(file, `${JSON.stringify(thisProcess(migrationId))}\n`);
      files.push(file);
    }
    return new SiteLock(files);
  }

  async release(): Promise<void> {
    await Promise.all(this.files.map((f) => rm(f, { force: true })));
  }
}
