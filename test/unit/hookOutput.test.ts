// A hook's output file is capped with its tail kept byte for byte, and its last lines are read from the
// end of the file, never the whole of it. Real files in a temp folder.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HookOutput, MEMORY_TAIL_BYTES, cutMarker, hookOutputName } from "../../controller/hookOutput.js";
import { lastLines, readLastLines } from "../../controller/tailLines.js";

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-hook-output-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** numbered lines of varied length, `total` bytes in all, cut into chunks of varied size (as pipes deliver them) */
function output(total: number): { bytes: Buffer; chunks: Buffer[] } {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < total; i++) {
    const line = `line ${i} ${"x".repeat(i % 97)}\n`;
    lines.push(line);
    size += line.length;
  }
  const bytes = Buffer.from(lines.join("")).subarray(0, total);
  const chunks: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = [1, 4096, 65536, 100_000, 17, 300_000][i % 6] ?? 1;
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return { bytes, chunks };
}

/** /proc/self/io's rchar: bytes this process read through read(2) and the like, its threads' included */
function bytesRead(): number {
  const m = /^rchar: (\d+)$/m.exec(fs.readFileSync("/proc/self/io", "utf8"));
  return Number(m?.[1]);
}

describe("HookOutput to a file", () => {
  it("keeps the file within its cap while many MB go through, one write at a time", async () => {
    const cap = 256 * 1024;
    const file = path.join(tmp, "hooks", "01-updatedb.log");
    const out = await HookOutput.toFile(file, cap);
    const { chunks } = output(6 * 1024 * 1024);
    for (const chunk of chunks) {
      await new Promise<void>((resolve, reject) => out.write(chunk, (err) => (err ? reject(err) : resolve())));
      expect(fs.statSync(file).size).toBeLessThanOrEqual(cap);
    }
    await new Promise<void>((resolve) => out.end(resolve));
    expect(out.fileError).toBeUndefined();
  });

  // with the smaller cap every cut keeps only the end of the chunk that crossed it; with the larger, a
  // cut also reads the file's end back
  it.each([64 * 1024, 1024 * 1024])("cut (cap %i): a marker line with the exact number of bytes gone, then the output's tail byte for byte", async (cap) => {
    const file = path.join(tmp, "hooks", "02-deploy-undo.log");
    const { bytes, chunks } = output(5 * 1024 * 1024 + 123);
    const out = await HookOutput.toFile(file, cap);
    await pipeline(Readable.from(chunks), out);
    expect(out.fileError).toBeUndefined();
    const kept = fs.readFileSync(file);
    expect(kept.length).toBeLessThanOrEqual(cap);
    const newline = kept.indexOf("\n");
    const tail = kept.subarray(newline + 1);
    expect(tail.length).toBeGreaterThanOrEqual(cap / 2);
    expect(kept.subarray(0, newline + 1).toString()).toBe(cutMarker(bytes.length - tail.length));
    expect(kept.subarray(0, newline + 1).toString()).toMatch(/^\[… \d{1,3}(,\d{3})+ earlier bytes cut …\]\n$/);
    expect(tail.equals(bytes.subarray(bytes.length - tail.length))).toBe(true);
  });

  it("a chunk larger than the cap on its own: only its end is kept", async () => {
    const file = path.join(tmp, "big.log");
    const big = Buffer.alloc(10_000, "a");
    big.write("the end\n", big.length - 8);
    await pipeline(Readable.from([Buffer.from("before\n"), big]), await HookOutput.toFile(file, 4096));
    const kept = fs.readFileSync(file, "utf8");
    expect(kept).toBe(`${cutMarker(10_007 - 2048)}${"a".repeat(2040)}the end\n`);
  });

  it("under the cap the file is the output as it came, with no marker", async () => {
    const file = path.join(tmp, "small.log");
    const { bytes, chunks } = output(50_000);
    await pipeline(Readable.from(chunks), await HookOutput.toFile(file, 64 * 1024));
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
  });

  it("makes the file with mode 0600 in a folder of mode 0700, replacing an older file of the name", async () => {
    const file = path.join(tmp, "journal", "hooks", "03-updatedb.log");
    fs.mkdirSync(path.dirname(path.dirname(file)), { mode: 0o755 });
    await pipeline(Readable.from([Buffer.from("first run, much longer than the second\n")]), await HookOutput.toFile(file));
    await pipeline(Readable.from([Buffer.from("second\n")]), await HookOutput.toFile(file));
    expect(fs.readFileSync(file, "utf8")).toBe("second\n");
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
  });

  it("its last lines are read from the end of the file", async () => {
    const file = path.join(tmp, "lines.log");
    const lines = Array.from({ length: 30 }, (_, i) => `drush says ${i + 1}`);
    await pipeline(Readable.from([Buffer.from(`${lines.join("\n")}\n`)]), await HookOutput.toFile(file));
    const out = await HookOutput.toFile(path.join(tmp, "other.log"));
    await pipeline(Readable.from([Buffer.from("x\n")]), out);
    expect(await out.lastLines(20)).toEqual(["x"]);
    expect(await readLastLines(file, 20)).toEqual(lines.slice(10));
  });

  it("names: the run's number on two digits, -undo for an undo hook", () => {
    expect(hookOutputName(3, "updatedb", false)).toBe(path.join("hooks", "03-updatedb.log"));
    expect(hookOutputName(12, "deploy", true)).toBe(path.join("hooks", "12-deploy-undo.log"));
  });
});

