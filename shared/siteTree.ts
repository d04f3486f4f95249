// The filesystem work of a migration on one host's root: read-only preflight checks, the data-dir
// renames (park, restore and their undos), site folder moves and guarded removals. Used by the agent
// on every front and by the controller for the hostmaster's own copy. Data dirs are only ever renamed.
import { readlink, realpath, rename, rmdir, stat } from "node:fs/promises";
import type { Stats } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { allInOrder } from "./allInOrder.js";
import { type ConfinedPath, type OpenDir, Root, isPlaceholder, isRealDirectory } from "./confined.js";
import { type ErrorCode, QmError, fsError } from "./errors.js";
import { lstatOrNull } from "./fsutil.js";
import type { EntryKindName } from "./wire.js";
import {
  type DataPlace,
  type MigrationSpec,
  PARK_FOLDER,
  newSiteRel,
  oldSiteRel,
  parkRel,
  placeRel,
} from "./migration.js";


/** Where one data dir of a migration is. Written before a rename (with `moving`) and after it. */
export interface LedgerEntry {
  dataDir: string;
  kind: "directory" | "symlink";
  linkTarget?: string;
  /**
   * its inode and birth time (a rename keeps both; an inode number alone is reused once freed): they
   * tell the data dir from anything else found at one of its places
   */
  ino?: number;
  born?: number;
  at: DataPlace;
  moving?: DataPlace;
}

const PLACES: readonly DataPlace[] = ["old", "park", "new"];

/** Durable record of a migration's data dirs on one host (the agent's state dir, or the controller's journal). */
export interface Ledger {
  entries(): Promise<LedgerEntry[]>;
  /**
   * Called by SiteTree.moveData with a rename's intent (the entry `moving`) before anything on disk
   * changes for it, and with its result (`moving` gone) after the rename is on disk.
   */
  save(entries: LedgerEntry[]): Promise<void>;
}

/**
 * What a change did. "found-at-destination": the ledger had the data dir elsewhere, but it was already
 * where it was to go (a rename recorded as done and lost in a crash, then undone by this move).
 */
export type ChangeResult = "renamed" | "already-done" | "absent" | "removed" | "rmdir-placeholder" | "found-at-destination";

export interface ChangeRecord {
  dataDir: string;
  from: string;
  to: string;
  kind: EntryKindName;
  linkTarget?: string;
  result: ChangeResult;
}

/** A preflight problem: a code of the catalogue, the path it is about, and what is wrong with it. */
export interface Problem {
  code: ErrorCode;
  path: string;
  message: string;
}

export interface DataDirInfo {
  dataDir: string;
  kind: EntryKindName;
  linkTarget?: string;
}

export interface PreflightReport {
  problems: Problem[];
  dataDirs: DataDirInfo[];
}

export interface PreflightOptions {
  /** The target site folder must not exist yet (false on a front that is the hostmaster: it is checked there once). */
  readonly targetMustBeAbsent: boolean;
  /** Data will be renamed into the target platform on this host, so it must share the park area's filesystem. */
  readonly restoresHere: boolean;
}

export interface MoveDataOptions {
  /**
   * An empty real directory at a destination (a placeholder) may be removed with rmdir and replaced.
   * Default: only when moving into the new site folder (`to === "new"`).
   */
  readonly placeholderOk?: boolean;
  /**
   * Called after a data dir's rename has happened on disk and before the ledger records it (the entry
   * still has `moving` set). Fault injection for tests; nothing else sets it.
   */
  readonly afterRename?: (dataDir: string) => void | Promise<void>;
}

export class SiteTree {
  /** Every path this tree touches is resolved by it. */
  readonly root: Root;

  constructor(root: string) {
    this.root = new Root(root);
  }

  /** `rel` under the root, confined to it: see Root.resolve. */
  resolve(rel: string): Promise<ConfinedPath> {
    return this.root.resolve(rel);
  }

  private async stat(rel: string): Promise<Stats | null> {
    return lstatOrNull(await this.resolve(rel));
  }

