// The last lines of a hook's output, fit to be shown to a person: read from the end of its file (a
// capped log may still be a megabyte), each line cut to a sane length and stripped of terminal codes.
import { open } from "node:fs/promises";

export interface TailOptions {
  /** a longer line is cut, with "…" at its end */
  readonly maxLineChars?: number;
  /** never read more than this from the end, however long the lines are */
  readonly maxBytes?: number;
}

const TAIL_LINE_CHARS = 300;
const TAIL_MAX_BYTES = 64 * 1024;
const BLOCK = 8192;

/**
 * The last `n` lines of a file (its final newline does not start an empty line), read backwards block by
 * block until they are found or `maxBytes` were read: never the whole file. A line longer than what was
 * read comes back with the part that was read.
 */
export async function readLastLines(path: string, n: number, opts: TailOptions = {}): Promise<string[]> {
  const maxBytes = opts.maxBytes ?? TAIL_MAX_BYTES;
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const blocks: Buffer[] = [];
    let read = 0;
    let newlines = 0;
    // n lines need n newlines before them (and one after the last, usually), so n + 1 tells enough was read
    while (read < size && read < maxBytes && newlines <= n) {
      const length = Math.min(BLOCK, size - read, maxBytes - read);
      const block = Buffer.alloc(length);
      await fh.read(block, 0, length, size - read - length);
      blocks.unshift(block);
      read += length;
      for (const byte of block) if (byte === 0x0a) newlines++;
    }
    return lastLines(Buffer.concat(blocks), n, opts);
  } finally {
    await fh.close();
  }
}

/** The last `n` lines of some bytes, cleaned as readLastLines' are. */
export function lastLines(bytes: Buffer, n: number, opts: TailOptions = {}): string[] {
  const lines = bytes.toString("utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines.slice(-n).map((l) => cleanLine(l, opts.maxLineChars ?? TAIL_LINE_CHARS));
}

// colour and cursor codes (drush colours its messages on a terminal), then any other control character
// but the tab: shown in a terminal or a task log, they would redraw it
const TERMINAL_CODES = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

function cleanLine(line: string, maxChars: number): string {
  // a progress meter rewrites its line after each \r: what a terminal would show is after the last one
  const shown = line.replace(/\r+$/, "").split("\r").at(-1) ?? "";
  const clean = shown.replace(TERMINAL_CODES, "").replace(CONTROL, "");
  const chars = [...clean];
  return chars.length > maxChars ? `${chars.slice(0, maxChars).join("")}…` : clean;
}
