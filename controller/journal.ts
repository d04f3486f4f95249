// The hostmaster's journal (DESIGN §7): one folder per migration under the state dir with the plan,
// written once atomically, and an append-only event log, one fsynced JSON line per event. Also the
// hostmaster's own ledger of parked data. The per-site lock is in siteLock.ts.
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { QmError, fsError } from "../shared/errors.js";
import { GroupCommitFile, fsyncDir, mkdirDurable, writeJsonAtomic } from "../shared/fsutil.js";
import { checkMigrationId } from "../shared/names.js";
import type { Ledger, LedgerEntry } from "../shared/siteTree.js";
import type { JournalEvent } from "./journalState.js";

export class Journal {
  /** the event log: the lines of hosts that answer together are fsynced together */
  private readonly events: GroupCommitFile;

  private constructor(readonly dir: string) {
    this.events = new GroupCommitFile(join(dir, "events.jsonl"));
  }

  static folder(stateDir: string, migrationId: string): string {
    return join(stateDir, "migrations", migrationId);
  }

  /** Creates the migration's folder (it must not exist) and writes the plan once, atomically. */
  static async create(stateDir: string, migrationId: string, plan: unknown): Promise<Journal> {
    const dir = Journal.folder(stateDir, migrationId);
    await mkdirDurable(join(stateDir, "migrations"), 0o700);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        throw new QmError("CONFLICT", `journal ${dir} already exists`, { path: dir });
      }
      throw fsError(err, dir, "create the journal");
    }
    try {
      await fsyncDir(join(stateDir, "migrations"));
      await writeJsonAtomic(join(dir, "plan.json"), plan);
      // the event log exists from the start, its name fsynced with the plan's: appends only add lines
      await (await open(join(dir, "events.jsonl"), "wx", 0o600)).close();
      await fsyncDir(dir);
    } catch (err) {
      // a journal without its plan is no journal (a full state dir, say): nothing of it is left
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw fsError(err, dir, "create the journal");
    }
    return new Journal(dir);
  }

  /** Opens an existing migration's journal: its plan document and every event, in order. */
  static async load(stateDir: string, migrationId: string): Promise<{ journal: Journal; document: unknown; events: JournalEvent[] }> {
    checkMigrationId(migrationId);
    const dir = Journal.folder(stateDir, migrationId);
    let planText: string;
    try {
      planText = await readFile(join(dir, "plan.json"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new QmError("USAGE", `no migration ${migrationId} in ${join(stateDir, "migrations")}`, { key: migrationId });
      }
      throw err;
    }
    const bad = (what: string) => new QmError("JOURNAL_INVALID", `journal ${dir} does not parse: ${what}`, { path: dir });
    let document: unknown;
    try {
      document = JSON.parse(planText);
    } catch {
      throw bad("plan.json is not JSON");
    }
    let text = "";
    try {
      text = await readFile(join(dir, "events.jsonl"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const lines = text.split("\n");
    // a line is whole only with its newline: one torn by a crash or a full disk is dropped here, and cut
    // off before the next append (GroupCommitFile)
    lines.pop();
    const events = lines.map((line, i) => {
      try {
        const e = JSON.parse(line) as JournalEvent;
        if (typeof e !== "object" || e === null || typeof e.event !== "string") throw new Error();
        return e;
      } catch {
        throw bad(`events.jsonl line ${i + 1}`);
      }
    });
    return { journal: new Journal(dir), document, events };
  }

  /** Appends one event, whole or not at all; fails with IO naming the journal (a full state dir, say). */
  async append(event: object): Promise<void> {
    try {
      await this.events.append(JSON.stringify({ time: new Date().toISOString(), ...event }));
    } catch (err) {
      throw fsError(err, this.events.path, "append to the journal");
    }
  }

  /** Once the run is over: waits for the lines given so far and closes the event log. */
  close(): Promise<void> {
    return this.events.close();
  }

  /**
   * Only for an attempt that changed nothing (it lost the race for the lock). Its event log is closed
   * first: nothing else would close it, and a batch meets many locked sites in one process.
   */
  async remove(): Promise<void> {
    await this.events.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
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
