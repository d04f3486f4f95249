// The durable writes the journal and the ledgers rely on: a line is appended whole or not at all (a torn
// tail is cut before the next append), and a failed write leaves no temporary file. The full-disk cases
// fill a real tmpfs (root only).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Journal } from "../../controller/journal.js";
import { QmError } from "../../shared/errors.js";
import { GroupCommitFile, mkdirDurable, writeFileAtomic } from "../../shared/fsutil.js";
import { fillDisk, isRoot, mountTmpfsOver } from "../helpers/disk.js";

let tmp: string;
const unmounts: Array<() => void> = [];
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-fsutil-"));
});
afterEach(() => {
  for (const u of unmounts.splice(0)) u();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("GroupCommitFile: each line whole or not at all", () => {
  it("appends a line with its newline, creating the file", async () => {
    const file = path.join(tmp, "events.jsonl");
    const log = new GroupCommitFile(file);
    await log.append('{"a":1}');
    await Promise.all([log.append('{"b":2}'), log.append('{"c":3}')]);
    await log.close();
    expect(fs.readFileSync(file, "utf8")).toBe('{"a":1}\n{"b":2}\n{"c":3}\n');
  });

  it.each([
    ["a torn JSON line", '{"a":1}\n{"b":2}\n{"event":"ack","ho', '{"a":1}\n{"b":2}\n'],
    ["a whole JSON object without its newline", '{"a":1}\n{"b":2}', '{"a":1}\n'],
    ["a file that is one torn line", '{"event":"pl', ""],
    ["a torn line longer than one read", `{"a":1}\n{"x":"${"y".repeat(10_000)}`, '{"a":1}\n'],
  ])("cuts %s off before appending", async (_what, before, kept) => {
    const file = path.join(tmp, "events.jsonl");
    fs.writeFileSync(file, before);
    const log = new GroupCommitFile(file);
    await log.append('{"c":3}');
    await log.close();
    expect(fs.readFileSync(file, "utf8")).toBe(`${kept}{"c":3}\n`);
  });

  it("a journal with a torn tail loads without it, and later events still parse", async () => {
    const state = path.join(tmp, "state");
    const journal = await Journal.create(state, "20240101T000000Z-abcdef", { plan: {} });
    await journal.append({ event: "step-start", step: "lock" });
    await journal.close();
    fs.appendFileSync(path.join(journal.dir, "events.jsonl"), '{"time":"x","event":"ack","step":"lo');
    const first = await Journal.load(state, "20240101T000000Z-abcdef");
    expect(first.events.map((e) => e.event)).toEqual(["step-start"]);
    await first.journal.append({ event: "step-end", step: "lock" });
    await first.journal.close();
    const second = await Journal.load(state, "20240101T000000Z-abcdef");
    expect(second.events.map((e) => e.event)).toEqual(["step-start", "step-end"]);
  });

  it.skipIf(!isRoot)("on a full disk: fails with IO naming the journal, and the file is left as it was (needs root for mount)", async () => {
    const dir = path.join(tmp, "small");
    fs.mkdirSync(dir);
    unmounts.push(mountTmpfsOver(dir, "64k"));
    const state = path.join(dir, "state");
    const journal = await Journal.create(state, "20240101T000000Z-abcdef", { plan: {} });
    await journal.append({ event: "step-start", step: "lock" });
    const file = path.join(journal.dir, "events.jsonl");
    const before = fs.readFileSync(file, "utf8");
    fillDisk(path.join(dir, "filler"));
    // longer than what is left of the file's last page: part of it is written, then ENOSPC
    const err = await journal.append({ event: "ack", detail: "x".repeat(20_000) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QmError);
    expect((err as QmError).code).toBe("IO");
    expect((err as QmError).message).toContain(file);
    expect((err as QmError).message).toContain("ENOSPC");
    expect(fs.readFileSync(file, "utf8")).toBe(before);
    // space freed: the next append works and the journal parses
    fs.rmSync(path.join(dir, "filler"));
    await journal.append({ event: "step-end", step: "lock" });
    await journal.close();
    expect((await Journal.load(state, "20240101T000000Z-abcdef")).events.map((e) => e.event)).toEqual(["step-start", "step-end"]);
  });
});

describe("GroupCommitFile", () => {
  it("lines given at once are all written, whole and in the order given", async () => {
    const file = path.join(tmp, "events.jsonl");
    const log = new GroupCommitFile(file);
    await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(JSON.stringify({ i }))));
    await log.close();
    const lines = fs.readFileSync(file, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.map((l) => (JSON.parse(l) as { i: number }).i)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  it("a line's promise resolves only once the line is in the file", async () => {
    const file = path.join(tmp, "events.jsonl");
    const log = new GroupCommitFile(file);
    const seen: string[] = [];
    await Promise.all(["a", "b", "c"].map((l) => log.append(l).then(() => seen.push(fs.readFileSync(file, "utf8")))));
    await log.close();
    for (const [i, content] of seen.entries()) expect(content.split("\n").slice(0, i + 1)).toEqual(["a", "b", "c"].slice(0, i + 1));
  });

  it("closed, it waits for the lines given; a later append opens the file again", async () => {
    const file = path.join(tmp, "events.jsonl");
    const log = new GroupCommitFile(file);
    const given = [log.append("a"), log.append("b")];
    await log.close();
    expect(fs.readFileSync(file, "utf8")).toBe("a\nb\n");
    await Promise.all(given);
    // meanwhile a torn line was left by another writer: cut off when the file is opened again
    fs.appendFileSync(file, '{"torn');
    await log.append("c");
    await log.close();
    expect(fs.readFileSync(file, "utf8")).toBe("a\nb\nc\n");
  });

  it("when a write fails, every line of it fails; the next write works", async () => {
    const file = path.join(tmp, "gone", "events.jsonl");
    const log = new GroupCommitFile(file);
    const results = await Promise.allSettled([log.append("a"), log.append("b")]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect((results[0] as PromiseRejectedResult).reason).toMatchObject({ code: "ENOENT" });
    fs.mkdirSync(path.dirname(file));
    await log.append("c");
    await log.close();
    expect(fs.readFileSync(file, "utf8")).toBe("c\n");
  });
});

describe("writeFileAtomic", () => {
  it("replaces the content and leaves no temporary file", async () => {
    const file = path.join(tmp, "d", "x.json");
    await writeFileAtomic(file, "one");
    await writeFileAtomic(file, "two");
    expect(fs.readFileSync(file, "utf8")).toBe("two");
    expect(fs.readdirSync(path.dirname(file))).toEqual(["x.json"]);
  });

  it.skipIf(!isRoot)("on a full disk: fails with IO naming the file, keeps the old content, leaves no temporary file (needs root for mount)", async () => {
    const dir = path.join(tmp, "small");
    fs.mkdirSync(dir);
    unmounts.push(mountTmpfsOver(dir, "64k"));
    const file = path.join(dir, "record.json");
    await writeFileAtomic(file, "old");
    fillDisk(path.join(dir, "filler"));
    const err = await writeFileAtomic(file, "n".repeat(100_000)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as QmError).code).toBe("IO");
    expect((err as QmError).message).toContain(file);
    expect(fs.readFileSync(file, "utf8")).toBe("old");
    expect(fs.readdirSync(dir).sort()).toEqual(["filler", "record.json"]);
  });
});

describe("mkdirDurable", () => {
  it("creates the missing folders, and is a no-op when they exist", async () => {
    const dir = path.join(tmp, "a", "b", "c");
    await mkdirDurable(dir, 0o700);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    await mkdirDurable(dir);
  });
});
