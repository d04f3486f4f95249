// SiteTree on real directories: data dirs are only renamed (same inode), moves are idempotent and
// crash-safe through the ledger, removals never follow symlinks, nothing outside the root is touched.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MigrationSpec } from "../../shared/migration.js";
import { type Ledger, type LedgerEntry, SiteTree } from "../../shared/siteTree.js";
import { rejection } from "../helpers/rejection.js";

const m: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "b.com", dataDirs: ["files", "private/files"] };

class MemLedger implements Ledger {
  saves = 0;
  constructor(public arr: LedgerEntry[] = []) {}
  entries = async (): Promise<LedgerEntry[]> => structuredClone(this.arr);
  save = async (e: LedgerEntry[]): Promise<void> => {
    this.saves++;
    this.arr = structuredClone(e);
  };
}

let tmp: string;
let root: string;
let tree: SiteTree;
const r = (rel: string) => path.join(root, rel);
const ino = (rel: string) => fs.lstatSync(r(rel)).ino;
/** what the ledger records of a data dir to know it again: its inode and birth time */
const identity = (rel: string) => {
  const st = fs.lstatSync(r(rel));
  return { ino: st.ino, ...(st.birthtimeMs ? { born: st.birthtimeMs } : {}) };
};
const exists = (rel: string) => {
  try {
    fs.lstatSync(r(rel));
    return true;
  } catch {
    return false;
  }
};

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-sitetree-"));
  root = path.join(tmp, "root");
  fs.mkdirSync(r("p1/sites/a.com/files"), { recursive: true });
  fs.mkdirSync(r("p1/sites/a.com/private/files"), { recursive: true });
  fs.mkdirSync(r("p2/sites"), { recursive: true });
  fs.writeFileSync(r("p1/sites/a.com/settings.php"), "<?php\n");
  fs.writeFileSync(r("p1/sites/a.com/files/x"), "x");
  fs.writeFileSync(r("p1/sites/a.com/private/files/y"), "y");
  tree = new SiteTree(root);
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});


