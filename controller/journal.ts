// The hostmaster's journal (DESIGN §7): one folder per migration under the state dir with the plan,
// written once atomically, and an append-only event log, one fsynced JSON line per event. Also the
// hostmaster's own ledger of parked data, the database dump's place, and the per-site lock.
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { QmError } from "../shared/errors.js";
import { appendLineDurable, fsyncDir, writeJsonAtomic } from "../shared/fsutil.js";
import type { Ledger, LedgerEntry } from "../shared/siteTree.js";

export class Journal {
  private constructor(readonly dir: string) {}

  static folder(stateDir: string, migrationId: string): string {
    return join(stateDir, "migrations", migrationId);
  }

  /** Creates the migration's folder (it must not exist) and writes the plan once, atomically. */
  static async create(stateDir: string, migrationId: string, plan: unknown): Promise<Journal> {
    const dir = Journal.folder(stateDir, migrationId);
    await mkdir(join(stateDir, "migrations"), { recursive: true, mode: 0o700 });
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        throw new QmError("CONFLICT", `journal ${dir} already exists`, { path: dir });
      }
      throw err;
    }
    await fsyncDir(join(stateDir, "migrations"));
    await writeJsonAtomic(join(dir, "plan.json"), plan);
    return new Journal(dir);
  }

  async append(event: object): Promise<void> {
    await appendLineDurable(join(this.dir, "events.jsonl"), JSON.stringify({ time: new Date().toISOString(), ...event }));
  }

  get dumpPath(): string {
    return join(this.dir, "db-dump.sql");
  }

  /** The hostmaster's ledger of its own parked (stale) data dirs. */
  ledger(): Ledger {
    const file = join(this.dir, "master-ledger.json");
    return {
      entries: async () => {
        try {
          return JSON.parse(await readFile(file, "utf8")) as LedgerEntry[];
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
          throw err;
        }
      },
      save: (entries) => writeJsonAtomic(file, entries),
    };
  }
}

/** Per-site lock: a file created exclusively, holding the migration id. Not stolen silently. */
export class SiteLock {
  private constructor(private readonly files: readonly string[]) {}

  static file(stateDir: string, site: string): string {
    return join(stateDir, "locks", `${site}.lock`);
  }

  static async holder(stateDir: string, site: string): Promise<string | undefined> {
    try {
      return (await readFile(SiteLock.file(stateDir, site), "utf8")).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
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
            const holder = (await SiteLock.holder(stateDir, site)) ?? "?";
            throw new QmError("LOCKED", `site ${site} is locked by migration ${holder}`, { key: site });
          }
          throw err;
        }
        try {
          await fh.writeFile(`${migrationId}\n`);
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

  async release(): Promise<void> {
    await Promise.all(this.files.map((f) => rm(f, { force: true })));
  }
}
