// Confinement to a host's root: the one place a relative wire path becomes an absolute path under the
// root, and the checks on what is found there. A ConfinedPath can only be made here, by Root.resolve.
import { type Stats, constants, readlinkSync } from "node:fs";
import { type FileHandle, mkdir, open, readdir, realpath } from "node:fs/promises";
import { basename, dirname, join, sep } from "node:path";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { QmError } from "./errors.js";
import { lstatOrNull } from "./fsutil.js";

declare const brand: unique symbol;

/**
 * How often a path is looked at again when a folder on it is removed while it is being resolved or
 * opened: the park area's empty folders are removed by one migration while another makes its own
 * folder in them, and each look is a few system calls, so a second look almost always finds it stable.
 */
const VANISHED_ATTEMPTS = 5;

/** A folder on the way was removed while it was being opened (ENOENT): openDir looks again. */
class Vanished extends Error {}

/** An absolute path whose folder was checked to resolve inside the root. Usable wherever a string is. */
export type ConfinedPath = string & { readonly [brand]: "ConfinedPath" };

export class Root {
  private real: string | undefined;

  /** `path`: the root as configured (it may itself be reached through a symlink). */
  constructor(readonly path: string) {}

  /**
   * The absolute path of `rel`, after checking that the folder holding it (or its nearest existing
   * ancestor) resolves inside the root: a symlinked parent leading out of the root is refused with
   * OUTSIDE_ROOT. The final component is not followed, so a symlink there is the caller's to judge.
   */
  async resolve(rel: string): Promise<ConfinedPath> {
    const abs = join(this.path, rel);
    this.real ??= await realpath(this.path);
    let probe = dirname(abs);
    let real: string | undefined;
    for (let attempt = 1; real === undefined; attempt++) {
      while (!(await lstatOrNull(probe))) probe = dirname(probe);
      // removed meanwhile (another migration's empty park folder, say): its nearest existing ancestor is looked for again
      real = await realpath(probe).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" && attempt < VANISHED_ATTEMPTS ? undefined : Promise.reject(err)));
    }
    if (real !== this.real && !real.startsWith(this.real + sep)) {
      throw new QmError("OUTSIDE_ROOT", `${rel} resolves outside the root (through ${probe})`, { path: rel });
    }
    return abs as ConfinedPath;
  }

  /** What is at `rel` (lstat: its last component not followed), or null; refused as resolve refuses. */
  async lstat(rel: string): Promise<Stats | null> {
    return lstatOrNull(await this.resolve(rel));
  }

  /**
   * `rel` under the root as text for a message or a listing: nothing is checked, so it is a plain
   * string, never a ConfinedPath; what is done at a path goes through resolve (or lstat, openDir).
   */
  shown(rel: string): string {
    return join(this.path, rel);
  }

