// SiteTree.moveData's options: a placeholder may be replaced when moving back into the old site folder
// only when asked (parked restore asks), and the afterRename hook runs between the rename and its record.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QmError } from "../../shared/errors.js";
import type { MigrationSpec } from "../../shared/migration.js";
import { type Ledger, type LedgerEntry, SiteTree } from "../../shared/siteTree.js";

const m: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "b.com", dataDirs: ["files", "private/files"] };

class MemLedger implements Ledger {
  constructor(public arr: LedgerEntry[] = []) {}
  entries = async (): Promise<LedgerEntry[]> => structuredClone(this.arr);
  save = async (e: LedgerEntry[]): Promise<void> => {
    this.arr = structuredClone(e);
  };
}

let tmp: string;
let root: string;
let tree: SiteTree;
const r = (rel: string) => path.join(root, rel);

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-moveopts-"));
  root = path.join(tmp, "root");
  fs.mkdirSync(r("p1/sites/a.com/files"), { recursive: true });
  fs.mkdirSync(r("p1/sites/a.com/private/files"), { recursive: true });
  fs.mkdirSync(r("p2/sites"), { recursive: true });
  fs.writeFileSync(r("p1/sites/a.com/files/x"), "x");
  fs.writeFileSync(r("p1/sites/a.com/private/files/y"), "y");
  tree = new SiteTree(root);
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("moveData options", () => {
  it("refuses an empty placeholder in the old site folder by default, before renaming anything", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p1/sites/a.com/private/files"));
    const err = await tree.moveData(m, ledger, "park", "old").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QmError);
    expect((err as QmError).code).toBe("CONFLICT");
    expect(fs.existsSync(r(".quick-migrate-park/m1/files/x")), "nothing moved").toBe(true);
  });

  it("replaces an empty placeholder in the old site folder with placeholderOk, never a non-empty one", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p1/sites/a.com/files"));
    const changes = await tree.moveData(m, ledger, "park", "old", { placeholderOk: true });
    expect(changes.map((c) => c.result)).toEqual(["rmdir-placeholder", "renamed"]);
    expect(fs.readFileSync(r("p1/sites/a.com/files/x"), "utf8")).toBe("x");

    await tree.moveData(m, ledger, "old", "park");
    fs.mkdirSync(r("p1/sites/a.com/files"));
    fs.writeFileSync(r("p1/sites/a.com/files/other"), "o");
    const err = await tree.moveData(m, ledger, "park", "old", { placeholderOk: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as QmError).code).toBe("CONFLICT");
    expect((err as QmError).context.path).toBe("p1/sites/a.com/files");
    expect(fs.existsSync(r(".quick-migrate-park/m1/files/x"))).toBe(true);
  });

  it("runs afterRename once the rename is on disk and before the ledger records it", async () => {
    const ledger = new MemLedger();
    const known = (rel: string) => {
      const st = fs.lstatSync(r(rel));
      return { ino: st.ino, ...(st.birthtimeMs ? { born: st.birthtimeMs } : {}) };
    };
    const files = known("p1/sites/a.com/files");
    const priv = known("p1/sites/a.com/private/files");
    const seen: Array<{ dataDir: string; ledger: LedgerEntry[]; parked: boolean }> = [];
    await tree.moveData(m, ledger, "old", "park", {
      afterRename: (dataDir) => {
        seen.push({ dataDir, ledger: structuredClone(ledger.arr), parked: fs.existsSync(r(`.quick-migrate-park/m1/${encodeURIComponent(dataDir)}`)) });
      },
    });
    // both intents are saved at once, before the first rename
    expect(seen).toEqual([
      {
        dataDir: "files",
        ledger: [
          { dataDir: "files", kind: "directory", ...files, at: "old", moving: "park" },
          { dataDir: "private/files", kind: "directory", ...priv, at: "old", moving: "park" },
        ],
        parked: true,
      },
      {
        dataDir: "private/files",
        ledger: [
          { dataDir: "files", kind: "directory", ...files, at: "park" },
          { dataDir: "private/files", kind: "directory", ...priv, at: "old", moving: "park" },
        ],
        parked: true,
      },
    ]);
    expect(ledger.arr.every((e) => e.at === "park" && e.moving === undefined)).toBe(true);
  });

  it("a rename that fails after the intents are saved withdraws its own intent and those after it; the renames before it stay recorded", async () => {
    const ledger = new MemLedger();
    const err = await tree.moveData(m, ledger, "old", "park", {
      // something takes the second data dir's place in the park folder once the first is renamed
      afterRename: (dataDir) => {
        if (dataDir === "files") fs.mkdirSync(r(".quick-migrate-park/m1/private%2Ffiles"));
      },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as QmError).code).toBe("CONFLICT");
    expect(ledger.arr.map((e) => [e.dataDir, e.at, e.moving])).toEqual([
      ["files", "park", undefined],
      ["private/files", "old", undefined],
    ]);
    expect(fs.readFileSync(r(".quick-migrate-park/m1/files/x"), "utf8")).toBe("x");
    expect(fs.readFileSync(r("p1/sites/a.com/private/files/y"), "utf8"), "the second data dir not moved").toBe("y");
  });

  it("a data dir found at neither of its places refuses the whole move before anything is renamed", async () => {
    const ledger = new MemLedger();
    await tree.moveData(m, ledger, "old", "park");
    // the second data dir vanished from the park area (not where the ledger says, nor anywhere else)
    fs.rmSync(r(".quick-migrate-park/m1/private%2Ffiles"), { recursive: true });
    fs.mkdirSync(r("p2/sites/b.com"));
    const before = structuredClone(ledger.arr);
    const err = await tree.moveData(m, ledger, "park", "new").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as QmError).code).toBe("CONFLICT");
    expect((err as QmError).message).toContain("data dir private/files is missing");
    expect(fs.readFileSync(r(".quick-migrate-park/m1/files/x"), "utf8"), "the first data dir not moved").toBe("x");
    expect(ledger.arr, "nothing saved").toEqual(before);
  });
});
