// The per-site lock (DESIGN §7): a file per site under the state dir, created exclusively, naming the
// migration and the controller process that holds it, so that running can be told from interrupted.
// Taking over an interrupted migration's lock (resume, rollback) is atomic too: see takeOver.
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { open, readFile, readdir, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { QmError, fsError } from "../shared/errors.js";
import { fsyncDir, mkdirDurable, writeFileAtomic } from "../shared/fsutil.js";
import { processStartTime } from "../shared/processes.js";

/** Who holds a site lock: the migration, and the controller process (to tell running from interrupted). */
export interface LockHolder {
  readonly migrationId: string;
  /** 0: held for the migration by no process (a run that ended needing attention handed it back) */
  readonly pid: number;
  /** the process's start time in clock ticks since boot (/proc/<pid>/stat field 22), so a reused pid is not mistaken for it */
  readonly startTime: string;
  readonly host: string;
  /** the kernel's boot id: after a reboot, the same pid and start time are another process */
  readonly bootId?: string;
  /** unique to this holding: names the marker of the one process that may take over from it */
  readonly token?: string;
}

let bootIdCache: string | undefined;
function bootId(): string {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      bootIdCache = "";
    }
  }
  return bootIdCache;
}

function thisProcess(migrationId: string): LockHolder {
  return { migrationId, pid: process.pid, startTime: processStartTime(process.pid) ?? "", host: hostname(), bootId: bootId(), token: randomBytes(8).toString("hex") };
}

/** The token that names a holder's successor marker; a lock written by 0.1.0 or by hand has none: its text's hash stands in. */
function tokenOf(holder: LockHolder, text: string): string {
  return holder.token && /^[0-9a-f]{1,64}$/.test(holder.token) ? holder.token : `h${createHash("sha256").update(text).digest("hex").slice(0, 16)}`;
}

interface Link {
  readonly holder: LockHolder;
  readonly token: string;
}

/**
 * Per-site lock: a file created exclusively, naming the migration and the controller process. Not
 * stolen silently.
 *
 * A takeover must not be a read, a check and a write that two processes can interleave. So the lock is
 * a chain: `<site>.lock` names a holder; `<site>.lock.next-<token>`, created exclusively, names the one
 * process that took over from the holder with that token; and so on. The holder is the chain's last
 * link. To take over, a process creates the marker of the last link (only one can), checks that the
 * chain still ends with it, then writes itself into `<site>.lock` and removes the markers behind it.
 */
export class SiteLock {
  private constructor(
    private readonly stateDir: string,
    private readonly sites: readonly string[],
    /** this process's holding */
    private readonly self: LockHolder,
  ) {}

  static file(stateDir: string, site: string): string {
    return join(stateDir, "locks", `${site}.lock`);
  }

  private static marker(stateDir: string, site: string, after: Link): string {
    return `${SiteLock.file(stateDir, site)}.next-${after.token}`;
  }

