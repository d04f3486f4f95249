// The agent prunes the records of migrations that ended on its front (finished, or rolled back) once
// they are older than keepFinished; an unfinished one, or one it cannot read, is never pruned.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { type MigrationRecord, Registry } from "../../agent/registry.js";
import type { MigrationSpec } from "../../shared/migration.js";
import { agentStateDirEachTest } from "../helpers/agentRecord.js";

const DAY = 24 * 60 * 60 * 1000;
const NOW = Date.parse("2026-03-01T00:00:00.000Z");

const stateDir = agentStateDirEachTest("qm-prune-");

const spec = (id: string): MigrationSpec => ({ id, from: "p1", site: `${id}.example.com`, to: "p2", newSite: `${id}.example.com`, dataDirs: ["files"] });

function write(record: Omit<MigrationRecord, "local" | "registeredAt">): void {
  const full: MigrationRecord = { local: false, registeredAt: "2026-01-01T00:00:00.000Z", ...record };
  fs.writeFileSync(path.join(stateDir(), "migrations", `${record.migration.id}.json`), JSON.stringify(full));
}

const ended = (as: "finished" | "rolled-back", at: string) => ({ stages: [], ended: { as, at } });

describe("Registry.pruneEnded", () => {
  it("prunes what ended more than keepFinished ago, and nothing else", async () => {
    write({ migration: spec("finished-old"), ledger: [{ dataDir: "files", kind: "directory", at: "new" }], operations: { "fronts-remove-old/remove-old-site": { at: "2026-01-01T00:00:00.000Z", count: 1, changes: [] } }, state: { stages: [{ step: "fronts-park-data", status: "done" }], ended: { as: "finished", at: "2026-01-01T00:00:00.000Z" } } });
    write({ migration: spec("rolled-back-old"), ledger: [{ dataDir: "files", kind: "directory", at: "old" }], state: ended("rolled-back", "2026-01-15T00:00:00.000Z") });
    write({ migration: spec("rolled-back-recent"), ledger: [], state: ended("rolled-back", "2026-02-20T00:00:00.000Z") });
    write({ migration: spec("parked-old"), ledger: [{ dataDir: "files", kind: "directory", at: "park" }], state: { stages: [{ step: "fronts-park-data", status: "done" }] } });
    write({ migration: spec("registered-old"), ledger: [], state: { stages: [] } });
    // older agents wrote no state: finished by its operations, long ago
    write({ migration: spec("legacy-finished"), ledger: [{ dataDir: "files", kind: "directory", at: "new" }], operations: { "fronts-park-data/park-data": { at: "2025-01-01T00:00:00.000Z", count: 1, changes: [] }, "fronts-restore-data/restore-data": { at: "2025-01-01T00:01:00.000Z", count: 1, changes: [] }, "fronts-remove-old/remove-old-site": { at: "2025-01-01T00:02:00.000Z", count: 1, changes: [] } } });
    fs.writeFileSync(path.join(stateDir(), "migrations", "unreadable.json"), "{ not json");

    const registry = new Registry(stateDir());
    expect(await registry.pruneEnded(30 * DAY, NOW)).toEqual(["finished-old", "legacy-finished", "rolled-back-old"]);
    expect(await registry.ids()).toEqual(["parked-old", "registered-old", "rolled-back-recent", "unreadable"]);
    expect(fs.readdirSync(path.join(stateDir(), "migrations")).filter((f) => f.endsWith(".lock"))).toEqual([]);
    // keepFinished 0: what ended goes at once
    expect(await registry.pruneEnded(0, NOW)).toEqual(["rolled-back-recent"]);
  });

  it("keeps a record that says it ended while its ledger still shows data away from its place", async () => {
    write({ migration: spec("inconsistent"), ledger: [{ dataDir: "files", kind: "directory", at: "park" }], state: ended("rolled-back", "2025-01-01T00:00:00.000Z") });
    expect(await new Registry(stateDir()).pruneEnded(0, NOW)).toEqual([]);
  });
});