describe("moveData", () => {
  it("old → park renames each data dir (same inode, contents intact) and records it", async () => {
    const ledger = new MemLedger();
    const filesIno = ino("p1/sites/a.com/files");
    const privIno = ino("p1/sites/a.com/private/files");
    const changes = await tree.moveData(m, ledger, "old", "park");
    expect(changes).toEqual([
      { dataDir: "files", from: "p1/sites/a.com/files", to: ".quick-migrate-park/m1/files", kind: "directory", result: "renamed" },
      {
        dataDir: "private/files",
        from: "p1/sites/a.com/private/files",
        to: ".quick-migrate-park/m1/private%2Ffiles",
        kind: "directory",
        result: "renamed",
      },
    ]);
    expect(exists("p1/sites/a.com/files")).toBe(false);
    expect(exists("p1/sites/a.com/private/files")).toBe(false);
    expect(exists("p1/sites/a.com/settings.php")).toBe(true);
    expect(ino(".quick-migrate-park/m1/files")).toBe(filesIno);
    expect(ino(".quick-migrate-park/m1/private%2Ffiles")).toBe(privIno);
    expect(fs.readFileSync(r(".quick-migrate-park/m1/files/x"), "utf8")).toBe("x");
    expect(fs.readFileSync(r(".quick-migrate-park/m1/private%2Ffiles/y"), "utf8")).toBe("y");
    // each entry with its inode, which tells the data dir from anything found in its place later
    expect(ledger.arr).toEqual([
      { dataDir: "files", kind: "directory", ...identity(".quick-migrate-park/m1/files"), at: "park" },
      { dataDir: "private/files", kind: "directory", ...identity(".quick-migrate-park/m1/private%2Ffiles"), at: "park" },
    ]);
    // the two intents at once, then the result of each rename
    expect(ledger.saves).toBe(3);
  });

  it("repeating old → park is a no-op reporting already-done", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    const filesIno = ino(".quick-migrate-park/m1/files");
    const again = await tree.moveData(m, ledger, "old", "park");
    expect(again.map((c) => c.result)).toEqual(["already-done", "already-done"]);
    expect(ino(".quick-migrate-park/m1/files")).toBe(filesIno);
  });

  it("park → new needs the new site folder (PRECONDITION) and moves nothing without it", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    const err = await rejection(tree.moveData(m, ledger, "park", "new"));
    expect(err.code).toBe("PRECONDITION");
    expect(err.message).toContain("p2/sites/b.com");
    expect(exists("p2/sites/b.com")).toBe(false);
    expect(exists(".quick-migrate-park/m1/files")).toBe(true);
    expect(ledger.arr.map((e) => e.at)).toEqual(["park", "park"]);
  });

  it("park → new renames into the new folder (creating private/), same inode, and drops the empty park folders", async () => {
    const ledger = new MemLedger();
    const filesIno = ino("p1/sites/a.com/files");
    const privIno = ino("p1/sites/a.com/private/files");
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com"));
    const changes = await tree.moveData(m, ledger, "park", "new");
    expect(changes.map((c) => [c.dataDir, c.to, c.result])).toEqual([
      ["files", "p2/sites/b.com/files", "renamed"],
      ["private/files", "p2/sites/b.com/private/files", "renamed"],
    ]);
    expect(ino("p2/sites/b.com/files")).toBe(filesIno);
    expect(ino("p2/sites/b.com/private/files")).toBe(privIno);
    expect(fs.readFileSync(r("p2/sites/b.com/private/files/y"), "utf8")).toBe("y");
    expect(exists(".quick-migrate-park/m1")).toBe(false);
    expect(exists(".quick-migrate-park")).toBe(false);
    expect(ledger.arr.map((e) => e.at)).toEqual(["new", "new"]);

    const again = await tree.moveData(m, ledger, "park", "new");
    expect(again.map((c) => c.result)).toEqual(["already-done", "already-done"]);
  });

  it("undo goes back the same way: new → park → old restores the original inodes", async () => {
    const ledger = new MemLedger();
    const filesIno = ino("p1/sites/a.com/files");
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com"));
    await tree.moveData(m, ledger, "park", "new");
    expect((await tree.moveData(m, ledger, "new", "park")).map((c) => c.result)).toEqual(["renamed", "renamed"]);
    expect((await tree.moveData(m, ledger, "park", "old")).map((c) => c.result)).toEqual(["renamed", "renamed"]);
    expect(ino("p1/sites/a.com/files")).toBe(filesIno);
    expect(fs.readFileSync(r("p1/sites/a.com/private/files/y"), "utf8")).toBe("y");
    expect(ledger.arr.map((e) => e.at)).toEqual(["old", "old"]);
  });

  it("an empty placeholder data dir in the new folder is removed and replaced", async () => {
    const ledger = new MemLedger();
    const filesIno = ino("p1/sites/a.com/files");
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com/files"), { recursive: true });
    const changes = await tree.moveData(m, ledger, "park", "new");
    expect(changes.map((c) => [c.dataDir, c.result])).toEqual([
      ["files", "rmdir-placeholder"],
      ["private/files", "renamed"],
    ]);
    expect(ino("p2/sites/b.com/files")).toBe(filesIno);
    expect(fs.readFileSync(r("p2/sites/b.com/files/x"), "utf8")).toBe("x");
  });

  it("a non-empty data dir in the new folder is a CONFLICT and nothing is moved", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com/files"), { recursive: true });
    fs.writeFileSync(r("p2/sites/b.com/files/stray"), "s");
    const before = structuredClone(ledger.arr);
    const err = await rejection(tree.moveData(m, ledger, "park", "new"));
    expect(err.code).toBe("CONFLICT");
    expect(err.message).toContain("p2/sites/b.com/files");
    expect(err.context.path).toBe("p2/sites/b.com/files");
    expect(fs.readdirSync(r("p2/sites/b.com/files"))).toEqual(["stray"]);
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
    expect(exists(".quick-migrate-park/m1/private%2Ffiles/y")).toBe(true);
    expect(exists("p2/sites/b.com/private")).toBe(false);
    expect(ledger.arr).toEqual(before);
  });

  it("a placeholder that is a symlink, even to an empty dir, is a CONFLICT", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(path.join(tmp, "empty"));
    fs.mkdirSync(r("p2/sites/b.com"));
    fs.symlinkSync(path.join(tmp, "empty"), r("p2/sites/b.com/files"));
    const err = await rejection(tree.moveData(m, ledger, "park", "new"));
    expect(err.code).toBe("CONFLICT");
    expect(fs.existsSync(path.join(tmp, "empty"))).toBe(true);
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
  });

  it("a placeholder in the park area is not tolerated: old → park onto an existing park entry is a CONFLICT", async () => {
    fs.mkdirSync(r(".quick-migrate-park/m1/files"), { recursive: true });
    const err = await rejection(tree.moveData(m, new MemLedger(), "old", "park"));
    expect(err.code).toBe("CONFLICT");
    expect(exists("p1/sites/a.com/files/x")).toBe(true);
  });

  it("a symlink data dir is moved as the link: same target, target untouched", async () => {
    const shared = path.join(tmp, "gluster", "a.com-files");
    fs.mkdirSync(shared, { recursive: true });
    fs.writeFileSync(path.join(shared, "big.bin"), "data");
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.symlinkSync(shared, r("p1/sites/a.com/files"));
    const linkIno = ino("p1/sites/a.com/files");

    const ledger = new MemLedger();
    const changes = await tree.moveData(m, ledger, "old", "park");
    expect(changes[0]).toMatchObject({ dataDir: "files", kind: "symlink", linkTarget: shared, result: "renamed" });
    expect(fs.lstatSync(r(".quick-migrate-park/m1/files")).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(r(".quick-migrate-park/m1/files"))).toBe(shared);
    expect(ino(".quick-migrate-park/m1/files")).toBe(linkIno);
    expect(ledger.arr[0]).toEqual({ dataDir: "files", kind: "symlink", linkTarget: shared, ...identity(".quick-migrate-park/m1/files"), at: "park" });

    fs.mkdirSync(r("p2/sites/b.com"));
    await tree.moveData(m, ledger, "park", "new");
    expect(fs.readlinkSync(r("p2/sites/b.com/files"))).toBe(shared);
    expect(fs.readdirSync(shared)).toEqual(["big.bin"]);
    expect(fs.readFileSync(path.join(shared, "big.bin"), "utf8")).toBe("data");
    expect(fs.lstatSync(shared).isDirectory()).toBe(true);
  });

  it("a relative symlink keeps its exact link text", async () => {
    fs.mkdirSync(path.join(root, "shared-files"));
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.symlinkSync("../../../shared-files", r("p1/sites/a.com/files"));
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    expect(fs.readlinkSync(r(".quick-migrate-park/m1/files"))).toBe("../../../shared-files");
    expect(fs.existsSync(path.join(root, "shared-files"))).toBe(true);
  });

  it("absent data dirs are reported absent on every move", async () => {
    fs.rmSync(r("p1/sites/a.com/private"), { recursive: true });
    const ledger = new MemLedger();
    const park = await tree.moveData(m, ledger, "old", "park");
    expect(park.map((c) => [c.dataDir, c.kind, c.result])).toEqual([
      ["files", "directory", "renamed"],
      ["private/files", "absent", "absent"],
    ]);
    expect(ledger.arr.map((e) => e.dataDir)).toEqual(["files"]);
    fs.mkdirSync(r("p2/sites/b.com"));
    const restore = await tree.moveData(m, ledger, "park", "new");
    expect(restore.map((c) => [c.dataDir, c.result])).toEqual([
      ["files", "renamed"],
      ["private/files", "absent"],
    ]);
    expect(exists("p2/sites/b.com/private")).toBe(false);
  });

  it("a data dir that is a plain file is a PRECONDITION error", async () => {
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.writeFileSync(r("p1/sites/a.com/files"), "not a dir");
    const err = await rejection(tree.moveData(m, new MemLedger(), "old", "park"));
    expect(err.code).toBe("PRECONDITION");
    expect(exists("p1/sites/a.com/files")).toBe(true);
  });

  it("crash after the rename but before its record: the next run completes it as already-done", async () => {
    const filesIno = ino("p1/sites/a.com/files");
    fs.mkdirSync(r(".quick-migrate-park/m1"), { recursive: true });
    fs.renameSync(r("p1/sites/a.com/files"), r(".quick-migrate-park/m1/files"));
    const ledger = new MemLedger([{ dataDir: "files", kind: "directory", at: "old", moving: "park" }]);
    const changes = await tree.moveData(m, ledger, "old", "park");
    expect(changes.map((c) => [c.dataDir, c.result])).toEqual([
      ["files", "already-done"],
      ["private/files", "renamed"],
    ]);
    expect(ledger.arr).toEqual([
      { dataDir: "files", kind: "directory", at: "park" },
      { dataDir: "private/files", kind: "directory", ...identity(".quick-migrate-park/m1/private%2Ffiles"), at: "park" },
    ]);
    expect(ino(".quick-migrate-park/m1/files")).toBe(filesIno);
  });

  it("crash after the intent but before the rename: the next run does the rename", async () => {
    const ledger = new MemLedger([{ dataDir: "files", kind: "directory", at: "old", moving: "park" }]);
    const changes = await tree.moveData(m, ledger, "old", "park");
    expect(changes.map((c) => c.result)).toEqual(["renamed", "renamed"]);
    expect(ledger.arr.every((e) => e.at === "park" && e.moving === undefined)).toBe(true);
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
  });

  // A crash between the intent record and the rename, then `rollback`: the data never left, so undoing
  // the interrupted move must find it where the ledger's `at` says it is (DESIGN §5.3).
  it("crash during restore before the rename, then the undo (new → park) finds the data still parked", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com"));
    ledger.arr = ledger.arr.map((e) => ({ ...e, moving: "new" as const }));
    const changes = await tree.moveData(m, ledger, "new", "park");
    expect(changes.map((c) => c.result)).toEqual(["already-done", "already-done"]);
    expect(ledger.arr).toEqual([
      { dataDir: "files", kind: "directory", ...identity(".quick-migrate-park/m1/files"), at: "park" },
      { dataDir: "private/files", kind: "directory", ...identity(".quick-migrate-park/m1/private%2Ffiles"), at: "park" },
    ]);
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
  });

  it("crash during park before the rename, then the undo (park → old) finds the data still in place", async () => {
    const ledger = new MemLedger([{ dataDir: "files", kind: "directory", at: "old", moving: "park" }]);
    const changes = await tree.moveData({ ...m, dataDirs: ["files"] }, ledger, "park", "old");
    expect(changes.map((c) => c.result)).toEqual(["already-done"]);
    expect(ledger.arr).toEqual([{ dataDir: "files", kind: "directory", at: "old" }]);
    expect(exists("p1/sites/a.com/files/x")).toBe(true);
  });

  it("a non-empty second data dir in the new folder is a CONFLICT before anything is moved", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com/private/files"), { recursive: true });
    fs.writeFileSync(r("p2/sites/b.com/private/files/stray"), "s");
    const err = await rejection(tree.moveData(m, ledger, "park", "new"));
    expect(err.code).toBe("CONFLICT");
    expect(err.context.path).toBe("p2/sites/b.com/private/files");
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
    expect(exists("p2/sites/b.com/files")).toBe(false);
    expect(ledger.arr.map((e) => e.at)).toEqual(["park", "park"]);
  });

  it("a data dir the ledger has but the disk lost is a CONFLICT, not silently skipped", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.rmSync(r(".quick-migrate-park/m1/files"), { recursive: true });
    fs.mkdirSync(r("p2/sites/b.com"));
    const err = await rejection(tree.moveData(m, ledger, "park", "new"));
    expect(err.code).toBe("CONFLICT");
    expect(err.message).toContain("files");
  });

  // A power cut can lose a rename the ledger recorded (the ledger on another filesystem, or a rename
  // not yet on disk): the data dir is then where it was before. It is found there, by its inode.
  describe("a recorded rename that the disk lost", () => {
    async function parkedThenLost(): Promise<MemLedger> {
      const ledger = new MemLedger();
      await tree.moveData(m, ledger, "old", "park");
      // what the disk shows after the power cut: the renames never happened
      fs.renameSync(r(".quick-migrate-park/m1/files"), r("p1/sites/a.com/files"));
      fs.renameSync(r(".quick-migrate-park/m1/private%2Ffiles"), r("p1/sites/a.com/private/files"));
      return ledger;
    }

    it("the undo (park → old) finds each data dir at its original path and says so", async () => {
      const ledger = await parkedThenLost();
      const changes = await tree.moveData(m, ledger, "park", "old");
      expect(changes.map((c) => [c.dataDir, c.result])).toEqual([
        ["files", "found-at-destination"],
        ["private/files", "found-at-destination"],
      ]);
      expect(ledger.arr.map((e) => [e.dataDir, e.at, e.moving])).toEqual([
        ["files", "old", undefined],
        ["private/files", "old", undefined],
      ]);
      expect(fs.readFileSync(r("p1/sites/a.com/files/x"), "utf8")).toBe("x");
    });

    it("a repeated park (old → park) renames it again", async () => {
      const ledger = await parkedThenLost();
      const filesIno = ino("p1/sites/a.com/files");
      const changes = await tree.moveData(m, ledger, "old", "park");
      expect(changes.map((c) => c.result)).toEqual(["renamed", "renamed"]);
      expect(ino(".quick-migrate-park/m1/files")).toBe(filesIno);
      expect(ledger.arr.map((e) => e.at)).toEqual(["park", "park"]);
    });

    it("a move onward (park → new) is refused naming where the data dir is, and moves nothing", async () => {
      const ledger = await parkedThenLost();
      fs.mkdirSync(r("p2/sites/b.com"));
      const err = await rejection(tree.moveData(m, ledger, "park", "new"));
      expect(err.code).toBe("CONFLICT");
      expect(err.message).toBe(
        "data dir files is at its original path p1/sites/a.com/files, not at .quick-migrate-park/m1/files where the record says (a rename lost in a crash): nothing was moved",
      );
      expect(err.context.path).toBe("p1/sites/a.com/files");
      expect(exists("p1/sites/a.com/files/x")).toBe(true);
      expect(exists("p2/sites/b.com/files")).toBe(false);
    });

    it("something else at the original path (another inode, not empty) is not taken for the data dir: missing, every place named", async () => {
      const ledger = new MemLedger();
      await tree.moveData({ ...m, dataDirs: ["files"] }, ledger, "old", "park");
      fs.rmSync(r(".quick-migrate-park/m1/files"), { recursive: true });
      fs.mkdirSync(r("p1/sites/a.com/files/css"), { recursive: true });
      const err = await rejection(tree.moveData({ ...m, dataDirs: ["files"] }, ledger, "park", "old"));
      expect(err.code).toBe("CONFLICT");
      expect(err.message).toBe(
        "data dir files is missing: not at .quick-migrate-park/m1/files where the record says, nor at p1/sites/a.com/files nor at p2/sites/b.com/files; p1/sites/a.com/files holds something else",
      );
      expect(exists("p1/sites/a.com/files/css")).toBe(true);
    });

    it("a ledger written before inodes were recorded: a non-empty directory is found, an empty placeholder is not", async () => {
      const ledger = new MemLedger([{ dataDir: "files", kind: "directory", at: "park" }]);
      const one = { ...m, dataDirs: ["files"] };
      expect((await tree.moveData(one, ledger, "park", "old")).map((c) => c.result)).toEqual(["found-at-destination"]);
      const placeholder = new MemLedger([{ dataDir: "private/files", kind: "directory", at: "park" }]);
      fs.rmSync(r("p1/sites/a.com/private/files/y"));
      const err = await rejection(tree.moveData({ ...m, dataDirs: ["private/files"] }, placeholder, "park", "old"));
      expect(err.message).toContain("data dir private/files is missing");
    });
  });

  it("refuses data dirs reached through a symlinked parent outside the root", async () => {
    const outside = path.join(tmp, "outside");
    fs.mkdirSync(path.join(outside, "files"), { recursive: true });
    fs.rmSync(r("p1/sites/a.com/private"), { recursive: true });
    fs.symlinkSync(outside, r("p1/sites/a.com/private"));
    const err = await rejection(tree.moveData(m, new MemLedger(), "old", "park"));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(fs.existsSync(path.join(outside, "files"))).toBe(true);
  });
});

