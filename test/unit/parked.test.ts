// Where `parked list`, `parked restore` and the agent's preflight look for a parked data dir: only
// through the root's confinement (shared/confined.ts), so a park area whose folder is swapped for a
// symlink out of the root is never taken for the data dir's place.
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { locate } from "../../agent/parked.js";
import { type MigrationSpec, PARK_FOLDER, parkedRel } from "../../shared/migration.js";

const m: MigrationSpec = { id: "20260101T000000Z-aaaaaa", from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files"] };

let base: string;
let root: string;

beforeEach(async () => {
  base = await mkdtemp(path.join(tmpdir(), "qm-parked-"));
  root = path.join(base, "root");
  fs.mkdirSync(path.join(root, "p1/sites/a.com"), { recursive: true });
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

describe("locate", () => {
  it("finds a data dir parked in the park area under the root", async () => {
    fs.mkdirSync(path.join(root, parkedRel(m.id, "files")), { recursive: true });
    expect(await locate(root, m, { dataDir: "files", kind: "directory", at: "park" })).toEqual({ place: "park", exists: true });
  });

  it("does not take a park area that leads out of the root for the data dir's place", async () => {
    // what would be the parked data dir, reached through a symlinked park folder
    const outside = path.join(base, "outside");
    fs.mkdirSync(path.join(outside, m.id, "files"), { recursive: true });
    fs.symlinkSync(outside, path.join(root, PARK_FOLDER));
    expect(fs.existsSync(path.join(root, parkedRel(m.id, "files"))), "reachable without the confinement").toBe(true);
    expect(await locate(root, m, { dataDir: "files", kind: "directory", at: "park" })).toEqual({ place: "park", exists: false });
  });
});