  async preflight(m: MigrationSpec, opts: PreflightOptions): Promise<PreflightReport> {
    const problems: Problem[] = [];
    const problem = (code: ErrorCode, path: string, message: string) => problems.push({ code, path, message });
    const oldRel = oldSiteRel(m);
    const newRel = newSiteRel(m);
    /** `look(rel)`, or undefined with a problem recorded when it is refused (a path outside the root). */
    const attempt = async <T>(rel: string, look: (rel: string) => Promise<T>): Promise<T | undefined> => {
      try {
        return await look(rel);
      } catch (err) {
        if (err instanceof QmError) {
          problem(err.code, rel, err.message);
          return undefined;
        }
        throw err;
      }
    };
    const tryStat = (rel: string) => attempt(rel, async (r) => ({ st: await this.stat(r) }));

    const site = await tryStat(oldRel);
    if (site && !site.st) problem("SOURCE_MISSING", oldRel, `site folder ${oldRel} does not exist`);
    else if (site?.st?.isSymbolicLink()) problem("SITE_IS_SYMLINK", oldRel, `site folder ${oldRel} is a symlink`);
    else if (site?.st && !site.st.isDirectory()) problem("SOURCE_MISSING", oldRel, `site folder ${oldRel} is not a directory`);

    if (opts.targetMustBeAbsent) {
      const target = await tryStat(newRel);
      if (target?.st) problem("TARGET_EXISTS", newRel, `target site folder ${newRel} already exists`);
    }
    const sitesRel = `${m.to}/sites`;
    const platform = await tryStat(sitesRel);
    if (platform && !platform.st?.isDirectory()) {
      problem("TARGET_PLATFORM_MISSING", sitesRel, `target platform ${m.to} is missing (no ${sitesRel} folder)`);
    }

    const parkDev = await attempt(parkRel(m.id), () => this.parkDevice(m.id));
    if (opts.restoresHere && parkDev !== undefined && platform?.st?.isDirectory() && platform.st.dev !== parkDev) {
      problem("CROSS_DEVICE", sitesRel, `${sitesRel} is on another filesystem than the park area ${PARK_FOLDER}: a rename would cross filesystems`);
    }

    const dataDirs: DataDirInfo[] = [];
    for (const dataDir of m.dataDirs) {
      const rel = placeRel(m, dataDir, "old");
      if (!site?.st?.isDirectory()) {
        dataDirs.push({ dataDir, kind: "absent" });
        continue;
      }
      const entry = await tryStat(rel);
      const st = entry?.st;
      if (!st) {
        dataDirs.push({ dataDir, kind: "absent" });
        continue;
      }
      if (st.isSymbolicLink()) {
        const linkTarget = await readlink(await this.resolve(rel));
        dataDirs.push({ dataDir, kind: "symlink", linkTarget });
        // the link is moved as it is: a relative one is read from its new folder from then on
        const dangling = opts.restoresHere && !isAbsolute(linkTarget) ? await this.danglingAtNewPlace(m, dataDir, linkTarget) : undefined;
        if (dangling) {
          problem(
            "DANGLING_SYMLINK",
            rel,
            `data dir ${rel} is a relative symlink (→ ${linkTarget}) that would dangle in ${newRel}: ${dangling} does not exist; make it absolute or move its target first`,
          );
        }
      } else if (st.isDirectory()) {
        dataDirs.push({ dataDir, kind: "directory" });
        const parent = (await tryStat(dirname(rel)))?.st;
        if (parent && parent.dev !== st.dev) {
          problem("MOUNT_POINT", rel, `data dir ${rel} is a mount point: it cannot be renamed`);
          continue;
        }
      } else {
        dataDirs.push({ dataDir, kind: "other" });
        problem("DATA_NOT_DIRECTORY", rel, `data dir ${rel} is neither a directory nor a symlink`);
        continue;
      }
      if (parkDev !== undefined && st.dev !== parkDev) {
        problem("CROSS_DEVICE", rel, `data dir ${rel} is on another filesystem than the park area ${PARK_FOLDER}: a rename would cross filesystems`);
      }
    }
    return { problems, dataDirs };
  }

  /**
   * Where a relative link target would point from the data dir's place in the new site folder, when
   * nothing is there: undefined when it resolves. The new site folder does not exist yet; what a link
   * reaches inside it is what push-site copies there from the old one (or a data dir moved there), so
   * that part is looked for in the old site folder.
   */
  private async danglingAtNewPlace(m: MigrationSpec, dataDir: string, linkTarget: string): Promise<string | undefined> {
    let sites: string;
    let oldSite: string;
    try {
      sites = await realpath(await this.resolve(`${m.to}/sites`));
      oldSite = await realpath(await this.resolve(oldSiteRel(m)));
    } catch {
      return undefined; // the target platform or the site is missing: reported as such
    }
    const newSite = join(sites, m.newSite);
    const pointsTo = resolve(dirname(join(newSite, dataDir)), linkTarget);
    const inNewSite = relative(newSite, pointsTo);
    const outside = inNewSite === ".." || inNewSite.startsWith(`..${sep}`) || isAbsolute(inNewSite);
    const probe = outside ? pointsTo : join(oldSite, inNewSite);
    try {
      await stat(probe);
      return undefined;
    } catch {
      return pointsTo;
    }
  }