describe("removeSiteFolder", () => {
  const dataDirs = ["files", "private/files"];

  it("refuses while a data dir is not empty (NOT_EMPTY) and removes nothing", async () => {
    const err = await rejection(tree.removeSiteFolder("p1/sites/a.com", dataDirs));
    expect(err.code).toBe("NOT_EMPTY");
    expect(err.context.path).toBe("p1/sites/a.com/files");
    expect(exists("p1/sites/a.com/settings.php")).toBe(true);
    expect(exists("p1/sites/a.com/files/x")).toBe(true);
  });

  it("refuses while a data dir is a symlink, even to an empty dir (NOT_EMPTY)", async () => {
    const empty = path.join(tmp, "empty-share");
    fs.mkdirSync(empty);
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.rmSync(r("p1/sites/a.com/private/files"), { recursive: true });
    fs.symlinkSync(empty, r("p1/sites/a.com/private/files"));
    const err = await rejection(tree.removeSiteFolder("p1/sites/a.com", dataDirs));
    expect(err.code).toBe("NOT_EMPTY");
    expect(err.message).toContain("symlink");
    expect(err.context.path).toBe("p1/sites/a.com/private/files");
    expect(exists("p1/sites/a.com/settings.php")).toBe(true);
  });

  it("refuses while a data dir is a dangling symlink", async () => {
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.rmSync(r("p1/sites/a.com/private/files"), { recursive: true });
    fs.symlinkSync(path.join(tmp, "does-not-exist"), r("p1/sites/a.com/files"));
    expect((await rejection(tree.removeSiteFolder("p1/sites/a.com", dataDirs))).code).toBe("NOT_EMPTY");
  });

  it("removes the folder once the data dirs are gone or empty, without following symlinks inside", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p1/sites/a.com/files")); // an empty leftover data dir is fine
    const outside = path.join(tmp, "outside");
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "keep.txt"), "keep");
    fs.symlinkSync(outside, r("p1/sites/a.com/libraries"));
    fs.symlinkSync(path.join(outside, "keep.txt"), r("p1/sites/a.com/keep-link.txt"));

    const changes = await tree.removeSiteFolder("p1/sites/a.com", dataDirs);
    expect(changes).toEqual([{ dataDir: "", from: "p1/sites/a.com", to: "", kind: "directory", result: "removed" }]);
    expect(exists("p1/sites/a.com")).toBe(false);
    expect(exists("p1/sites")).toBe(true);
    expect(fs.readFileSync(path.join(outside, "keep.txt"), "utf8")).toBe("keep");
    expect(exists(".quick-migrate-park/m1/files/x")).toBe(true);
  });

  it("an absent folder counts as already removed", async () => {
    const changes = await tree.removeSiteFolder("p2/sites/b.com", dataDirs);
    expect(changes.map((c) => [c.kind, c.result])).toEqual([["absent", "already-done"]]);
  });

  it("refuses a site folder that is itself a symlink and leaves its target alone", async () => {
    const real = path.join(tmp, "real-site");
    fs.mkdirSync(real);
    fs.writeFileSync(path.join(real, "settings.php"), "x");
    fs.symlinkSync(real, r("p2/sites/b.com"));
    const err = await rejection(tree.removeSiteFolder("p2/sites/b.com", dataDirs));
    expect(err.code).toBe("PRECONDITION");
    expect(fs.existsSync(path.join(real, "settings.php"))).toBe(true);
  });
});

