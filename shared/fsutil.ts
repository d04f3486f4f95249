// Small filesystem helpers with the durability the journal and the ledgers need.
import { constants } from "node:fs";
import { lstat, mkdir, open, rename } from "node:fs/promises";
import type { Stats } from "node:fs";
import { dirname, basename, join } from "node:path";

export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    // ENOTDIR: a parent is not a directory, so nothing can be at this path
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw err;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a file so that a crash leaves either the old or the new content: temp file, fsync, rename, fsync of the folder. */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, "w", mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dir);
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Appends one line and fsyncs it before returning. */
export async function appendLineDurable(path: string, line: string): Promise<void> {
  const fh = await open(path, "a", 0o600);
  try {
    await fh.appendFile(`${line}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
