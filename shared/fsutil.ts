// Small filesystem helpers with the durability the journal and the ledgers need: what they report as
// written is on disk (fsync of the file and of the folder that holds a new name), and what fails part-way
// leaves nothing behind (no temporary file, no torn line).
import { randomBytes } from "node:crypto";
import { closeSync, constants, fdatasync, fsync, ftruncateSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { lstat, mkdir, open } from "node:fs/promises";
import { promisify } from "node:util";
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

const fsyncFd = promisify(fsync);
const fdatasyncFd = promisify(fdatasync);

/**
 * Writes a small file in a folder on a local disk (a record, a lock, the journal's plan) so that a crash
 * leaves either the old or the new content: temp file, fsync, rename, fsync of the folder. A write that
 * fails (a full disk) removes its temp file and throws IO naming `path`. The calls that only touch the
 * page cache (open, write, close, rename) are made at once, synchronously, and only the two fsyncs,
 * which wait for the disk, go to the thread pool: six hand-offs to the pool and back fewer per write,
 * and an fsync that the disk holds up (another process's large write-back) never blocks the event loop.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  let fd: number | undefined;
  try {
    try {
      fd = openSync(tmp, "wx", mode);
    } catch (err) {
      // the folder is made (durably) only when it is missing: most writes replace a file in a folder that is there
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      await mkdirDurable(dir);
      fd = openSync(tmp, "wx", mode);
    }
    writeFileSync(fd, data);
    await fsyncFd(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeQuietly(fd);
    try {
      rmSync(tmp, { force: true });
    } catch {
      // nothing more to do: the write's own error is the one to report
    }
    throw fsError(err, path, "write");
  }
  const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fsyncFd(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already failed: the caller reports the first error
  }
}

/**
 * Appends `line` to the end of `file`, which is there and `size` bytes long, and flushes it (fdatasync).
 * When the write or the flush fails, the file is cut back to `size`, so that it reads as it did, and IO
 * names `file`. One append to a file nobody holds open (the agent's records: a file per migration, a
 * few writes each); GroupCommitFile is for a file appended to many times. Only the flush goes to the
 * thread pool.
 */
export async function appendToFile(file: string, line: string, size: number): Promise<void> {
  let fd: number;
  try {
    // never made here: a file that went away since it was looked at is an error, not a new file
    fd = openSync(file, constants.O_WRONLY | constants.O_APPEND);
  } catch (err) {
    throw fsError(err, file, "write");
  }
  try {
    const bytes = Buffer.from(line);
    // a short write (the disk filling up) goes on until the disk refuses outright
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
    await fdatasyncFd(fd);
  } catch (err) {
    try {
      ftruncateSync(fd, size);
    } catch {
      // a tail left behind has no newline: its reader takes it for an append that never finished
    }
    throw fsError(err, file, "write");
  } finally {
    closeSync(fd);
  }
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
 * One file's appends with group commit: each line's promise resolves once it is whole and fsynced, as
 * with one append each, but the lines given while a write is on its way go out together, in order,
 * with one write and one fsync. Thirty-two fronts acknowledging at once cost one or two fsyncs, not
 * thirty-two. When a write fails, every line of it fails and none of it stays in the file.
 *
 * The file stays open between writes, its length known: a torn tail is looked for once, when it is
 * opened, and again only after a write whose cutting back failed too. Only this object may append to
 * the file while it is open (the journal's writer holds the site lock); close() when done.
 */
export class GroupCommitFile {
  private readonly queue: Array<{ line: string; settle: (err?: unknown) => void }> = [];
  /** the writes under way, until the queue is empty */
  private draining: Promise<void> | undefined;
  /** the open file and the length of its whole lines; undefined: opened (and checked) by the next write */
  private file: { fh: FileHandle; whole: number } | undefined;

  constructor(readonly path: string) {}

  append(line: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ line, settle: (err) => (err === undefined ? resolve() : reject(err)) });
      this.draining ??= this.drain();
    });
  }

  /** Waits for the lines given so far, then closes the file; a later append opens it again. */
  async close(): Promise<void> {
    await this.draining;
    const file = this.file;
    this.file = undefined;
    await file?.fh.close();
  }

  private async drain(): Promise<void> {
    // the lines given in the same turn as the first (each host's intent of a step, given one after the
    // other by a loop) go out with it: otherwise only the first would, and the others would wait for its fsync
    await undefined;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      let failure: unknown;
      try {
        await this.write(batch.map((b) => `${b.line}\n`).join(""));
      } catch (err) {
        failure = err ?? new Error("append failed");
      }
      for (const b of batch) b.settle(failure);
    }
    // in the same step as finding the queue empty: a line given after this starts a new drain
    this.draining = undefined;
  }

  private async write(text: string): Promise<void> {
    this.file ??= await openWholeLines(this.path);
    const file = this.file;
    const bytes = Buffer.from(text, "utf8");
    try {
      await file.fh.appendFile(bytes);
      await file.fh.sync();
      file.whole += bytes.length;
    } catch (err) {
      try {
        await file.fh.truncate(file.whole);
      } catch {
        // not cut back: the next write opens the file again and cuts off what is torn
        this.file = undefined;
        await file.fh.close().catch(() => undefined);
      }
      throw err;
    }
  }
}

/** Opens a file of lines for appending, a torn last line cut off. */
async function openWholeLines(path: string): Promise<{ fh: FileHandle; whole: number }> {
  const fh = await open(path, "a+", 0o600);
  try {
    const { size } = await fh.stat();
    const whole = await wholeLinesLength(fh);
    if (whole < size) await fh.truncate(whole);
    return { fh, whole };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}
