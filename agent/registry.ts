// The agent's own durable record, under its state dir: each migration it was told about at preflight,
// and where each of that migration's data dirs is (the ledger). It outlives the hostmaster and its journal.
//
// A record's file holds its versions, oldest first, one line of JSON each. A save appends the new version
// and flushes the file (fdatasync): one flush, where writing a new file and renaming it over the old one
// takes two, and a new inode each time, twice in every operation. Only the last whole version counts.
// Past COMPACT_AT_BYTES, or when the file is not as this agent last read or wrote it, the record is
// written anew (temp file, fsync, rename, fsync of the folder) with its last version only.
import { readFileSync, statSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { QmError } from "../shared/errors.js";
import { appendToFile, writeFileAtomic } from "../shared/fsutil.js";
import { type MigrationSpec, checkMigration } from "../shared/migration.js";
import { checkMigrationId } from "../shared/names.js";
import type { ChangeRecord, Ledger, LedgerEntry } from "../shared/siteTree.js";
import { withRecordLock } from "./recordLock.js";
import { type FrontState, INITIAL_STATE, deriveState } from "./stepOrder.js";

/**
 * The last result of one Apply of a (step, action), for audit. Never replayed: a repeated Apply does the
 * work again (a rollback may have undone it in between) and this record is overwritten.
 */
export interface OperationRecord {
  /** when the last Apply of this step and action ended */
  at: string;
  /** how many times it was applied */
  count: number;
  /** what it did, when it succeeded */
  changes?: ChangeRecord[];
  /** why it failed, when it failed */
  error?: { code: string; message: string };
}

export interface MigrationRecord {
  migration: MigrationSpec;
  /** this front is the hostmaster itself */
  local: boolean;
  registeredAt: string;
  ledger: LedgerEntry[];
  /** by `"<step>/<action>"`; absent in records written before operations were kept */
  operations?: Record<string, OperationRecord>;
  /**
   * when `parked restore` put the data back in the old site folder on this front: from then on the
   * migration only goes back (the hostmaster's rollback), never forward
   */
  restoredOnFrontAt?: string;
  /** where the migration stands in the step order on this front; absent in records written before it was kept */
  state?: FrontState;
  /** the latest controller run (ApplyRequest.run) whose request was accepted here; earlier runs are refused */
  run?: number;
}

/** The record's state in the step order: as kept, or derived from its operations and ledger (older records). Pure. */
export function frontStateOf(record: MigrationRecord): FrontState {
  if (record.state) return record.state;
  const operations = Object.entries(record.operations ?? {}).map(([key, op]) => ({ key, at: op.at, ok: op.changes !== undefined }));
  return deriveState(record.local, operations, record.ledger);
}

/** This front was asked to remove the old site folder: the migration is past its point of no return here. */
export function pastPointOfNoReturn(record: MigrationRecord): boolean {
  return Object.keys(record.operations ?? {}).some((key) => key.endsWith("/remove-old-site"));
}

/** The old site folder was removed on this front (step fronts-remove-old): the migration went through. */
export function oldSiteRemoved(record: MigrationRecord): boolean {
  return Object.entries(record.operations ?? {}).some(([key, op]) => key.endsWith("/remove-old-site") && op.changes !== undefined);
}

/**
 * The data dirs that are not where a finished migration leaves them: back in the old site folder (never
 * moved, or rolled back), or in the new one once the old site folder was removed. A rename in flight
 * (`moving`) is never settled. Pure.
 */
export function unsettledEntries(record: MigrationRecord): LedgerEntry[] {
  const removed = oldSiteRemoved(record);
  return record.ledger.filter((e) => e.moving !== undefined || !(e.at === "old" || (removed && e.at === "new")));
}

/** Unfinished: some data dir is not where a rolled-back or completed migration leaves it. Pure. */
export function isUnfinished(record: MigrationRecord): boolean {
  return unsettledEntries(record).length > 0;
}

/**
 * `next` differs from the ledger `onDisk` only by entries whose `moving` is gone, now at the place they
 * were moving from or to, nothing else changed: the ledger on disk is the more cautious of the two. Pure.
 */
export function onlySettles(onDisk: readonly LedgerEntry[], next: readonly LedgerEntry[]): boolean {
  if (onDisk.length !== next.length) return false;
  return next.every((n) => {
    const d = onDisk.find((e) => e.dataDir === n.dataDir);
    if (d === undefined) return false;
    if (JSON.stringify(d) === JSON.stringify(n)) return true;
    if (d.moving === undefined || n.moving !== undefined || (n.at !== d.at && n.at !== d.moving)) return false;
    const { moving: _m, at: _a, ...dRest } = d;
    const { at: _b, ...nRest } = n;
    return JSON.stringify(dRest) === JSON.stringify(nRest);
  });
}

/** A record's file is written anew, with its last version only, when an append would take it past this. */
export const COMPACT_AT_BYTES = 64 * 1024;

/**
 * The record a file's text holds: its last whole version, a line of JSON ended by a newline. An append
 * that never finished (a crash, a full disk, a power cut that left zeros) leaves a tail without a
 * newline: the version before it counts, as it did until then, and the file is not appended to
 * (`appendable`) before it is written anew. A last whole line that does not parse is an unreadable
 * record, never skipped (an edit gone wrong must not bring back an older state unnoticed). A file
 * written whole (pretty-printed by an earlier agent, or by hand) is one version. Pure.
 */
export function lastVersion(text: string): { value: unknown; appendable: boolean } {
  const end = text.lastIndexOf("\n");
  if (!text.startsWith('{"') || end < 0) return { value: JSON.parse(text), appendable: false };
  const start = text.lastIndexOf("\n", end - 1) + 1;
  return { value: JSON.parse(text.slice(start, end)), appendable: end === text.length - 1 };
}

/** What tells one version of a record's file from another (see Registry.readCache), and its size. */
function fileIdentity(file: string): { identity: string; size: number } {
  const st = statSync(file, { bigint: true });
  return { identity: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`, size: Number(st.size) };
}

/** A record the caller may change, its migration frozen as checkMigration leaves it. */
function copyOf(record: MigrationRecord): MigrationRecord {
  const copy = structuredClone(record);
  copy.migration = Object.freeze({ ...copy.migration, dataDirs: Object.freeze([...copy.migration.dataDirs]) });
  return copy;
}

/** A record as last read or written by this agent, with what its file was then. */
interface CachedRead {
  readonly identity: string;
  readonly size: number;
  /** the file ends with this record's version, whole: the next version may be appended to it */
  readonly appendable: boolean;
  readonly record: MigrationRecord;
}

/** fileIdentity, or undefined when the file cannot be looked at (it is then written anew). */
function statIfThere(file: string): { identity: string; size: number } | undefined {
  try {
    return fileIdentity(file);
  } catch {
    return undefined;
  }
}

export class Registry {
  /**
   * Each record as last read, by the identity of the file it was read from (inode, size, times): a
   * record is only ever changed by appending a version to its file or renaming a new file over it, and
   * either changes the identity, so a file that still has that identity still holds that record. A
   * preflight looks at every record on the front for an unfinished migration of its site: one stat
   * each, instead of reading and checking each again.
   * A record this process writes is kept as written, with the identity its file has just after: the
   * writer holds the record's lock (or is registering it), so nobody else replaced it in between.
   *
   * Records are small files on the agent's own disk: they are read and looked at synchronously (a
   * stat, a read of a few kB), which costs far less than a round trip through the thread pool.
   */
  private readonly readCache = new Map<string, CachedRead>();

  constructor(readonly stateDir: string) {}

  private file(id: string): string {
    return join(this.stateDir, "migrations", `${checkMigrationId(id)}.json`);
  }

  async register(migration: MigrationSpec, local: boolean): Promise<MigrationRecord> {
    const existing = await this.find(migration.id);
    if (existing) {
      if (JSON.stringify(existing.migration) !== JSON.stringify(migration) || existing.local !== local) {
        throw new QmError("CONFLICT", `migration ${migration.id} is already registered with other paths`, {});
      }
      return existing;
    }
    const record: MigrationRecord = { migration, local, registeredAt: new Date().toISOString(), ledger: [], operations: {}, state: INITIAL_STATE };
    await this.save(record);
    return record;
  }

  /** The record as it is on disk now (a copy the caller may change), or undefined when there is none. */
  async find(id: string): Promise<MigrationRecord | undefined> {
    const file = this.file(id);
    let identity: string;
    let size: number;
    let text: string;
    try {
      // the identity first, then the content: content newer than its identity is read again next time, never the reverse
      ({ identity, size } = fileIdentity(file));
      const cached = this.readCache.get(id);
      if (cached?.identity === identity) return copyOf(cached.record);
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.readCache.delete(id);
        return undefined;
      }
      throw err;
    }
    const { value, appendable } = lastVersion(text);
    const record = value as MigrationRecord;
    record.migration = checkMigration(record.migration, { storedRecord: true });
    // read after its identity: only a file that is still exactly this text is appended to
    this.readCache.set(id, { identity, size, appendable: appendable && Buffer.byteLength(text) === size, record: copyOf(record) });
    return record;
  }

  async get(id: string): Promise<MigrationRecord> {
    const record = await this.find(id);
    if (!record) throw new QmError("NOT_REGISTERED", `migration ${id} is not registered on this agent (run preflight first)`, {});
    return record;
  }

  async list(): Promise<MigrationRecord[]> {
    return Promise.all((await this.ids()).map((id) => this.get(id)));
  }

  /** The ids of every record on disk (their files are not read). */
  async ids(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(join(this.stateDir, "migrations"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    return names.filter((n) => n.endsWith(".json") && !n.startsWith(".")).map((n) => n.slice(0, -5)).sort();
  }

  /** Keeps the result of one Apply in the record, with the same atomic write as the ledger. */
  async recordOperation(record: MigrationRecord, key: string, result: { changes: ChangeRecord[] } | { error: { code: string; message: string } }): Promise<void> {
    const operations = (record.operations ??= {});
    const count = (operations[key]?.count ?? 0) + 1;
    operations[key] = { at: new Date().toISOString(), count, ...structuredClone(result) };
    await this.save(record);
  }

  /**
   * Writes the record as it is now, durably: appended to its file when the file is as this agent last read
   * or wrote it and stays under COMPACT_AT_BYTES, else written anew. Keeps it as the cached read of its
   * file (see readCache).
   */
  async save(record: MigrationRecord): Promise<void> {
    const id = record.migration.id;
    const file = this.file(id);
    const cached = this.readCache.get(id);
    this.readCache.delete(id);
    const line = `${JSON.stringify(record)}\n`;
    const now = cached?.appendable ? statIfThere(file) : undefined;
    if (cached && now?.identity === cached.identity && cached.size + Buffer.byteLength(line) <= COMPACT_AT_BYTES) {
      await appendToFile(file, line, cached.size);
    } else {
      await writeFileAtomic(file, line);
    }
    try {
      this.readCache.set(id, { ...fileIdentity(file), appendable: true, record: copyOf(record) });
    } catch {
      // written, and durable: only the cache is skipped, and the next look reads the file
    }
  }

  /**
   * Deletes the records of migrations that ended on this front (finished, or rolled back) more than
   * `keepMs` before `now`, each under its lock; an unfinished one, or one that cannot be read, is never
   * deleted. Returns the ids deleted.
   */
  async pruneEnded(keepMs: number, now: number): Promise<string[]> {
    const pruned: string[] = [];
    const expired = (record: MigrationRecord | undefined): boolean => {
      const ended = record ? frontStateOf(record).ended : undefined;
      return record !== undefined && ended !== undefined && Date.parse(ended.at) + keepMs <= now && !isUnfinished(record);
    };
    for (const id of await this.ids()) {
      if (!expired(await this.find(id).catch(() => undefined))) continue;
      const done = await withRecordLock(this.stateDir, id, { what: "the agent's pruning of ended migrations" }, async () => {
        // read again under the lock: `parked restore` may have changed it meanwhile
        if (!expired(await this.find(id).catch(() => undefined))) return false;
        await rm(this.file(id));
        return true;
      }).catch(() => false);
      if (done) pruned.push(id);
    }
    return pruned;
  }

  /** Marks the migration as put back by `parked restore` on this front (see MigrationRecord.restoredOnFrontAt). */
  async markRestoredOnFront(record: MigrationRecord): Promise<void> {
    record.restoredOnFrontAt ??= new Date().toISOString();
    await this.save(record);
  }

  /**
   * The ledger of one migration as one Apply writes it, inside its record (see SiteOperations.apply),
   * with fewer writes than `ledger`. A save that records an intent (a data dir `moving`, a new entry)
   * writes the whole record at once, with whatever else the Apply changed in it since: its state, begun;
   * the previous rename's result. A save that only settles entries that are `moving` on disk (a rename's
   * result, or an intent that did not run) is kept in the record, and written by the next intent or by
   * the Apply's result (recordOperation), which comes before its answer. Until then the record on disk
   * says `moving` for that data dir: what a crash leaves is read by recovery as "may have been renamed",
   * and the data dir is looked for where it may be.
   */
  applyLedger(record: MigrationRecord): Ledger {
    let onDisk = structuredClone(record.ledger);
    return {
      entries: async () => structuredClone(record.ledger),
      save: async (entries) => {
        record.ledger = structuredClone(entries);
        if (onlySettles(onDisk, entries)) return;
        await this.save(record);
        onDisk = structuredClone(entries);
      },
    };
  }

  /** The ledger of one migration, saved (atomically, fsynced) inside its record. */
  ledger(record: MigrationRecord): Ledger {
    return {
      entries: async () => structuredClone(record.ledger),
      save: async (entries) => {
        record.ledger = structuredClone(entries);
        await this.save(record);
      },
    };
  }
}
