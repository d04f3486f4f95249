// Confinement to a host's root: the one place a relative wire path becomes an absolute path under the
// root, and the checks on what is found there. A ConfinedPath can only be made here, by Root.resolve.
import { type Stats, constants } from "node:fs";
import { type FileHandle, mkdir, open, readdir, readlink, realpath } from "node:fs/promises";
import { basename, dirname, join, sep } from "node:path";
import { QmError } from "./errors.js";
import { lstatOrNull } from "./fsutil.js";

declare const brand: unique symbol;

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
    while (!(await lstatOrNull(probe))) probe = dirname(probe);
    const real = await realpath(probe);
    if (real !== this.real && !real.startsWith(this.real + sep)) {
      throw new QmError("OUTSIDE_ROOT", `${rel} resolves outside the root (through ${probe})`, { path: rel });
    }
    return abs as ConfinedPath;
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
   * An open descriptor of the real directory `rel` (made, mode 0700, when `create` and absent), for a
   * process to work in through `/proc/self/fd/N` whatever happens to the path afterwards. The folder
   * holding it must resolve inside the root and is opened first; `rel` itself is never a symlink
   * (O_NOFOLLOW); both descriptors' real paths are checked against what was approved, so a rename or a
   * symlink swapped in meanwhile is refused (OUTSIDE_ROOT), never followed. Linux only (/proc).
   */
  async openRealDirectory(rel: string, opts: { create: boolean; purpose: string }): Promise<FileHandle> {
    const abs = await this.resolve(rel);
    const refuse = (why: string) => new QmError("OUTSIDE_ROOT", `refusing ${opts.purpose} on ${rel}: ${why}`, { path: rel });
    const missing = () => new QmError("PRECONDITION", `refusing ${opts.purpose} on ${rel}: it does not exist`, { path: rel });
    const parentReal = await realpath(dirname(abs)).catch((err: NodeJS.ErrnoException) => Promise.reject(err.code === "ENOENT" ? missing() : err));
    if (!this.inside(parentReal)) throw refuse(`it resolves outside the root (through ${dirname(rel)})`);
    const expected = join(parentReal, basename(abs));
    const parent = await open(parentReal, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) =>
      Promise.reject(err.code === "ENOENT" ? missing() : err.code === "ELOOP" || err.code === "ENOTDIR" ? refuse("its folder changed while it was checked") : err),
    );
    try {
      if ((await readlink(`/proc/self/fd/${parent.fd}`)) !== parentReal) throw refuse("its folder changed while it was checked");
      const inParent = `/proc/self/fd/${parent.fd}/${basename(abs)}`;
      if (opts.create) await mkdir(inParent, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => (err.code === "EEXIST" ? undefined : Promise.reject(err)));
      const dir = await open(inParent, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) =>
        Promise.reject(err.code === "ENOENT" ? missing() : err.code === "ELOOP" || err.code === "ENOTDIR" ? refuse("it is not a real directory") : err),
      );
      if ((await readlink(`/proc/self/fd/${dir.fd}`)) !== expected) {
        await dir.close();
        throw refuse("it changed while it was opened");
      }
      return dir;
    } finally {
      await parent.close();
    }
  }

  private inside(real: string): boolean {
    return real === this.real || real.startsWith(`${this.real}${sep}`);
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