describe("HookOutput in memory", () => {
  it("keeps a bounded tail of many MB, and its last lines", async () => {
    const out = HookOutput.inMemory();
    const { bytes, chunks } = output(8 * 1024 * 1024);
    await pipeline(Readable.from(chunks), out);
    const expected = bytes.toString().split("\n").slice(-21, -1);
    // the output ends mid-line: that part is its last line
    expect(await out.lastLines(20)).toEqual([...expected.slice(1), bytes.toString().split("\n").at(-1)]);
    expect(out.file).toBeUndefined();
    expect(MEMORY_TAIL_BYTES).toBeLessThanOrEqual(64 * 1024);
  });
});

describe("readLastLines", () => {
  it("returns the last N lines of a large file without reading it all", async () => {
    const file = path.join(tmp, "large.log");
    const fd = fs.openSync(file, "w");
    const block = Buffer.from(`${"filler line\n".repeat(10_000)}`);
    for (let i = 0; i < 200; i++) fs.writeSync(fd, block); // 24 MB
    for (let i = 1; i <= 25; i++) fs.writeSync(fd, `last line ${i}\n`);
    fs.closeSync(fd);
    const before = bytesRead();
    const lines = await readLastLines(file, 20);
    const read = bytesRead() - before;
    expect(lines).toEqual(Array.from({ length: 20 }, (_, i) => `last line ${i + 6}`));
    expect(read, "bytes read for the tail of a 24 MB file").toBeLessThan(256 * 1024);
  });

  it("a file with fewer lines, none, or no final newline", async () => {
    const file = path.join(tmp, "f.log");
    fs.writeFileSync(file, "a\nb\n");
    expect(await readLastLines(file, 20)).toEqual(["a", "b"]);
    fs.writeFileSync(file, "");
    expect(await readLastLines(file, 20)).toEqual([]);
    fs.writeFileSync(file, "a\nb\nno newline");
    expect(await readLastLines(file, 2)).toEqual(["b", "no newline"]);
  });

  it("a last line of megabytes comes back cut, from no more than the bound read", async () => {
    const file = path.join(tmp, "one-line.log");
    fs.writeFileSync(file, `first\n${"y".repeat(5 * 1024 * 1024)}\n`);
    const before = bytesRead();
    const lines = await readLastLines(file, 20);
    expect(bytesRead() - before).toBeLessThan(256 * 1024);
    expect(lines).toEqual([`${"y".repeat(300)}…`]);
  });
});

describe("lastLines cleans each line for a person", () => {
  it("cuts long lines, drops terminal codes and control characters, shows what a \\r left", () => {
    const raw = Buffer.from(["\x1b[31m[error]\x1b[0m  table missing", "progress 10%\rprogress 100%", `${"é".repeat(400)}`, "bell\x07 and tab\tkept", "crlf\r"].join("\n"));
    expect(lastLines(raw, 20)).toEqual(["[error]  table missing", "progress 100%", `${"é".repeat(300)}…`, "bell and tab\tkept", "crlf"]);
  });
});