  /** The device the park area is (or will be) on: that of its nearest existing ancestor. */
  private async parkDevice(migrationId: string): Promise<number> {
    for (const rel of [parkRel(migrationId), PARK_FOLDER]) {
      const st = await this.stat(rel);
      if (st) return st.dev;
    }
    // the root itself may be reached through a symlink: its device is that of where it leads
    return (await stat(this.root.path)).dev;
  }

  /**
   * Renames every data dir of the migration from one place to another, recording intent and result in
   * the ledger. Repeating it after it completed (or after a crash mid-way) finishes the work and
   * reports "already-done" for what was done. Never copies: EXDEV is an error.
   *
   * Every data dir is judged before anything is renamed (a misplaced one refuses the whole move), and
   * the intents of all the renames go to the ledger in one save: each data dir to be renamed is
   * `moving` on disk before the first rename, which recovery reads as "may have been renamed" and
   * settles by looking (whereIs). Each rename's result is saved after it.
   */
  async moveData(m: MigrationSpec, ledger: Ledger, from: DataPlace, to: DataPlace, opts: MoveDataOptions = {}): Promise<ChangeRecord[]> {
    const placeholderOk = opts.placeholderOk ?? to === "new";
    const entries = await ledger.entries();
    const changes: Array<ChangeRecord | undefined> = m.dataDirs.map(() => undefined);
    const renames: Array<{ i: number; entry: LedgerEntry; look: Look; placeholder: boolean }> = [];
    let settled = false;

    // every data dir is looked at once, before anything is renamed: data dirs are never inside one another,
    // so a rename changes nothing another one looks at, and renameHeld checks again, under its folders held
    // open, that what it renames is still what was looked at
    const looks = await this.checkDestinations(m, from, to, placeholderOk);
    for (const [i, dataDir] of m.dataDirs.entries()) {
      const look = looks[i] as Look;
      const { srcRel, dstRel, src, dst, s, d } = look;
      let entry = entries.find((e) => e.dataDir === dataDir);
      const record = (result: ChangeResult): void => {
        changes[i] = changeRecord(dataDir, srcRel, dstRel, entry, result);
      };

      if (!entry) {
        // Only the first move (out of the old site folder) discovers data dirs; absent ones stay absent.
        if (from !== "old" || !s) {
          record("absent");
          continue;
        }
        if (!s.isDirectory() && !s.isSymbolicLink()) {
          throw new QmError("PRECONDITION", `data dir ${srcRel} is neither a directory nor a symlink`, { path: srcRel });
        }
        entry = s.isSymbolicLink()
          ? { dataDir, kind: "symlink", linkTarget: await readlink(src), ...identity(s), at: from }
          : { dataDir, kind: "directory", ...identity(s), at: from };
        entries.push(entry);
      }

      if (entry.at === to && entry.moving === undefined) {
        if (d) {
          record("already-done");
          continue;
        }
        // recorded as moved, and not there: a rename acknowledged before a crash that the disk lost
        const found = await this.whereIs(m, entry);
        if (found !== from) throw misplaced(m, entry, found);
        entry.at = from;
      }

      let placeholder = false;
      if (s && d) {
        if (placeholderOk && (await isPlaceholder(dst, d))) {
          placeholder = true;
        } else {
          throw new QmError("CONFLICT", `cannot move data dir ${srcRel}: ${dstRel} already exists`, { path: dstRel });
        }
      } else if (!s && d && (entry.moving === to || entry.at === to)) {
        // the rename happened and its record did not, or a crash left an intent that never ran
        entry.at = to;
        delete entry.moving;
        settled = true;
        record("already-done");
        continue;
      } else if (!s) {
        // not where the ledger says: a rename the disk lost in a crash (the ledger is on another
        // filesystem, or older than the fsync of renames) leaves it where it was before
        const found = await this.whereIs(m, entry);
        if (found === to) {
          entry.at = to;
          delete entry.moving;
          settled = true;
          record("found-at-destination");
          continue;
        }
        throw misplaced(m, entry, found, d ? dstRel : undefined);
      }
      renames.push({ i, entry, look, placeholder });
    }

    if (renames.length > 0) {
      // data goes only into a site folder that is already there; never create one around it (the park
      // folder is made, mode 0700, by renameHeld, once the intents are in the ledger)
      if (to !== "park") {
        const siteRel = to === "new" ? newSiteRel(m) : oldSiteRel(m);
        if (!isRealDirectory(await this.stat(siteRel))) {
          throw new QmError("PRECONDITION", `cannot move data into ${siteRel}: the site folder is not there`, { path: siteRel });
        }
      }
      for (const { entry } of renames) entry.moving = to;
      await ledger.save(entries);
    } else if (settled) {
      await ledger.save(entries);
    }

    for (const [n, { i, entry, look, placeholder }] of renames.entries()) {
      const { srcRel, dstRel, s, d } = look;
      try {
        await this.renameHeld(srcRel, dstRel, s as Stats, placeholder ? d : null, to === "park" ? PARK_MODE : undefined);
      } catch (err) {
        // this rename and the ones after it did not happen: their intents are withdrawn
        for (const later of renames.slice(n)) delete later.entry.moving;
        await ledger.save(entries).catch(() => undefined);
        throw fsError(err, srcRel, `rename to ${dstRel}`);
      }
      await opts.afterRename?.(entry.dataDir);
      entry.at = to;
      delete entry.moving;
      await ledger.save(entries);
      changes[i] = changeRecord(entry.dataDir, srcRel, dstRel, entry, placeholder ? "rmdir-placeholder" : "renamed");
    }

    if (from === "park") await this.removeEmptyParkFolders(m.id);
    return changes as ChangeRecord[];
  }

