#!/usr/bin/env node
// A hook for the full-disk tests: fills the filesystem holding <file> by writing <file> until the
// kernel says ENOSPC, then exits 0 (the hook succeeded: the next writer is the one that finds no space).
// Usage: fill-disk.mjs <file>
import fs from "node:fs";

const [file] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: fill-disk.mjs <file>\n");
  process.exit(64);
}
const fd = fs.openSync(file, "a");
const chunk = Buffer.alloc(64 * 1024, 0x2e);
for (let size = chunk.length; size > 0; ) {
  try {
    fs.writeSync(fd, chunk, 0, size);
  } catch (err) {
    if (err.code !== "ENOSPC") throw err;
    // the last pages: smaller writes until not even one byte fits
    size = Math.floor(size / 2);
  }
}
fs.fsyncSync(fd);
fs.closeSync(fd);