describe("resolve (confinement to the root)", () => {
  it("returns the absolute path of a path inside the root", async () => {
    expect(await tree.resolve("p1/sites/a.com")).toBe(r("p1/sites/a.com"));
    expect(await tree.resolve("p1/sites/not-yet/files")).toBe(r("p1/sites/not-yet/files"));
  });

  it("refuses a site folder whose platform is a symlink to a directory outside the root (OUTSIDE_ROOT)", async () => {
    const outside = path.join(tmp, "elsewhere");
    fs.mkdirSync(path.join(outside, "sites", "a.com", "files"), { recursive: true });
    fs.symlinkSync(outside, r("p3"));
    const err = await rejection(tree.resolve("p3/sites/a.com"));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(err.context.path).toBe("p3/sites/a.com");
    // also for paths below that do not exist yet
    expect((await rejection(tree.resolve("p3/sites/new.com/files"))).code).toBe("OUTSIDE_ROOT");
  });

  it("accepts a platform that is a symlink to a directory inside the root", async () => {
    fs.symlinkSync(r("p2"), r("p2-alias"));
    expect(await tree.resolve("p2-alias/sites/b.com")).toBe(r("p2-alias/sites/b.com"));
  });

  it.each(["../x", "../root2/p1", "p1/../../x", ".."])("refuses %s", async (rel) => {
    fs.mkdirSync(path.join(tmp, "root2", "p1"), { recursive: true });
    expect((await rejection(tree.resolve(rel))).code).toBe("OUTSIDE_ROOT");
  });

  it("works when the root itself is reached through a symlink", async () => {
    fs.symlinkSync(root, path.join(tmp, "root-link"));
    const viaLink = new SiteTree(path.join(tmp, "root-link"));
    expect(await viaLink.resolve("p1/sites/a.com")).toBe(path.join(tmp, "root-link", "p1/sites/a.com"));
  });
});