  /**
   * Where a ledger entry's data dir is on disk: the first of its places (the recorded one first) that
   * holds it. What is found must be the data dir itself: the same inode when the ledger has it, else
   * the same kind (and link target), and never an empty placeholder directory.
   */
  async whereIs(m: MigrationSpec, entry: LedgerEntry): Promise<DataPlace | undefined> {
    const order = [...new Set([entry.at, ...(entry.moving ? [entry.moving] : []), ...PLACES])];
    for (const place of order) {
      const path = await this.resolve(placeRel(m, entry.dataDir, place));
      const st = await lstatOrNull(path);
      if (st && (await isDataDir(entry, path, st))) return place;
    }
    return undefined;
  }

  /**
   * What is at each data dir's source and destination, in the order of the migration's data dirs; the
   * whole move is refused, before anything is renamed, when a destination holds something that must not
   * be replaced. Every data dir is looked at at once; the first refusal in their order is reported.
   */
  private async checkDestinations(m: MigrationSpec, from: DataPlace, to: DataPlace, placeholderOk: boolean): Promise<Look[]> {
    return allInOrder(
      m.dataDirs.map(async (dataDir): Promise<Look> => {
        const srcRel = placeRel(m, dataDir, from);
        const dstRel = placeRel(m, dataDir, to);
        const [src, dst] = await allInOrder([this.resolve(srcRel), this.resolve(dstRel)]);
        const [s, d] = await allInOrder([lstatOrNull(src), lstatOrNull(dst)]);
        const look = { srcRel, dstRel, src, dst, s, d };
        if (!s || !d) return look;
        const placeholder = placeholderOk && (await isPlaceholder(dst, d));
        if (!placeholder) throw new QmError("CONFLICT", `cannot move data dir ${srcRel}: ${dstRel} already exists`, { path: dstRel });
        return look;
      }),
    );
  }

  /** This migration's park folder (mode 0700), made with the park area when they are missing. */
  async makeParkFolder(migrationId: string): Promise<void> {
    (await this.root.openDir(parkRel(migrationId), { create: true, mode: PARK_MODE, purpose: "park" })).close();
  }

  /**
   * Drops this migration's park folder, and the park area itself, when they are empty. Another
   * migration making its folder there meanwhile finds the park area gone and makes it again
   * (Root.openDir looks again).
   */
  async removeEmptyParkFolders(migrationId: string): Promise<void> {
    for (const rel of [parkRel(migrationId), PARK_FOLDER]) {
      if (!(await this.stat(rel))) continue;
      const { dir, name } = await this.root.openParent(rel, { purpose: "rmdir" });
      try {
        await rmdir(dir.entry(name));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOTDIR") throw fsError(err, rel, "rmdir");
      } finally {
        dir.close();
      }
    }
  }

