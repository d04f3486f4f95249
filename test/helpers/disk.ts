// Small filesystems for the full-disk tests: a tmpfs mounted over a folder (its content kept), filled
// by test/helpers/fill-disk.mjs. Mounting needs root: callers skip with a message otherwise.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const isRoot = process.getuid?.() === 0;

/** A hook that fills the filesystem holding `file`, then runs `then` (a hook's own argv), if given. */
export function fillDiskCommand(file: string, then: readonly string[] = []): string[] {
  return [process.execPath, path.join(path.dirname(fileURLToPath(import.meta.url)), "fill-disk.mjs"), file, ...then];
}

/** Fills the filesystem holding `file` (by writing `file`) until nothing more fits, then frees `leave` bytes of it. */
export function fillDisk(file: string, leave = 0): void {
  const [node, ...args] = fillDiskCommand(file);
  execFileSync(node as string, args);
  if (leave > 0) fs.truncateSync(file, Math.max(0, fs.statSync(file).size - leave));
}

/**
 * Puts `dir` on a tmpfs of `size` (e.g. "8m"), keeping what it holds and its mode and owner; returns
 * the unmount. Processes that have the folder open keep the old one: use it before they do.
 */
export function mountTmpfsOver(dir: string, size: string): () => void {
  const st = fs.statSync(dir);
  const aside = `${dir}.before-tmpfs`;
  fs.renameSync(dir, aside);
  fs.mkdirSync(dir);
  const mode = (st.mode & 0o7777).toString(8);
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=${mode},uid=${st.uid},gid=${st.gid}`, "tmpfs", dir]);
  execFileSync("cp", ["-a", `${aside}/.`, `${dir}/`]);
  fs.rmSync(aside, { recursive: true, force: true });
  // lazy: an agent that still has a file open there must not make the cleanup fail
  return () => execFileSync("umount", ["-l", dir]);
}