  /**
   * `rel` resolved, after checking that it is a real directory (never a symlink, which a process
   * working there would follow) or, unless `mustExist`, absent. `purpose` names the refused work.
   */
  async requireRealDirectory(rel: string, opts: { mustExist: boolean; purpose: string }): Promise<ConfinedPath> {
    const path = await this.resolve(rel);
    const st = await lstatOrNull(path);
    if (st && !isRealDirectory(st)) {
      throw new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: it is not a real directory`, { path: rel });
    }
    if (!st && opts.mustExist) throw new QmError("PRECONDITION", `refusing ${opts.purpose} on ${rel}: it does not exist`, { path: rel });
    return path;
  }

  /**
   * The directory `rel` held open (see OpenDir), checked to be inside the root: its nearest existing
   * ancestor is opened by its real path, and the descriptor's own path is checked against that; the
   * missing rest is made (when `create`, with `mode`) and opened one name at a time, never through a
   * symlink. Refused with OUTSIDE_ROOT when it leads out of the root or changes while it is opened;
   * PRECONDITION when it is missing and not to be made. Linux only (/proc).
   */
  async openDir(rel: string, opts: { create?: boolean; mode?: number; purpose: string }): Promise<OpenDir> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.openDirOnce(rel, opts);
      } catch (err) {
        // a folder on the way was removed while it was opened: everything is looked at again from the root
        if (!(err instanceof Vanished)) throw err;
        if (attempt >= VANISHED_ATTEMPTS) throw new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: it changed while it was checked`, { path: rel });
      }
    }
  }

  private async openDirOnce(rel: string, opts: { create?: boolean; mode?: number; purpose: string }): Promise<OpenDir> {
    const refuse = (why: string) => new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: ${why}`, { path: rel });
    const parts = rel.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.includes("..")) throw refuse("it is not a plain relative path");
    this.real ??= await realpath(this.path);
    const held = await this.openLiteral(parts);
    if (held) return new OpenDir(rel, held);
    let existing = parts.length;
    let real = this.real;
    for (; existing > 0; existing--) {
      const found = await realpath(join(this.path, ...parts.slice(0, existing))).catch((err: NodeJS.ErrnoException) =>
        err.code === "ENOENT" || err.code === "ENOTDIR" ? undefined : Promise.reject(err),
      );
      if (found !== undefined) {
        real = found;
        break;
      }
    }
    if (!this.inside(real)) throw refuse(`it resolves outside the root (through ${parts.slice(0, existing).join("/")})`);
    let dir = await open(real, DIRECTORY_NOFOLLOW).catch((err: NodeJS.ErrnoException) =>
      Promise.reject(err.code === "ENOENT" ? new Vanished() : err.code === "ELOOP" || err.code === "ENOTDIR" ? refuse("it changed while it was checked") : err),
    );
    try {
      const held = heldPath(dir);
      // removed since it was opened (it was empty): looked at again, not refused
      if (held === `${real} (deleted)`) throw new Vanished();
      if (held !== real) throw refuse("it changed while it was checked");
      for (const name of parts.slice(existing)) {
        if (!opts.create) throw new QmError("PRECONDITION", `refusing ${opts.purpose} on ${rel}: ${parts.slice(0, existing + 1).join("/")} does not exist`, { path: rel });
        const at = `/proc/self/fd/${dir.fd}/${name}`;
        // ENOENT: the folder held open was removed (it was empty), or what was just made in it was
        const made = await mkdir(at, opts.mode === undefined ? {} : { mode: opts.mode }).then(
          () => true,
          (err: NodeJS.ErrnoException) => (err.code === "EEXIST" ? false : Promise.reject(err.code === "ENOENT" ? new Vanished() : err)),
        );
        const next = await open(at, DIRECTORY_NOFOLLOW).catch((err: NodeJS.ErrnoException) =>
          Promise.reject(err.code === "ENOENT" ? new Vanished() : err.code === "ELOOP" || err.code === "ENOTDIR" ? refuse(`${name} in it is not a real directory`) : err),
        );
        // the new name is on disk before anything is moved into it
        if (made) await dir.sync().catch(() => undefined);
        closeLater(dir);
        dir = next;
        existing++;
      }
      return new OpenDir(rel, dir);
    } catch (err) {
      closeLater(dir);
      throw err;
    }
  }

  /**
   * The directory at `parts` under the root's real path, held open, when it is there and no symlink is on
   * the way (the common case, one open): the descriptor's own path is that very path. Null for anything
   * else (missing, a symlink on the way or at the end, a file), which openDirOnce looks at step by step.
   */
  private async openLiteral(parts: readonly string[]): Promise<FileHandle | null> {
    const literal = join(this.real as string, ...parts);
    const dir = await open(literal, DIRECTORY_NOFOLLOW).catch(() => null);
    if (dir && heldPath(dir) === literal) return dir;
    if (dir) closeLater(dir);
    return null;
  }

  /** The folder holding `rel`, held open (made when `create`), and the name of `rel` in it. */
  async openParent(rel: string, opts: { create?: boolean; mode?: number; purpose: string }): Promise<{ dir: OpenDir; name: string }> {
    const name = basename(rel);
    if (name === "" || name === "." || name === "..") throw new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: it is not a plain relative path`, { path: rel });
    return { dir: await this.openDir(dirname(rel), opts), name };
  }

  /**
   * An open descriptor of the real directory `rel` (made, mode 0700, when `create` and absent), for a
   * process to work in through `/proc/self/fd/N` whatever happens to the path afterwards. Its folder is
   * held open (openDir) and `rel` is opened in it, never through a symlink (O_NOFOLLOW): a rename or a
   * symlink swapped in meanwhile is refused (OUTSIDE_ROOT), never followed.
   */
  async openRealDirectory(rel: string, opts: { create: boolean; purpose: string }): Promise<FileHandle> {
    const { dir, name } = await this.openParent(rel, { purpose: opts.purpose });
    try {
      if (opts.create) await mkdir(dir.entry(name), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => (err.code === "EEXIST" ? undefined : Promise.reject(err)));
      return await open(dir.entry(name), DIRECTORY_NOFOLLOW).catch((err: NodeJS.ErrnoException) =>
        Promise.reject(
          err.code === "ENOENT"
            ? new QmError("PRECONDITION", `refusing ${opts.purpose} on ${rel}: it does not exist`, { path: rel })
            : err.code === "ELOOP" || err.code === "ENOTDIR"
              ? new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: it is not a real directory`, { path: rel })
              : err,
        ),
      );
    } finally {
      dir.close();
    }
  }

  private inside(real: string): boolean {
    return real === this.real || real.startsWith(`${this.real}${sep}`);
  }
}

/**
 * Where an open directory is now, as the kernel has it (` (deleted)` appended once it is removed).
 * Synchronous: procfs answers from the descriptor itself, no filesystem is asked, so a hung mount
 * cannot hold the event loop here.
 */
function heldPath(dir: FileHandle): string {
  return readlinkSync(`/proc/self/fd/${dir.fd}`);
}

/**
 * Closes a directory's descriptor without waiting for it: one opened to read has nothing to flush or
 * report, and waiting would cost a round trip to the thread pool on every rename.
 */
function closeLater(dir: FileHandle): void {
  dir.close().catch(() => undefined);
}

const DIRECTORY_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * A directory under a root, held open (Root.openDir). A name in it is reached through the descriptor
 * (`/proc/self/fd/N/<name>`: the kernel starts from the open directory, whatever has become of its path
 * since), so acting on it never re-resolves a path through a symlink swapped in after the checks. Only
 * the last component is looked up, and lstat, rename, rmdir and unlink do not follow it.
 */
export class OpenDir {
  constructor(
    readonly rel: string,
    private readonly handle: FileHandle,
  ) {}

  /** The path of `name` in this directory, for one system call. */
  entry(name: string): string {
    if (name === "" || name === "." || name === ".." || name.includes("/")) throw new Error(`not a name in a directory: ${name}`);
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  /** fsync of the directory: names added to it or removed from it are on disk. */
  sync(): Promise<void> {
    return this.handle.sync();
  }

  /**
   * Removes `name` and everything under it without following a symlink anywhere and without leaving
   * this filesystem: GNU rm, handed this directory as its descriptor 3, works from it with openat and
   * unlinkat (safe against a symlink swapped in while it walks). `rel` names it in the error.
   */
  async removeTree(name: string, rel: string): Promise<void> {
    const rm = spawn("rm", ["-r", "--one-file-system", "--", `/proc/self/fd/3/${name}`], { stdio: ["ignore", "ignore", "pipe", this.handle.fd], env: { LC_ALL: "C" } });
    let stderr = "";
    rm.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    const [code] = (await once(rm, "close")) as [number | null];
    if (code !== 0) {
      const why = stderr.trim().split("\n").at(-1)?.replaceAll("/proc/self/fd/3/", "") || `rm exited ${code}`;
      throw new QmError("IO", `remove: ${rel}: ${why}`, { path: rel });
    }
  }

  /** Closed without waiting (closeLater): nothing is flushed or reported when a directory read is closed. */
  close(): void {
    closeLater(this.handle);
  }
}

/** A directory itself, not a symlink to one (lstat's stats; null for nothing there). */
export function isRealDirectory(st: Stats | null): st is Stats {
  return st !== null && st.isDirectory() && !st.isSymbolicLink();
}

/**
 * An empty placeholder: an empty real directory (never a symlink, even to an empty one), which may be
 * removed with rmdir and replaced by a data dir. `st` is the lstat of `path`, null for nothing there.
 */
export async function isPlaceholder(path: ConfinedPath, st: Stats | null): Promise<boolean> {
  return isRealDirectory(st) && (await readdir(path)).length === 0;
}