describe("preflight", () => {
  const opts = { targetMustBeAbsent: true, restoresHere: true };

  it("a clean tree has no problems and lists the data dirs", async () => {
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([]);
    expect(report.dataDirs).toEqual([
      { dataDir: "files", kind: "directory" },
      { dataDir: "private/files", kind: "directory" },
    ]);
  });

  it("lists a symlink data dir with its target and an absent one as absent", async () => {
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.symlinkSync("/mnt/gluster/a.com", r("p1/sites/a.com/files"));
    fs.rmSync(r("p1/sites/a.com/private"), { recursive: true });
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([]);
    expect(report.dataDirs).toEqual([
      { dataDir: "files", kind: "symlink", linkTarget: "/mnt/gluster/a.com" },
      { dataDir: "private/files", kind: "absent" },
    ]);
  });

  describe("a data dir that is a relative symlink: read from its new folder once moved", () => {
    /** files → `target` (relative), with `storage/files` under the root to point at */
    function relativeFiles(target: string): void {
      fs.mkdirSync(r("storage/files"), { recursive: true });
      fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
      fs.symlinkSync(target, r("p1/sites/a.com/files"));
    }

    it("refused (DANGLING_SYMLINK, naming the path and where it would point) when it would dangle there", async () => {
      // the target platform one level deeper: ../../../storage/files resolves from p1/sites/a.com, not from d10/web/sites/b.com
      fs.mkdirSync(r("d10/web/sites"), { recursive: true });
      relativeFiles("../../../storage/files");
      const report = await tree.preflight({ ...m, to: "d10/web" }, opts);
      expect(report.problems).toEqual([
        {
          code: "DANGLING_SYMLINK",
          path: "p1/sites/a.com/files",
          message: `data dir p1/sites/a.com/files is a relative symlink (→ ../../../storage/files) that would dangle in d10/web/sites/b.com: ${r("d10/storage/files")} does not exist; make it absolute or move its target first`,
        },
      ]);
      expect(report.dataDirs[0]).toEqual({ dataDir: "files", kind: "symlink", linkTarget: "../../../storage/files" });
    });

    it("accepted when it resolves from the new folder too (same depth), and where nothing is restored it is not checked", async () => {
      relativeFiles("../../../storage/files");
      expect((await tree.preflight(m, opts)).problems).toEqual([]);
      fs.mkdirSync(r("d10/web/sites"), { recursive: true });
      expect((await tree.preflight({ ...m, to: "d10/web" }, { ...opts, restoresHere: false })).problems).toEqual([]);
    });

    it("accepted when it points inside the site folder (copied to the new one by push-site) or at another data dir", async () => {
      fs.mkdirSync(r("p1/sites/a.com/real-files"));
      fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
      fs.symlinkSync("real-files", r("p1/sites/a.com/files"));
      fs.rmSync(r("p1/sites/a.com/private/files"), { recursive: true });
      fs.symlinkSync("../real-files", r("p1/sites/a.com/private/files"));
      expect((await tree.preflight(m, opts)).problems).toEqual([]);
      fs.rmSync(r("p1/sites/a.com/real-files"), { recursive: true });
      expect((await tree.preflight(m, opts)).problems.map((p) => [p.code, p.path])).toEqual([
        ["DANGLING_SYMLINK", "p1/sites/a.com/files"],
        ["DANGLING_SYMLINK", "p1/sites/a.com/private/files"],
      ]);
    });

    it("an absolute symlink is never refused for it, dangling or not", async () => {
      fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
      fs.symlinkSync("/nonexistent/gluster/a.com", r("p1/sites/a.com/files"));
      expect((await tree.preflight(m, opts)).problems).toEqual([]);
    });
  });

  it("reports SOURCE_MISSING with the path", async () => {
    fs.rmSync(r("p1/sites/a.com"), { recursive: true });
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([expect.objectContaining({ code: "SOURCE_MISSING", path: "p1/sites/a.com" })]);
  });

  it("reports TARGET_EXISTS with the path, unless the target may exist", async () => {
    fs.mkdirSync(r("p2/sites/b.com"));
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([expect.objectContaining({ code: "TARGET_EXISTS", path: "p2/sites/b.com" })]);
    expect((await tree.preflight(m, { ...opts, targetMustBeAbsent: false })).problems).toEqual([]);
  });

  it("reports TARGET_PLATFORM_MISSING with the path", async () => {
    fs.rmSync(r("p2"), { recursive: true });
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([expect.objectContaining({ code: "TARGET_PLATFORM_MISSING", path: "p2/sites" })]);
  });

  it("reports several problems at once", async () => {
    fs.rmSync(r("p1/sites/a.com"), { recursive: true });
    fs.rmSync(r("p2"), { recursive: true });
    const codes = (await tree.preflight(m, opts)).problems.map((p) => p.code).sort();
    expect(codes).toEqual(["SOURCE_MISSING", "TARGET_PLATFORM_MISSING"]);
  });

  it("reports a site folder that is a symlink", async () => {
    const real = path.join(root, "real-a");
    fs.renameSync(r("p1/sites/a.com"), real);
    fs.symlinkSync(real, r("p1/sites/a.com"));
    const codes = (await tree.preflight(m, opts)).problems.map((p) => p.code);
    expect(codes).toContain("SITE_IS_SYMLINK");
  });

  it("reports a data dir that is a plain file", async () => {
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.writeFileSync(r("p1/sites/a.com/files"), "");
    const report = await tree.preflight(m, opts);
    expect(report.problems).toEqual([expect.objectContaining({ code: "DATA_NOT_DIRECTORY", path: "p1/sites/a.com/files" })]);
  });

  it("reports a data dir under a plain file (private is a file) instead of throwing", async () => {
    fs.rmSync(r("p1/sites/a.com/private"), { recursive: true });
    fs.writeFileSync(r("p1/sites/a.com/private"), "");
    const report = await tree.preflight(m, opts);
    expect(report.dataDirs.find((d) => d.dataDir === "private/files")?.kind).toMatch(/absent|other/);
  });

  it("reports OUTSIDE_ROOT as a problem instead of throwing", async () => {
    const outside = path.join(tmp, "elsewhere");
    fs.mkdirSync(path.join(outside, "sites", "a.com"), { recursive: true });
    fs.rmSync(r("p1"), { recursive: true });
    fs.symlinkSync(outside, r("p1"));
    const problems = (await tree.preflight(m, opts)).problems;
    expect(problems).toContainEqual(expect.objectContaining({ code: "OUTSIDE_ROOT", path: "p1/sites/a.com" }));
  });

  it("changes nothing on disk", async () => {
    const list = (dir: string): string[] =>
      fs.readdirSync(dir, { recursive: true, withFileTypes: false }).map(String).sort();
    const before = list(root);
    await tree.preflight(m, opts);
    expect(list(root)).toEqual(before);
  });
});

