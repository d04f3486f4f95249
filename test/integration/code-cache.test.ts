// The controller's V8 code cache (controller/start.ts), through bin/quick-migrate: written once a command
// did its work, read by the next, and never read when it is not only this user's own (a file or folder
// others can write, a link); a cache V8 rejects, or none at all, only costs the compile.
import { isAscii } from "node:buffer";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

const BIN = path.join(repoRoot(), "bin", "quick-migrate");
const VERSION = (JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) fs.rmSync(t, { recursive: true, force: true });
});

function tempDir(): string {
  const t = fs.mkdtempSync(path.join(os.tmpdir(), "qm-code-cache-"));
  temps.push(t);
  return t;
}

/** `quick-migrate --version` with this cache home (undefined: neither XDG_CACHE_HOME nor HOME) */
async function version(cacheHome: string | undefined): Promise<void> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  if (cacheHome !== undefined) env.XDG_CACHE_HOME = cacheHome;
  const r = await execa(BIN, ["--version"], { env, extendEnv: false, reject: false });
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe(VERSION);
  expect(r.exitCode).toBe(0);
}

function cacheFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith(".v8"));
}

/** A fresh cache home after one command: the cache file it wrote. */
async function cachedOnce(): Promise<{ home: string; file: string }> {
  const home = tempDir();
  await version(home);
  const dir = path.join(home, "quick-migrate");
  return { home, file: path.join(dir, cacheFiles(dir)[0] as string) };
}

describe("controller code cache", () => {
  it("the bundle is ASCII (read as one byte a character, not decoded)", () => {
    expect(isAscii(fs.readFileSync(path.join(repoRoot(), "dist", "bundle", "controller-main.cjs")))).toBe(true);
  });

  it("is written by a command that did its work, only this user's, and read by the next", async () => {
    const home = tempDir();
    await version(home);
    const dir = path.join(home, "quick-migrate");
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    const [name] = cacheFiles(dir);
    expect(name).toMatch(/^controller-.*-other\.v8$/);
    const file = path.join(dir, name as string);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const before = fs.statSync(file);
    await version(home);
    // accepted: not written again
    expect(fs.statSync(file).mtimeMs).toBe(before.mtimeMs);
    expect(fs.statSync(file).ino).toBe(before.ino);
  });

  it("rejected by V8 (not a cache): the command runs all the same and the cache is written again", async () => {
    const { home, file } = await cachedOnce();
    fs.writeFileSync(file, "not a V8 code cache");
    await version(home);
    expect(fs.readFileSync(file).length).toBeGreaterThan(1000);
  });

  it("a cache file others can write, or a link, is never read", async () => {
    const { home, file } = await cachedOnce();
    fs.writeFileSync(file, "others could have written this");
    fs.chmodSync(file, 0o666);
    await version(home);
    // taken as missing: replaced by this run's own
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file).length).toBeGreaterThan(1000);

    const elsewhere = path.join(tempDir(), "planted");
    fs.copyFileSync(file, elsewhere);
    fs.rmSync(file);
    fs.symlinkSync(elsewhere, file);
    await version(home);
    expect(fs.lstatSync(file).isSymbolicLink()).toBe(false);
  });

  it("a cache folder others can write is not used; no cache home at all is no cache", async () => {
    const home = tempDir();
    const dir = path.join(home, "quick-migrate");
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chmodSync(dir, 0o777);
    await version(home);
    expect(cacheFiles(dir)).toEqual([]);
    await version(undefined);
  });
});