  /**
   * Removes a site folder without following any symlink, refusing while it holds a data dir that is a
   * symlink or is not empty. An absent folder counts as already removed.
   */
  async removeSiteFolder(siteRelPath: string, dataDirs: readonly string[]): Promise<ChangeRecord[]> {
    const abs = await this.resolve(siteRelPath);
    const st = await lstatOrNull(abs);
    const change = (result: ChangeResult): ChangeRecord[] => [
      { dataDir: "", from: siteRelPath, to: "", kind: st ? "directory" : "absent", result },
    ];
    if (!st) return change("already-done");
    if (!isRealDirectory(st)) {
      throw new QmError("PRECONDITION", `refusing to remove ${siteRelPath}: it is not a real directory`, { path: siteRelPath });
    }
    for (const dataDir of dataDirs) {
      const rel = `${siteRelPath}/${dataDir}`;
      const path = await this.resolve(rel);
      const d = await lstatOrNull(path);
      if (!d) continue;
      if (d.isSymbolicLink()) {
        throw new QmError("NOT_EMPTY", `refusing to remove ${siteRelPath}: data dir ${rel} is a symlink`, { path: rel });
      }
      // an empty leftover data dir is what a placeholder is: it goes with the folder
      if (!(await isPlaceholder(path, d))) {
        throw new QmError("NOT_EMPTY", `refusing to remove ${siteRelPath}: data dir ${rel} is not empty`, { path: rel });
      }
    }
    await this.removeHeld(siteRelPath, st);
    return change("removed");
  }

  /**
   * Renames `fromRel` to `toRel` through their folders held open (the destination's made when missing),
   * after checking that what is at `fromRel` is still what was looked at (`expected`), and at `toRel`
   * nothing or the empty placeholder looked at: a symlink swapped into either path after the checks is
   * never followed, and nothing else is moved. Both folders are fsynced before it returns, so the move
   * is on disk before a ledger or journal records it (they may be on another filesystem). The
   * destination's missing folders are made with `mode` (default: the umask's).
   */
  private async renameHeld(fromRel: string, toRel: string, expected: Stats, placeholder: Stats | null, mode?: number): Promise<void> {
    const from = await this.root.openParent(fromRel, { purpose: "rename" });
    let into: { dir: OpenDir; name: string } | undefined;
    try {
      // made only once the source's folder is held: a refused rename leaves no new folder behind
      into = await this.root.openParent(toRel, { create: true, purpose: "rename", ...(mode === undefined ? {} : { mode }) });
      const src = from.dir.entry(from.name);
      const dst = into.dir.entry(into.name);
      const [was, there] = await allInOrder([lstatOrNull(src), lstatOrNull(dst)]);
      if (!sameEntry(was, expected)) throw changed(fromRel);
      if (there && !(placeholder && sameEntry(there, placeholder))) throw new QmError("CONFLICT", `cannot move ${fromRel}: ${toRel} already exists`, { path: toRel });
      if (there) await rmdir(dst);
      await rename(src, dst);
      await allInOrder([from.dir.sync(), into.dir.sync()]);
    } finally {
      from.dir.close();
      into?.dir.close();
    }
  }

  /** Removes `rel` (a tree, a file or a link, never followed) through its folder held open, after checking it is still what was looked at. */
  private async removeHeld(rel: string, expected: Stats): Promise<void> {
    const { dir, name } = await this.root.openParent(rel, { purpose: "remove" });
    try {
      if (!sameEntry(await lstatOrNull(dir.entry(name)), expected)) throw changed(rel);
      await dir.removeTree(name, rel);
      await dir.sync();
    } finally {
      dir.close();
    }
  }

  /** Renames a whole site folder (the hostmaster's move to the new platform, or its undo). Idempotent. */
  async moveSiteFolder(fromRel: string, toRel: string): Promise<ChangeRecord[]> {
    const src = await this.resolve(fromRel);
    const dst = await this.resolve(toRel);
    const s = await lstatOrNull(src);
    const d = await lstatOrNull(dst);
    const change = (result: ChangeResult): ChangeRecord[] => [{ dataDir: "", from: fromRel, to: toRel, kind: "directory", result }];
    if (!s && d) return change("already-done");
    if (!s) throw new QmError("PRECONDITION", `site folder ${fromRel} does not exist`, { path: fromRel });
    if (!isRealDirectory(s)) {
      throw new QmError("PRECONDITION", `site folder ${fromRel} is not a real directory`, { path: fromRel });
    }
    if (d) throw new QmError("CONFLICT", `cannot move ${fromRel}: ${toRel} already exists`, { path: toRel });
    try {
      await this.renameHeld(fromRel, toRel, s, null);
    } catch (err) {
      throw fsError(err, fromRel, `rename to ${toRel}`);
    }
    return change("renamed");
  }

