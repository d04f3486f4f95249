// What an agent's own record says of a migration: unfinished while a data dir is parked, in flight, or
// in the new site folder before the old one was removed; finished when rolled back or completed. And
// the problem a new migration of the same site meets, naming the id, where the data is and the fix.
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type MigrationRecord, Registry, isUnfinished, oldSiteRemoved, unsettledEntries } from "../../agent/registry.js";
import { sharesSite, unfinishedProblem, unfinishedProblems } from "../../agent/unfinished.js";
import type { MigrationSpec } from "../../shared/migration.js";
import type { LedgerEntry } from "../../shared/siteTree.js";

const u: MigrationSpec = { id: "20260101T000000Z-aaaaaa", from: "d7-98", site: "shop.example.com", to: "d7-99", newSite: "shop.example.com", dataDirs: ["files", "private/files"] };

function record(ledger: LedgerEntry[], operations: MigrationRecord["operations"] = {}, m: MigrationSpec = u): MigrationRecord {
  return { migration: m, local: false, registeredAt: "2026-01-01T00:00:00.000Z", ledger, operations };
}

const at = (dataDir: string, place: LedgerEntry["at"], moving?: LedgerEntry["moving"]): LedgerEntry => ({
  dataDir,
  kind: "directory",
  at: place,
  ...(moving ? { moving } : {}),
});

const removedOld = { "fronts-remove-old/remove-old-site": { at: "2026-01-01T00:01:00.000Z", count: 1, changes: [] } };
const removeOldFailed = { "fronts-remove-old/remove-old-site": { at: "2026-01-01T00:01:00.000Z", count: 1, error: { code: "NOT_EMPTY", message: "x" } } };

describe("unfinished, from the agent's record", () => {
  it.each([
    ["registered, nothing moved", [], {}, false],
    ["rolled back: every data dir at old", [at("files", "old"), at("private/files", "old")], {}, false],
    ["completed: all at new and the old site folder removed", [at("files", "new"), at("private/files", "new")], removedOld, false],
    ["parked", [at("files", "park"), at("private/files", "park")], {}, true],
    ["one parked, one back", [at("files", "old"), at("private/files", "park")], {}, true],
    ["a rename in flight out of old", [at("files", "old", "park")], {}, true],
    ["restored into new, old site folder not yet removed", [at("files", "new"), at("private/files", "new")], {}, true],
    ["restored into new, the removal failed", [at("files", "new")], removeOldFailed, true],
    ["old site folder removed, but a rename in flight since", [at("files", "new", "park")], removedOld, true],
  ] as const)("%s → unfinished %s", (_, ledger, operations, expected) => {
    const r = record([...ledger], operations);
    expect(isUnfinished(r)).toBe(expected);
    expect(unsettledEntries(r).length > 0).toBe(expected);
  });

  it("oldSiteRemoved: a successful remove-old-site under any step name; a failed one does not count", () => {
    expect(oldSiteRemoved(record([], removedOld))).toBe(true);
    expect(oldSiteRemoved(record([], { "other-step/remove-old-site": { at: "", count: 1, changes: [] } }))).toBe(true);
    expect(oldSiteRemoved(record([], removeOldFailed))).toBe(false);
    expect(oldSiteRemoved({ ...record([]), operations: undefined } as unknown as MigrationRecord)).toBe(false);
  });

  it("sharesSite: the old or new names meet, whatever the platforms", () => {
    const m = (site: string, newSite = site): MigrationSpec => ({ ...u, id: "m2", from: "x", to: "y", site, newSite });
    expect(sharesSite(u, m("shop.example.com"))).toBe(true);
    expect(sharesSite(u, m("other.example.com", "shop.example.com"))).toBe(true);
    expect(sharesSite({ ...u, newSite: "new.example.com" }, m("new.example.com"))).toBe(true);
    expect(sharesSite(u, m("other.example.com"))).toBe(false);
  });

  it("the problem names the id, the site, where each data dir is, and the commands that finish it", () => {
    const p = unfinishedProblem(u, [
      { dataDir: "files", place: "park", path: `.quick-migrate-park/${u.id}/files`, exists: true },
      { dataDir: "private/files", place: "new", path: "d7-99/sites/shop.example.com/private/files", exists: false, moving: "old" },
    ]);
    expect(p.code).toBe("UNFINISHED_MIGRATION");
    expect(p.path).toBe(`.quick-migrate-park/${u.id}/files`);
    expect(p.message).toBe(
      `migration ${u.id} of shop.example.com (d7-98 → d7-99) is unfinished on this front: ` +
        `files parked at .quick-migrate-park/${u.id}/files, ` +
        "private/files in the new site folder at d7-99/sites/shop.example.com/private/files (MISSING) (a rename to old was in flight); " +
        `finish it first: \`quick-migrate resume ${u.id}\` or \`quick-migrate rollback ${u.id}\` on the hostmaster that has its journal, ` +
        `or, if that journal is lost, \`quick-migrate-agent parked restore ${u.id}\` on this front`,
    );
    expect(p.message).not.toContain("\n");
  });
});

describe("unfinishedProblems, over the records on disk", () => {
  let base: string;
  let root: string;
  let registry: Registry;
  beforeEach(async () => {
    base = await mkdtemp(path.join(tmpdir(), "qm-unfinished-"));
    root = path.join(base, "root");
    registry = new Registry(path.join(base, "state"));
    fs.mkdirSync(path.join(root, ".quick-migrate-park", u.id, "files"), { recursive: true });
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  async function save(r: MigrationRecord): Promise<void> {
    const registered = await registry.register(r.migration, false);
    await registry.ledger(registered).save(r.ledger);
  }

  const next: MigrationSpec = { ...u, id: "20260202T000000Z-bbbbbb" };

  it("refuses a new migration of the site while one is parked here, but never the same id again", async () => {
    await save(record([at("files", "park")]));
    const problems = await unfinishedProblems(registry, root, next);
    expect(problems.map((p) => p.code)).toEqual(["UNFINISHED_MIGRATION"]);
    expect(problems[0]?.message).toContain(`files parked at .quick-migrate-park/${u.id}/files`);
    expect(await unfinishedProblems(registry, root, u)).toEqual([]);
  });

  it("ignores other sites, and finished migrations of this one", async () => {
    await save(record([at("files", "park")], {}, { ...u, id: "other-1", site: "other.example.com", newSite: "other.example.com" }));
    await save(record([at("files", "old")], {}, { ...u, id: "rolled-back-1" }));
    expect(await unfinishedProblems(registry, root, next)).toEqual([]);
  });

  it("a record it cannot read is a problem of its own, naming the file", async () => {
    fs.mkdirSync(path.join(base, "state", "migrations"), { recursive: true });
    fs.writeFileSync(path.join(base, "state", "migrations", "broken-1.json"), "{ not json");
    const problems = await unfinishedProblems(registry, root, next);
    expect(problems.map((p) => p.code)).toEqual(["RECORD_UNREADABLE"]);
    expect(problems[0]?.message).toContain(path.join(base, "state", "migrations", "broken-1.json"));
  });
});
