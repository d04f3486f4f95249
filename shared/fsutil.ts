// Small filesystem helpers with the durability the journal and the ledgers need: what they report as
// written is on disk (fsync of the file and of the folder that holds a new name), and what fails part-way
// leaves nothing behind (no temporary file, no torn line).
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { lstat, mkdir, open, rename, rm } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import type { Stats } from "node:fs";
import { dirname, basename, join } from "node:path";
import { fsError } from "./errors.js";

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

/** Creates `dir` and its missing parents; each new folder's entry is fsynced in the folder that holds it. */
export async function mkdirDurable(dir: string, mode?: number): Promise<void> {
  const first = await mkdir(dir, { recursive: true, ...(mode === undefined ? {} : { mode }) });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await fsyncDir(dirname(d));
    if (d === first || dirname(d) === d) return;
  }
}

/**
 * Writes a file so that a crash leaves either the old or the new content: temp file, fsync, rename,
 * fsync of the folder. A write that fails (a full disk) removes its temp file and throws IO naming `path`.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdirDurable(dir);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw fsError(err, path, "write");
  }
  await fsyncDir(dir);
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * The length of `fh`'s content up to and including its last newline: what is after it is a torn line
 * (a write that failed part-way, or a crash before the line was whole).
 */
export async function wholeLinesLength(fh: FileHandle): Promise<number> {
  const { size } = await fh.stat();
  const chunk = Buffer.alloc(4096);
  for (let end = size; end > 0; ) {
    const start = Math.max(0, end - chunk.length);
    const { bytesRead } = await fh.read(chunk, 0, end - start, start);
    const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (nl >= 0) return start + nl + 1;
    end = start;
  }
  return 0;
}

/**
 * Appends lines, each whole or not at all, and fsyncs them before returning. A torn line left at the end
 * by an earlier failure is cut off first; a write that fails part-way (a full disk) is cut back before
 * the error is thrown. So the file is always whole lines, and later appends still parse.
 */
export async function appendLinesDurable(path: string, lines: readonly string[]): Promise<void> {
  const fh = await open(path, "a+", 0o600);
  try {
    const { size } = await fh.stat();
    const whole = await wholeLinesLength(fh);
    if (whole < size) await fh.truncate(whole);
    try {
      await fh.appendFile(lines.map((l) => `${l}\n`).join(""));
      await fh.sync();
    } catch (err) {
      await fh.truncate(whole).catch(() => undefined);
      throw err;
    }
  } finally {
    await fh.close();
  }
}

/**
 * One file's appends with group commit: each line's promise resolves once it is whole and fsynced, as
 * with appendLinesDurable, but the lines given while a write is on its way go out together, in order,
 * with one write and one fsync. Thirty-two fronts acknowledging at once cost one or two fsyncs, not
 * thirty-two. When a write fails, every line of it fails and none of it stays in the file.
 */
export class GroupCommitFile {
  private readonly queue: Array<{ line: string; settle: (err?: unknown) => void }> = [];
  private writing = false;

  constructor(readonly path: string) {}

  append(line: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ line, settle: (err) => (err === undefined ? resolve() : reject(err)) });
      if (!this.writing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0);
        let failure: unknown;
        try {
          await appendLinesDurable(
            this.path,
            batch.map((b) => b.line),
          );
        } catch (err) {
          failure = err ?? new Error("append failed");
        }
        for (const b of batch) b.settle(failure);
      }
    } finally {
      this.writing = false;
    }
  }
}
