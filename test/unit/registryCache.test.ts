// Registry.find keeps what it read of each record by the file's identity: whatever changes the file
// (the agent's own appends and atomic writes, `parked restore` in another process, an operator's editor writing in
// place) is read again; a record handed out is the caller's own copy.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { type MigrationRecord, Registry } from "../../agent/registry.js";
import type { MigrationSpec } from "../../shared/migration.js";
import { agentStateDirEachTest } from "../helpers/agentRecord.js";

const stateDir = agentStateDirEachTest("qm-registry-");

const ID = "20260301T000000Z-abcdef";
const spec: MigrationSpec = { id: ID, from: "p1", site: "shop.example.com", to: "p2", newSite: "shop.example.com", dataDirs: ["files"] };
const file = () => path.join(stateDir(), "migrations", `${ID}.json`);

describe("Registry.find", () => {
  it("sees a record replaced by another writer, and one written in place with the same size", async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    expect((await registry.find(ID))?.ledger).toEqual([]);

    // another process (parked restore) changes it the same way the agent does: a version appended
    const other = new Registry(stateDir());
    const changed = (await other.find(ID)) as MigrationRecord;
    changed.ledger = [{ dataDir: "files", kind: "directory", at: "park" }];
    await other.save(changed);
    expect((await registry.find(ID))?.ledger).toEqual([{ dataDir: "files", kind: "directory", at: "park" }]);

    // written in place, same inode and the same length: its times still tell
    const text = fs.readFileSync(file(), "utf8");
    const edited = text.replace('"at":"park"', '"at":"new" ');
    expect(edited.length).toBe(text.length);
    await new Promise((r) => setTimeout(r, 20));
    fs.writeFileSync(file(), edited);
    expect((await registry.find(ID))?.ledger[0]?.at).toBe("new");
    expect(record.migration).toEqual(spec);
  });

  it("hands out copies: changing one does not change what the next find returns", async () => {
    const registry = new Registry(stateDir());
    await registry.register(spec, false);
    const first = (await registry.find(ID)) as MigrationRecord;
    first.ledger.push({ dataDir: "files", kind: "directory", at: "park" });
    first.operations = { "x/park-data": { at: "now", count: 1 } };
    const second = (await registry.find(ID)) as MigrationRecord;
    expect(second.ledger).toEqual([]);
    expect(second.operations).toEqual({});
    // the migration stays as checkMigration leaves it: frozen
    expect(Object.isFrozen(first.migration) && Object.isFrozen(second.migration) && Object.isFrozen(second.migration.dataDirs)).toBe(true);
  });

  it("a record removed is gone; a record that no longer parses fails as before", async () => {
    const registry = new Registry(stateDir());
    await registry.register(spec, false);
    await registry.find(ID);
    fs.rmSync(file());
    expect(await registry.find(ID)).toBeUndefined();
    fs.writeFileSync(file(), "{ not json");
    await expect(registry.find(ID)).rejects.toThrow(SyntaxError);
  });
});