  private static async read(file: string): Promise<Link | undefined> {
    let text: string;
    try {
      text = (await readFile(file, "utf8")).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    let holder: LockHolder;
    try {
      holder = JSON.parse(text) as LockHolder;
      if (typeof holder?.migrationId !== "string") throw new Error();
    } catch {
      // a hand-made or truncated lock file: the first word is taken as the migration id
      holder = { migrationId: text.split(/\s/)[0] || "?", pid: 0, startTime: "", host: "" };
    }
    return { holder, token: tokenOf(holder, text) };
  }

  /** The lock file and the markers that follow it, in order; empty when the site is not locked. */
  private static async chain(stateDir: string, site: string): Promise<Link[]> {
    const links: Link[] = [];
    let link = await SiteLock.read(SiteLock.file(stateDir, site));
    // tokens are unique, so a chain cannot loop; the bound is against a hand-made one that does
    while (link && links.length < 64) {
      links.push(link);
      link = await SiteLock.read(SiteLock.marker(stateDir, site, link));
    }
    return links;
  }

  /** Who holds the site's lock: the last link of its chain. */
  static async holder(stateDir: string, site: string): Promise<LockHolder | undefined> {
    return (await SiteLock.chain(stateDir, site)).at(-1)?.holder;
  }

  /** Whether the controller process that holds the lock is still running (on this host, since this boot). */
  static isAlive(holder: LockHolder): boolean {
    if (holder.pid <= 0 || holder.host !== hostname()) return false;
    if (holder.bootId && holder.bootId !== bootId()) return false;
    return processStartTime(holder.pid) === holder.startTime;
  }

  /** Creates `file` naming `holder`, or returns false when it exists. Nothing is left of a failed write. */
  private static async createExclusive(file: string, holder: LockHolder): Promise<boolean> {
    let fh;
    try {
      fh = await open(file, "wx", 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw fsError(err, file, "write the lock");
    }
    try {
      try {
        await fh.writeFile(`${JSON.stringify(holder)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      await rm(file, { force: true });
      throw fsError(err, file, "write the lock");
    }
    return true;
  }

  /** Locks every named site (the source and, when renamed, the new name), or none of them. */
  static async acquire(stateDir: string, sites: readonly string[], migrationId: string): Promise<SiteLock> {
    const dir = join(stateDir, "locks");
    await mkdirDurable(dir, 0o700);
    const me = thisProcess(migrationId);
    const taken: string[] = [];
    try {
      for (const site of new Set(sites)) {
        if (!(await SiteLock.createExclusive(SiteLock.file(stateDir, site), me))) {
          const holder = (await SiteLock.holder(stateDir, site))?.migrationId ?? "?";
          throw new QmError("LOCKED", `site ${site} is locked by migration ${holder}`, { key: site });
        }
        taken.push(site);
      }
      await fsyncDir(dir);
    } catch (err) {
      await Promise.all(taken.map((site) => rm(SiteLock.file(stateDir, site), { force: true })));
      throw err;
    }
    return new SiteLock(stateDir, taken, me);
  }

  /**
   * Takes over the locks of an interrupted migration (resume, rollback): each must name this migration
   * and no running process. A missing lock is taken again. Of two processes taking over at once, one
   * gets the lock and the other LOCKED.
   */
  static async takeOver(stateDir: string, sites: readonly string[], migrationId: string): Promise<SiteLock> {
    await mkdirDurable(join(stateDir, "locks"), 0o700);
    const unique = [...new Set(sites)];
    const me = thisProcess(migrationId);
    for (const site of unique) await SiteLock.takeOverOne(stateDir, site, me);
    return new SiteLock(stateDir, unique, me);
  }

  private static async takeOverOne(stateDir: string, site: string, me: LockHolder): Promise<void> {
    const { migrationId } = me;
    const file = SiteLock.file(stateDir, site);
    // each pass either ends or saw the chain grow or shrink under it: another process is at work
    for (let pass = 0; pass < 8; pass++) {
      const chain = await SiteLock.chain(stateDir, site);
      const last = chain.at(-1);
      if (!last) {
        if (await SiteLock.createExclusive(file, me)) return fsyncDir(join(stateDir, "locks"));
        continue;
      }
      if (last.holder.migrationId !== migrationId) {
        throw new QmError("LOCKED", `site ${site} is locked by migration ${last.holder.migrationId}`, { key: site });
      }
      if (SiteLock.isAlive(last.holder)) {
        throw new QmError("LOCKED", `migration ${migrationId} is running (controller pid ${last.holder.pid})`, { key: site });
      }
      const marker = SiteLock.marker(stateDir, site, last);
      if (!(await SiteLock.createExclusive(marker, me))) continue;
      await fsyncDir(join(stateDir, "locks"));
      // the chain may have been compacted since it was read: then this marker hangs off nothing
      const now = await SiteLock.chain(stateDir, site);
      if (now.at(-1)?.token !== me.token) {
        await rm(marker, { force: true });
        continue;
      }
      // the chain ends with this process: it holds the lock. Compacting is tidying only; the chain
      // stands as it is if it fails (a full disk)
      try {
        await writeFileAtomic(file, `${JSON.stringify(me)}\n`);
        for (const link of now.slice(0, -1)) await rm(SiteLock.marker(stateDir, site, link), { force: true });
      } catch {
        // kept as a chain
      }
      return;
    }
    throw new QmError("LOCKED", `migration ${migrationId}: another process is taking over its lock of ${site}`, { key: site });
  }

  /** Removes the lock: the migration is finished. */
  async release(): Promise<void> {
    await this.removeMarkers();
    for (const site of this.sites) await rm(SiteLock.file(this.stateDir, site), { force: true });
    await fsyncDir(join(this.stateDir, "locks")).catch(() => undefined);
  }

  /**
   * The run ends needing attention: the lock stays the migration's, so that nothing else starts on the
   * site, but no process holds it any more (resume and rollback take it over). Best effort: when it
   * cannot be written (a full disk), the lock names this process, which is not running once it exits.
   */
  async handBack(): Promise<void> {
    const holder: LockHolder = { migrationId: this.self.migrationId, pid: 0, startTime: "", host: "", token: randomBytes(8).toString("hex") };
    try {
      await this.removeMarkers();
      for (const site of this.sites) await writeFileAtomic(SiteLock.file(this.stateDir, site), `${JSON.stringify(holder)}\n`);
    } catch {
      // the lock names this process
    }
  }

  /**
   * Removes the takeover markers of this lock's sites, while this process holds it: its own, those left
   * behind a takeover, or by a process killed in the middle of one. A marker that names another running
   * process is that process's to remove (it is about to find that it lost).
   */
  private async removeMarkers(): Promise<void> {
    const dir = join(this.stateDir, "locks");
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    for (const site of this.sites) {
      for (const name of names.filter((n) => n.startsWith(`${site}.lock.next-`))) {
        const link = await SiteLock.read(join(dir, name));
        if (link && (link.holder.token === this.self.token || !SiteLock.isAlive(link.holder))) await rm(join(dir, name), { force: true });
      }
    }
  }
}
