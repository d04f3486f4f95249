// The controller's entry in the bundle (dist/bundle/controller.js, run by bin/quick-migrate): runs the
// controller, bundled as one CommonJS script (controller-main.cjs, scripts/bundle.mjs), with a V8 code
// cache of it. Node 20 has no compile cache for ES modules; compiling the bundle's code afresh (the parse,
// then each function grpc-js, zod and ours run) was about a fifth of a migrate's 500 ms.
//
// The cache is this user's own, never beside the code: $XDG_CACHE_HOME/quick-migrate (or
// ~/.cache/quick-migrate), a folder and files that only this user can write. V8 runs what it finds there
// as compiled code, so a file another user could have written is never read. A cache that is missing,
// unreadable, or rejected by this Node's V8 (another version, other flags) only costs the compile, and is
// written again once the command is over. A cache is one per command and per bundle file (its inode, size
// and time): a new install never picks up the code of an old one.
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { Stats } from "node:fs";
import { isAscii } from "node:buffer";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Script } from "node:vm";

/** a cache larger than this is not ours (the controller's is about 1.5 MB) */
const MAX_CACHE_BYTES = 64 * 1024 * 1024;
const COMMANDS = new Set(["migrate", "status", "agents", "resume", "rollback", "health"]);

/** The cache folder, made if missing; undefined when there is none that only this user can write. */
function cacheFolder(): string | undefined {
  const xdg = process.env.XDG_CACHE_HOME;
  const home = process.env.HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : home && isAbsolute(home) ? join(home, ".cache") : undefined;
  if (base === undefined || typeof process.getuid !== "function") return undefined;
  const dir = join(base, "quick-migrate");
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return ownOnly(lstatSync(dir)) && lstatSync(dir).isDirectory() ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** owned by this user, and writable by no one else */
function ownOnly(st: Stats): boolean {
  return st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
}

/** The cache file's content; undefined when it is missing or not only this user's. */
function readCache(path: string): Buffer | undefined {
  let fd: number;
  try {
    // the last name not followed: a link planted there is not read through
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    return st.isFile() && ownOnly(st) && st.size <= MAX_CACHE_BYTES ? readFileSync(fd) : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Writes the cache whole (a reader sees the old file or the new one), and removes those of other bundles. */
function writeCache(dir: string, name: string, bundleKey: string, script: Script): void {
  const path = join(dir, name);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    // "wx": a name already there (a link planted there included) is not written through
    writeFileSync(tmp, script.createCachedData(), { mode: 0o600, flag: "wx" });
    renameSync(tmp, path);
    for (const other of readdirSync(dir)) {
      if (other.startsWith("controller-") && !other.startsWith(bundleKey)) rmSync(join(dir, other), { force: true });
    }
  } catch {
    rmSync(tmp, { force: true });
  }
}

const file = fileURLToPath(new URL("./controller-main.cjs", import.meta.url));
const fd = openSync(file, "r");
const bundle = fstatSync(fd);
const bytes = readFileSync(fd);
// the same string either way for ASCII, which scripts/bundle.mjs makes the bundle: decoding its 2 MB as
// UTF-8 takes about 5 ms, reading them as one byte a character about 1
const source = isAscii(bytes) ? bytes.toString("latin1") : bytes.toString("utf8");
closeSync(fd);

const dir = cacheFolder();
const v = process.versions;
const bundleKey = `controller-${v.node}-${v.v8}-${process.arch}-${bundle.dev}-${bundle.ino}-${bundle.size}-${Math.trunc(bundle.mtimeMs)}`;
const command = process.argv[2] !== undefined && COMMANDS.has(process.argv[2]) ? process.argv[2] : "other";
const cacheName = `${bundleKey}-${command}.v8`;
const cachedData = dir === undefined ? undefined : readCache(join(dir, cacheName));
// as Node wraps a CommonJS module
const script = new Script(`(function (exports, require, module, __filename, __dirname) { ${source}\n})`, { filename: file, ...(cachedData ? { cachedData } : {}) });
// once the command is over, so that the cache holds the functions it ran, not only the top level; only
// after one that did its work (exit 0): a usage error's cache would hold little of the command's code
if (dir !== undefined && (cachedData === undefined || script.cachedDataRejected === true)) {
  process.once("exit", (code) => {
    if (code === 0) writeCache(dir, cacheName, bundleKey, script);
  });
}

type CommonJsMain = (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
const main = script.runInThisContext() as CommonJsMain;
const module = { exports: {}, id: file, filename: file, loaded: false };
main.call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