  /**
   * Deletes what the ledger says is parked (the hostmaster's stale copy only; fronts never call this).
   * A parked symlink is unlinked, never followed.
   */
  async discardParked(m: MigrationSpec, ledger: Ledger): Promise<ChangeRecord[]> {
    const entries = await ledger.entries();
    const changes: ChangeRecord[] = [];
    for (const entry of entries) {
      if (entry.at !== "park") continue;
      const rel = placeRel(m, entry.dataDir, "park");
      const st = await lstatOrNull(await this.resolve(rel));
      if (st) await this.removeHeld(rel, st);
      changes.push({ dataDir: entry.dataDir, from: rel, to: "", kind: entry.kind, result: st ? "removed" : "already-done" });
    }
    await ledger.save(entries.filter((e) => e.at !== "park"));
    await this.removeEmptyParkFolders(m.id);
    return changes;
  }
}

/** One data dir's source and destination in a move, and what lstat found at each. */
interface Look {
  readonly srcRel: string;
  readonly dstRel: string;
  readonly src: ConfinedPath;
  readonly dst: ConfinedPath;
  readonly s: Stats | null;
  readonly d: Stats | null;
}

/** The park area and a migration's park folder in it: its owner's only. */
const PARK_MODE = 0o700;

/** The same file system object (a rename keeps both numbers; a symlink swapped in has others). */
function sameEntry(st: Stats | null, expected: Stats): boolean {
  return st !== null && st.dev === expected.dev && st.ino === expected.ino && st.isDirectory() === expected.isDirectory() && st.isSymbolicLink() === expected.isSymbolicLink();
}

function changed(rel: string): QmError {
  return new QmError("OUTSIDE_ROOT", `refusing to act on ${rel}: it changed while it was checked (a symlink or another folder swapped in)`, { path: rel });
}

function changeRecord(dataDir: string, from: string, to: string, entry: LedgerEntry | undefined, result: ChangeResult): ChangeRecord {
  return {
    dataDir,
    from,
    to,
    kind: entry?.kind ?? "absent",
    ...(entry?.linkTarget === undefined ? {} : { linkTarget: entry.linkTarget }),
    result,
  };
}

function identity(st: Stats): Pick<LedgerEntry, "ino" | "born"> {
  return { ino: st.ino, ...(st.birthtimeMs ? { born: st.birthtimeMs } : {}) };
}

/** Whether what lstat found at `path` is the ledger entry's data dir (see SiteTree.whereIs). */
async function isDataDir(entry: LedgerEntry, path: ConfinedPath, st: Stats): Promise<boolean> {
  if (entry.kind === "symlink" ? !st.isSymbolicLink() : !isRealDirectory(st)) return false;
  if (entry.ino !== undefined) {
    // a birth time of 0: the filesystem keeps none
    return st.ino === entry.ino && (!entry.born || !st.birthtimeMs || st.birthtimeMs === entry.born);
  }
  if (entry.kind === "symlink") return entry.linkTarget === undefined || (await readlink(path)) === entry.linkTarget;
  return !(await isPlaceholder(path, st));
}

const PLACE_NAMES: Record<DataPlace, string> = { old: "its original path", park: "the park area", new: "the new site folder" };

/** A data dir not where the ledger says: found at another of its places, or nowhere (`occupied`: the destination holds something else). */
function misplaced(m: MigrationSpec, entry: LedgerEntry, found: DataPlace | undefined, occupied?: string): QmError {
  const recorded = placeRel(m, entry.dataDir, entry.at);
  if (found === undefined) {
    const others = PLACES.filter((p) => p !== entry.at).map((p) => placeRel(m, entry.dataDir, p));
    const also = occupied ? `; ${occupied} holds something else` : "";
    return new QmError("CONFLICT", `data dir ${entry.dataDir} is missing: not at ${recorded} where the record says, nor at ${others.join(" nor at ")}${also}`, {
      path: occupied ?? recorded,
    });
  }
  const rel = placeRel(m, entry.dataDir, found);
  return new QmError(
    "CONFLICT",
    `data dir ${entry.dataDir} is at ${PLACE_NAMES[found]} ${rel}, not at ${recorded} where the record says (a rename lost in a crash): nothing was moved`,
    { path: rel },
  );
}
