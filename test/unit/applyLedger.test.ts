// The ledger an Apply writes (Registry.applyLedger): every intent is on disk before the save that records
// it returns, with the rest of the record as the Apply left it; a rename's result waits for the next write,
// the record on disk saying `moving` meanwhile, which is what recovery reads as "may have been renamed".
import { describe, expect, it } from "vitest";
import { type MigrationRecord, Registry, onlySettles } from "../../agent/registry.js";
import type { MigrationSpec } from "../../shared/migration.js";
import type { LedgerEntry } from "../../shared/siteTree.js";
import { readRecord, agentStateDirEachTest } from "../helpers/agentRecord.js";

const stateDir = agentStateDirEachTest("qm-applyledger-");

const ID = "20260301T000000Z-abcdef";
const spec: MigrationSpec = { id: ID, from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files", "private/files"] };
const onDisk = (): MigrationRecord => readRecord<MigrationRecord>(stateDir(), ID);

const files: LedgerEntry = { dataDir: "files", kind: "directory", ino: 7, at: "old" };
const priv: LedgerEntry = { dataDir: "private/files", kind: "directory", ino: 8, at: "old" };

describe("Registry.applyLedger", () => {
  it("writes each intent at once, with the record's other changes; keeps each result for the next write", async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    record.run = 3; // what the Apply changed in the record before acting (its state, its run)
    const ledger = registry.applyLedger(record);

    await ledger.save([{ ...files, moving: "park" }]);
    expect(onDisk().ledger).toEqual([{ ...files, moving: "park" }]);
    expect(onDisk().run).toBe(3);

    // the rename happened: its result waits, the record on disk still says `moving`
    await ledger.save([{ ...files, at: "park" }]);
    expect(onDisk().ledger).toEqual([{ ...files, moving: "park" }]);
    expect(await ledger.entries()).toEqual([{ ...files, at: "park" }]);

    // the next intent writes the result with it
    await ledger.save([{ ...files, at: "park" }, { ...priv, moving: "park" }]);
    expect(onDisk().ledger).toEqual([{ ...files, at: "park" }, { ...priv, moving: "park" }]);

    await ledger.save([{ ...files, at: "park" }, { ...priv, at: "park" }]);
    expect(onDisk().ledger[1]).toEqual({ ...priv, moving: "park" });
    // the Apply's result writes the record, the last rename's result in it
    await registry.recordOperation(record, "fronts-park-data/park-data", { changes: [] });
    expect(onDisk().ledger).toEqual([{ ...files, at: "park" }, { ...priv, at: "park" }]);
  });

  it("onlySettles: only a `moving` dropped, at the place it was moving from or to, is kept back", () => {
    const moving: LedgerEntry = { ...files, moving: "park" };
    expect(onlySettles([moving], [{ ...files, at: "park" }])).toBe(true);
    expect(onlySettles([moving], [files])).toBe(true); // an intent that did not run
    expect(onlySettles([moving], [moving])).toBe(true);
    expect(onlySettles([], [moving])).toBe(false); // a new entry
    expect(onlySettles([files], [moving])).toBe(false); // an intent
    expect(onlySettles([files], [{ ...files, at: "park" }])).toBe(false); // moved with no intent on disk
    expect(onlySettles([moving], [{ ...files, at: "new" }])).toBe(false); // elsewhere than it was going
    expect(onlySettles([moving], [{ ...files, at: "park", ino: 9 }])).toBe(false);
    expect(onlySettles([moving, priv], [{ ...files, at: "park" }])).toBe(false); // an entry dropped
  });
});
