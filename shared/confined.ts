// Confinement to a host's root: the one place a relative wire path becomes an absolute path under the
// root, and the checks on what is found there. A ConfinedPath can only be made here, by Root.resolve.
import type { Stats } from "node:fs";
import { readdir, realpath } from "node:fs/promises";
import { dirname, join, sep } from "node:path";
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