describe("discardParked", () => {
  it("unlinks a parked symlink without touching its target and deletes a parked directory", async () => {
    const shared = path.join(tmp, "gluster");
    fs.mkdirSync(shared);
    fs.writeFileSync(path.join(shared, "keep"), "k");
    fs.rmSync(r("p1/sites/a.com/files"), { recursive: true });
    fs.symlinkSync(shared, r("p1/sites/a.com/files"));
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");

    const changes = await tree.discardParked(m, ledger);
    expect(changes.map((c) => [c.dataDir, c.kind, c.result])).toEqual([
      ["files", "symlink", "removed"],
      ["private/files", "directory", "removed"],
    ]);
    expect(fs.readFileSync(path.join(shared, "keep"), "utf8")).toBe("k");
    expect(exists(".quick-migrate-park")).toBe(false);
    expect(ledger.arr).toEqual([]);
    // the site folder itself is left alone
    expect(exists("p1/sites/a.com/settings.php")).toBe(true);
  });

  it("only discards what the ledger says is parked", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p2/sites/b.com"));
    await tree.moveData({ ...m, dataDirs: ["files"] }, ledger, "park", "new");
    const changes = await tree.discardParked(m, ledger);
    expect(changes.map((c) => c.dataDir)).toEqual(["private/files"]);
    expect(exists("p2/sites/b.com/files/x")).toBe(true);
    expect(ledger.arr).toEqual([{ dataDir: "files", kind: "directory", ...identity("p2/sites/b.com/files"), at: "new" }]);
  });

  it("is idempotent", async () => {
    const ledger = new MemLedger([{ dataDir: "files", kind: "directory", at: "park" }]);
    const changes = await tree.discardParked(m, ledger);
    expect(changes.map((c) => c.result)).toEqual(["already-done"]);
    expect(ledger.arr).toEqual([]);
  });
});

describe("moveSiteFolder", () => {
  it("renames the site folder (same inode) and is idempotent", async () => {
    const before = ino("p1/sites/a.com");
    expect((await tree.moveSiteFolder("p1/sites/a.com", "p2/sites/b.com"))[0]?.result).toBe("renamed");
    expect(ino("p2/sites/b.com")).toBe(before);
    expect((await tree.moveSiteFolder("p1/sites/a.com", "p2/sites/b.com"))[0]?.result).toBe("already-done");
  });

  it("refuses to overwrite an existing target (CONFLICT)", async () => {
    fs.mkdirSync(r("p2/sites/b.com"));
    expect((await rejection(tree.moveSiteFolder("p1/sites/a.com", "p2/sites/b.com"))).code).toBe("CONFLICT");
    expect(exists("p1/sites/a.com/files/x")).toBe(true);
  });
});
