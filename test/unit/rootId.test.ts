// A root's identity file: made once, atomically, by whoever comes first; never overwritten; a file that
// holds no id, or a symlink, is refused and left as it is.
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QmError } from "../../shared/errors.js";
import { ROOT_ID_FILE, ensureRootId, isRootId, readRootId } from "../../shared/rootId.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "qm-rootid-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const file = () => path.join(root, ROOT_ID_FILE);

async function rejection(p: Promise<unknown>): Promise<QmError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(QmError);
  return err as QmError;
}

describe("root identity", () => {
  it("is made at the first call, 32 hex digits in a file readable by all, and the same ever after", async () => {
    expect(await readRootId(root)).toBeUndefined();
    const id = await ensureRootId(root);
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(fs.readFileSync(file(), "utf8")).toBe(`${id}\n`);
    expect(fs.statSync(file()).mode & 0o777).toBe(0o644);
    const { mtimeMs, ino } = fs.statSync(file());
    expect(await ensureRootId(root)).toBe(id);
    expect(await readRootId(root)).toBe(id);
    expect(fs.statSync(file())).toMatchObject({ mtimeMs, ino });
    expect(fs.readdirSync(root), "no temp file left").toEqual([ROOT_ID_FILE]);
  });

  it("made by many at once, one id stands and every caller gets it", async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, () => ensureRootId(root)));
    expect(new Set(ids).size).toBe(1);
    expect(fs.readFileSync(file(), "utf8")).toBe(`${ids[0]}\n`);
    expect(fs.readdirSync(root)).toEqual([ROOT_ID_FILE]);
  });

  it("keeps an id an operator wrote", async () => {
    fs.writeFileSync(file(), "front-pair-nfs-01\n");
    expect(await ensureRootId(root)).toBe("front-pair-nfs-01");
    expect(fs.readFileSync(file(), "utf8")).toBe("front-pair-nfs-01\n");
  });

  it.each([
    ["empty", ""],
    ["not an id", "hello world\n"],
    ["too short", "abc\n"],
  ])("refuses a file that is %s, and leaves it as it is", async (_, content) => {
    fs.writeFileSync(file(), content);
    const err = await rejection(ensureRootId(root));
    expect(err.code).toBe("ROOT_ID_INVALID");
    expect(err.message).toContain(file());
    expect(fs.readFileSync(file(), "utf8")).toBe(content);
  });

  it("refuses a symlink, never following it", async () => {
    const other = path.join(root, "elsewhere");
    fs.writeFileSync(other, "0123456789abcdef0123456789abcdef\n");
    fs.symlinkSync(other, file());
    const err = await rejection(readRootId(root));
    expect(err.code).toBe("ROOT_ID_INVALID");
    expect(err.message).toContain("symlink");
    expect(fs.lstatSync(file()).isSymbolicLink()).toBe(true);
  });

  it("says so when the root does not exist", async () => {
    const err = await rejection(ensureRootId(path.join(root, "missing")));
    expect(err.code).toBe("ROOT_NOT_WRITABLE");
    expect(err.message).toContain("does not exist");
  });

  it.skipIf(process.getuid?.() === 0)("says so when the root is not writable (as root every root is)", async () => {
    fs.chmodSync(root, 0o555);
    try {
      const err = await rejection(ensureRootId(root));
      expect(err.code).toBe("ROOT_NOT_WRITABLE");
      expect(err.message).toMatch(/EACCES: the root .* must be writable by the user the agent runs as/);
    } finally {
      fs.chmodSync(root, 0o755);
    }
  });

  it("isRootId: a token of 8 to 128 letters, digits, . _ -", () => {
    expect(isRootId("0123456789abcdef0123456789abcdef")).toBe(true);
    expect(isRootId("front-pair-nfs-01")).toBe(true);
    for (const bad of ["", "short", "-leading-dash", "with space here", "a/b/c/d/e/f", "x".repeat(129), "line\nbreak-here"]) expect(isRootId(bad), bad).toBe(false);
  });
});
