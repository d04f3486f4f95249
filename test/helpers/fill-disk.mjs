#!/usr/bin/env node
// A hook for the full-disk tests: fills the filesystem holding <file> by writing <file> until the
// kernel says ENOSPC, then runs the rest of its arguments as a command (if any) and exits with its
// code: the hook itself succeeds, and the next writer is the one that finds no space.
// Usage: fill-disk.mjs <file> [command args...]
import { spawnSync } from "node:child_process";
import fs from "node:fs";

const [file, command, ...args] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: fill-disk.mjs <file> [command args...]\n");
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
if (command) process.exit(spawnSync(command, args, { stdio: "inherit" }).status ?? 1);
