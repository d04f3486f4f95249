// Where a hook's output goes while it runs: appended to a file in the migration's journal folder, capped
// with its tail kept, so that a hook printing gigabytes costs neither memory nor disk; with no journal to
// write to, only a bounded tail in memory. Either way a failed hook's last lines can be shown.
import type { FileHandle } from "node:fs/promises";
import { mkdir, open } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { describeError } from "../shared/errors.js";
import { lastLines, readLastLines } from "./tailLines.js";

/** what a hook's file keeps at most: past it, the file is rewritten with its last half */
export const HOOK_OUTPUT_CAP = 1024 * 1024;
/** what is kept in memory when there is no file (or it could not be written) */
export const MEMORY_TAIL_BYTES = 64 * 1024;
/** the smallest cap: the cut marker and a useful tail must fit in half of it */
const MIN_CAP = 1024;

/** A hook run's file, relative to the journal folder: `hooks/03-updatedb.log`, `hooks/05-deploy-undo.log`. */
export function hookOutputName(run: number, hook: string, undo: boolean): string {
  return join("hooks", `${String(run).padStart(2, "0")}-${hook}${undo ? "-undo" : ""}.log`);
}

/** The first line of a file that was cut: how many bytes of the output before it are gone. */
export function cutMarker(bytes: number): string {
  return `[… ${bytes.toLocaleString("en-US")} earlier bytes cut …]\n`;
}

/**
 * A Writable for a hook's combined stdout and stderr. Each write completes only once it is on its way to
 * the file, so a pipe into it holds a fast hook back to the disk's pace. A file that cannot be written
 * (a full state dir) does not fail the hook: its output is kept in memory from then on, bounded, and
 * `fileError` says why.
 */
export class HookOutput extends Writable {
  /** bytes in the file, the cut marker included */
  private size = 0;
  /** output bytes received in all, and how many of them the file still holds */
  private received = 0;
  private kept = 0;
  private memory: Buffer[] = [];
  private memoryBytes = 0;
  private fileErr: unknown;

  private constructor(
    /** where the output goes; undefined: in memory only */
    readonly file: string | undefined,
    private fh: FileHandle | undefined,
    private readonly cap: number,
  ) {
    super({ highWaterMark: 64 * 1024 });
  }

  /** A new file (an older one of that name is replaced) of mode 0600 in a folder of mode 0700: drush may print credentials. */
  static async toFile(file: string, cap = HOOK_OUTPUT_CAP): Promise<HookOutput> {
    if (cap < MIN_CAP) throw new RangeError(`hook output cap ${cap} < ${MIN_CAP}`);
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    // read and write: a cut reads the tail back
    return new HookOutput(file, await open(file, "w+", 0o600), cap);
  }

  static inMemory(): HookOutput {
    return new HookOutput(undefined, undefined, 0);
  }

  /** why the file stopped taking the output (the last lines then come from memory) */
  get fileError(): unknown {
    return this.fileErr;
  }

  /** The last `n` lines, cleaned for a person (see tailLines.ts); once the output is finished. */
  lastLines(n: number): Promise<string[]> {
    if (this.file !== undefined && this.fileErr === undefined) return readLastLines(this.file, n);
    return Promise.resolve(lastLines(Buffer.concat(this.memory), n));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.received += chunk.length;
    if (!this.fh) {
      this.remember(chunk);
      callback();
      return;
    }
    this.append(this.fh, chunk).then(
      () => callback(),
      async (err: unknown) => {
        // the output goes on to memory: a stream error would stop reading the hook, which would then hang
        this.fileErr = err;
        this.remember(chunk);
        await this.closeFile();
        callback();
      },
    );
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.closeFile().then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.closeFile().then(
      () => callback(err),
      () => callback(err),
    );
  }

  private async append(fh: FileHandle, chunk: Buffer): Promise<void> {
    if (this.size + chunk.length <= this.cap) {
      await writeAll(fh, chunk, this.size);
      this.size += chunk.length;
      this.kept += chunk.length;
      return;
    }
    // over the cap: the file is written again with only the last half of the output (this chunk's end
    // included), after a line saying how much is gone; read first, so writing over it loses nothing
    const keep = Math.floor(this.cap / 2);
    const fromChunk = Math.min(chunk.length, keep);
    const fromFile = Math.min(this.kept, keep - fromChunk);
    const tail = Buffer.alloc(fromFile + fromChunk);
    const { bytesRead } = await fh.read(tail, 0, fromFile, this.size - fromFile);
    if (bytesRead !== fromFile) throw new Error(`${this.file}: read ${bytesRead} of ${fromFile} bytes`);
    chunk.copy(tail, fromFile, chunk.length - fromChunk);
    const body = Buffer.concat([Buffer.from(cutMarker(this.received - tail.length)), tail]);
    await writeAll(fh, body, 0);
    await fh.truncate(body.length);
    this.size = body.length;
    this.kept = tail.length;
  }

  private remember(chunk: Buffer): void {
    this.memory.push(chunk);
    this.memoryBytes += chunk.length;
    // trimmed when twice the bound: a copy now and then, not one per chunk
    if (this.memoryBytes > 2 * MEMORY_TAIL_BYTES) {
      const all = Buffer.concat(this.memory);
      this.memory = [Buffer.from(all.subarray(all.length - MEMORY_TAIL_BYTES))];
      this.memoryBytes = MEMORY_TAIL_BYTES;
    }
  }

  private async closeFile(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    try {
      await fh?.close();
    } catch (err) {
      this.fileErr ??= err;
    }
  }
}

/** Where a hook's output was kept, for its failure's acknowledgement. */
export function describeOutput(output: HookOutput): string {
  if (output.file === undefined) return "kept in memory";
  return output.fileError === undefined ? output.file : `${output.file} could not be written: ${describeError(output.fileError)}`;
}

async function writeAll(fh: FileHandle, bytes: Buffer, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}
