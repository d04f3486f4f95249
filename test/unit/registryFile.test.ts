// An agent's record file holds the record's versions, one line each: a save appends the new version and
// flushes it; the last whole version is the record. An append that never finished, a file written whole
// by an earlier agent or by hand, a file changed behind the agent's back, one grown past
// COMPACT_AT_BYTES: each is read as the record it last held whole, and written anew at the next save.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { COMPACT_AT_BYTES, type MigrationRecord, Registry, lastVersion } from "../../agent/registry.js";
import type { MigrationSpec } from "../../shared/migration.js";
import { fillDisk, isRoot, mountTmpfsOver } from "../helpers/disk.js";
import { agentStateDirEachTest } from "../helpers/agentRecord.js";

const stateDir = agentStateDirEachTest("qm-registryfile-");

const ID = "20260301T000000Z-abcdef";
const spec: MigrationSpec = { id: ID, from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files"] };
const file = () => path.join(stateDir(), "migrations", `${ID}.json`);
const lines = () => fs.readFileSync(file(), "utf8").split("\n").slice(0, -1);
const parked = (at: "old" | "park" | "new") => [{ dataDir: "files", kind: "directory" as const, ino: 7, at }];

describe("an agent's record file", () => {
  it("gets one line appended per save, on the same file; the last line is the record", async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    const ino = fs.statSync(file()).ino;
    for (const at of ["park", "new", "old"] as const) {
      record.ledger = parked(at);
      await registry.save(record);
    }
    expect(lines()).toHaveLength(4);
    expect(lines().map((l) => (JSON.parse(l) as MigrationRecord).ledger[0]?.at ?? "none")).toEqual(["none", "park", "new", "old"]);
    expect(fs.statSync(file()).ino, "appended to, never replaced").toBe(ino);
    expect((await new Registry(stateDir()).find(ID))?.ledger).toEqual(parked("old"));
  });

  it("an append that never finished is not the record: the version before it is, and the next save writes the file anew", async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    record.ledger = parked("park");
    await registry.save(record);
    const whole = fs.readFileSync(file(), "utf8");

    for (const tail of ['{"migration":{"id":"2026', "\0".repeat(900)]) {
      fs.writeFileSync(file(), whole + tail);
      const reader = new Registry(stateDir());
      const found = (await reader.find(ID)) as MigrationRecord;
      expect(found.ledger, JSON.stringify(tail)).toEqual(parked("park"));
      found.ledger = parked("new");
      const ino = fs.statSync(file()).ino;
      await reader.save(found);
      expect(lines(), "written anew, with its last version only").toEqual([JSON.stringify(found)]);
      expect(fs.statSync(file()).ino).not.toBe(ino);
    }
  });

  it("a whole last line that does not parse is an unreadable record: the version before it is not taken instead", async () => {
    const registry = new Registry(stateDir());
    await registry.register(spec, false);
    fs.appendFileSync(file(), '{"migration": edited by hand}\n');
    await expect(new Registry(stateDir()).find(ID)).rejects.toThrow(SyntaxError);
  });

  it("a record written whole by an earlier agent (pretty-printed) or by hand is read, and written anew at its next save", async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    record.ledger = parked("park");
    for (const text of [`${JSON.stringify(record, null, 2)}\n`, JSON.stringify(record)]) {
      fs.writeFileSync(file(), text);
      const reader = new Registry(stateDir());
      const found = (await reader.find(ID)) as MigrationRecord;
      expect(found.ledger).toEqual(parked("park"));
      found.ledger = parked("new");
      await reader.save(found);
      expect(lines()).toEqual([JSON.stringify(found)]);
      expect((await new Registry(stateDir()).find(ID))?.ledger).toEqual(parked("new"));
    }
  });

  it("a file changed behind the agent's back is written anew, not appended to", async () => {
    const mine = new Registry(stateDir());
    const record = await mine.register(spec, false);
    const other = new Registry(stateDir());
    const theirs = (await other.find(ID)) as MigrationRecord;
    theirs.ledger = parked("park");
    await other.save(theirs);
    expect(lines()).toHaveLength(2);
    // what this agent saves is what it holds; the point is that it is never glued onto a file it did not read
    record.ledger = parked("new");
    await mine.save(record);
    expect(lines()).toEqual([JSON.stringify(record)]);
  });

  it(`grows to at most ${COMPACT_AT_BYTES} bytes: past that it is written anew with its last version`, async () => {
    const registry = new Registry(stateDir());
    const record = await registry.register(spec, false);
    const sizes: number[] = [];
    for (let n = 0; n < 60; n++) {
      record.operations = { "fronts-park-data/park-data": { at: new Date(n).toISOString(), count: n, error: { code: "IO", message: "x".repeat(2000) } } };
      await registry.save(record);
      sizes.push(fs.statSync(file()).size);
      expect(lastVersion(fs.readFileSync(file(), "utf8")).value).toEqual(record);
    }
    expect(Math.max(...sizes)).toBeLessThanOrEqual(COMPACT_AT_BYTES);
    const shrunk = sizes.findIndex((s, i) => i > 0 && s < (sizes[i - 1] as number));
    expect(shrunk, `sizes: ${sizes.join(" ")}`).toBeGreaterThan(0);
    expect(sizes[shrunk], "one version left").toBe(Buffer.byteLength(`${JSON.stringify({ ...record, operations: { "fronts-park-data/park-data": { at: new Date(shrunk).toISOString(), count: shrunk, error: { code: "IO", message: "x".repeat(2000) } } } })}\n`));
  });

  it.skipIf(!isRoot)("a save the full disk refuses fails naming the file, and leaves it as it was", async () => {
    await new Registry(stateDir()).register(spec, false);
    const unmount = mountTmpfsOver(stateDir(), "1m");
    try {
      // read where it is now, on the small disk: the next save appends to it
      const registry = new Registry(stateDir());
      const record = (await registry.find(ID)) as MigrationRecord;
      const before = fs.readFileSync(file());
      // larger than what is left of the file's last page: the append needs a page the disk does not have
      record.operations = { "fronts-park-data/park-data": { at: "now", count: 1, error: { code: "IO", message: "y".repeat(8000) } } };
      fillDisk(path.join(stateDir(), "filler"));
      await expect(registry.save(record)).rejects.toThrow(new RegExp(`${file()}.*(ENOSPC|no space)`, "i"));
      expect(fs.readFileSync(file()).equals(before), "the file as it was").toBe(true);
      expect((await new Registry(stateDir()).find(ID))?.operations).toEqual({});
      // room again: saved, written anew (after a failed save the agent appends to no file it has not read since)
      fs.rmSync(path.join(stateDir(), "filler"));
      await registry.save(record);
      expect(lines()).toEqual([JSON.stringify(record)]);
      expect((await new Registry(stateDir()).find(ID))?.operations).toEqual(record.operations);
    } finally {
      unmount();
    }
  });
});
