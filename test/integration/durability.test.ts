// Renames survive a power cut: traced with strace (real syscalls of a real process, from dist/), every
// rename of a data dir or a site folder is followed by an fsync of both parent folders before the
// ledger records it; the journal's folders and event log are fsynced when they are created. Skipped
// when strace is not installed.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

function hasStrace(): boolean {
  try {
    execFileSync("strace", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const SCRIPT = `
import fs from "node:fs";
const [repo, root, state] = process.argv.slice(2);
const { SiteTree } = await import(repo + "/dist/shared/siteTree.js");
const { Registry } = await import(repo + "/dist/agent/registry.js");
const { Journal } = await import(repo + "/dist/controller/journal.js");
fs.mkdirSync(root + "/p1/sites/a.com/files", { recursive: true });
fs.mkdirSync(root + "/p1/sites/a.com/private/files", { recursive: true });
fs.mkdirSync(root + "/p2/sites", { recursive: true });
const tree = new SiteTree(root);
const m = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files", "private/files"] };
// the ledger in another folder (the agent's state dir), in the agent's record, written as an Apply writes it
fs.mkdirSync(state + "/agent/migrations", { recursive: true });
const registry = new Registry(state + "/agent");
const record = await registry.register(m, false);
await tree.moveData(m, registry.applyLedger(record), "old", "park");
await registry.recordOperation(record, "fronts-park-data/park-data", { changes: [] });
await tree.moveSiteFolder("p1/sites/a.com", "p2/sites/a.com");
const journal = await Journal.create(state, "20240101T000000Z-abcdef", { plan: {} });
await journal.append({ event: "step-start" });
`;

/** The agent's record of migration m1 (Registry.file). */
const RECORD = (state: string) => `${state}/agent/migrations/m1.json`;

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-durable-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/**
 * The traced calls in the order they returned: "rename <from> <to>", "fsync <path>", "fdatasync <path>",
 * "create <path>", and "write <path>" for a write to an agent's record file.
 */
function trace(root: string, state: string): string[] {
  const script = path.join(tmp, "run.mjs");
  fs.writeFileSync(script, SCRIPT);
  const out = path.join(tmp, "strace.out");
  execFileSync("strace", ["-f", "-y", "-e", "trace=rename,renameat,renameat2,fsync,fdatasync,openat,write", "-o", out, process.execPath, script, repoRoot(), root, state]);
  const calls: string[] = [];
  // a rename through a folder held open names it /proc/self/fd/N/<name>: N is the folder last opened as N
  const opened = new Map<string, string>();
  const real = (p: string) => p.replace(/^\/proc\/self\/fd\/(\d+)\//, (whole, fd: string) => `${opened.get(fd) ?? whole}/`);
  // a call another thread's call overlapped is split in two lines (`<unfinished ...>`, then `<... resumed>`):
  // joined again, it counts where it returned
  const pending = new Map<string, string>();
  for (const raw of fs.readFileSync(out, "utf8").split("\n")) {
    const unfinished = /^(\d+) +(.*) <unfinished \.\.\.>$/.exec(raw);
    if (unfinished) {
      pending.set(unfinished[1] as string, unfinished[2] as string);
      continue;
    }
    const resumed = /^(\d+) +<\.\.\. \w+ resumed>(.*)$/.exec(raw);
    const line = resumed ? `${resumed[1]} ${pending.get(resumed[1] as string) ?? ""}${resumed[2]}` : raw;
    const open = /^(?:\d+ +)?openat\(.*\) = (\d+)<([^>]+)>$/.exec(line);
    if (open) opened.set(open[1] as string, open[2] as string);
    const rename = /rename(?:at2?)?\((?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)", (?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)".*= 0$/.exec(line);
    if (rename) calls.push(`rename ${real(rename[1] as string)} ${real(rename[2] as string)}`);
    const fsync = /(fsync|fdatasync)\(\d+<([^>]+)>\)\s+= 0$/.exec(line);
    if (fsync) calls.push(`${fsync[1]} ${fsync[2]}`);
    const write = /^(?:\d+ +)?write\(\d+<([^>]+\/migrations\/[^>]+\.json)>.*= \d+$/.exec(line);
    if (write) calls.push(`write ${write[1]}`);
    const create = /openat\(AT_FDCWD(?:<[^>]*>)?, "([^"]+)", [^)]*O_CREAT\|O_EXCL.*= \d+</.exec(line);
    if (create) calls.push(`create ${create[1]}`);
  }
  return calls;
}

describe.skipIf(!hasStrace())("durability (traced with strace)", () => {
  it("a data dir's rename: both parent folders fsynced before the ledger records it", () => {
    const root = path.join(tmp, "root");
    const state = path.join(tmp, "state");
    fs.mkdirSync(state);
    const calls = trace(root, state);
    for (const [from, to] of [
      ["p1/sites/a.com/files", ".quick-migrate-park/m1/files"],
      ["p1/sites/a.com/private/files", ".quick-migrate-park/m1/private%2Ffiles"],
    ] as const) {
      const renamed = calls.indexOf(`rename ${path.join(root, from)} ${path.join(root, to)}`);
      expect(renamed, `${from} renamed:\n${calls.join("\n")}`).toBeGreaterThan(-1);
      // a version appended to the record, or the record written anew and renamed over it
      const recorded = calls.findIndex((c, i) => i > renamed && (c === `write ${RECORD(state)}` || (c.startsWith("rename ") && c.endsWith(RECORD(state)))));
      expect(recorded, `the ledger records it after:\n${calls.join("\n")}`).toBeGreaterThan(renamed);
      const between = calls.slice(renamed, recorded);
      expect(between, `between the rename and its record:\n${between.join("\n")}`).toEqual(
        expect.arrayContaining([`fsync ${path.dirname(path.join(root, from))}`, `fsync ${path.dirname(path.join(root, to))}`]),
      );
    }
    // the record is made whole before anything else: its temp file fsynced, renamed over the record, and
    // the folder that holds it fsynced
    const made = calls.findIndex((c) => c.startsWith("rename ") && c.endsWith(RECORD(state)));
    expect(made, `the record made:\n${calls.join("\n")}`).toBeGreaterThan(-1);
    const tmpFile = (calls[made] as string).split(" ")[1] as string;
    expect(calls.slice(0, made), "the temp file fsynced before it is renamed over the record").toContain(`fsync ${tmpFile}`);
    const firstRename = calls.findIndex((c) => c.startsWith(`rename ${root}/`));
    expect(calls.slice(made, firstRename), "the record's folder fsynced after").toContain(`fsync ${path.join(state, "agent", "migrations")}`);
    // the intents are on disk before the first rename: appended to the record, and the record flushed
    const intent = calls.findLastIndex((c, i) => i < firstRename && c === `write ${RECORD(state)}`);
    expect(intent, `the intents appended before the first rename:\n${calls.join("\n")}`).toBeGreaterThan(made);
    expect(calls.slice(intent, firstRename), "and flushed before it").toContain(`fdatasync ${RECORD(state)}`);
    // every version appended is flushed before the next call that depends on it
    for (const [i, c] of calls.entries()) {
      if (c !== `write ${RECORD(state)}`) continue;
      expect(calls[i + 1], `the append at ${i} flushed next:\n${calls.join("\n")}`).toBe(`fdatasync ${RECORD(state)}`);
    }
    // the park folders made for it are fsynced in the folders that hold them
    expect(calls).toEqual(expect.arrayContaining([`fsync ${root}`, `fsync ${path.join(root, ".quick-migrate-park")}`]));
  });

  it("a site folder's rename: both parent folders fsynced before it returns", () => {
    const root = path.join(tmp, "root");
    const state = path.join(tmp, "state");
    fs.mkdirSync(state);
    const calls = trace(root, state);
    const renamed = calls.indexOf(`rename ${path.join(root, "p1/sites/a.com")} ${path.join(root, "p2/sites/a.com")}`);
    expect(renamed, calls.join("\n")).toBeGreaterThan(-1);
    const next = calls.findIndex((c, i) => i > renamed && c.startsWith("create "));
    expect(calls.slice(renamed, next)).toEqual(expect.arrayContaining([`fsync ${path.join(root, "p1/sites")}`, `fsync ${path.join(root, "p2/sites")}`]));
  });

  it("the journal: its folders and its event log fsynced when created, each appended line fsynced", () => {
    const root = path.join(tmp, "root");
    const state = path.join(tmp, "state");
    fs.mkdirSync(state);
    const calls = trace(root, state);
    const journal = path.join(state, "migrations", "20240101T000000Z-abcdef");
    const events = path.join(journal, "events.jsonl");
    const created = calls.indexOf(`create ${events}`);
    expect(created, calls.join("\n")).toBeGreaterThan(-1);
    const before = calls.slice(0, created);
    expect(before).toEqual(expect.arrayContaining([`fsync ${state}`, `fsync ${path.join(state, "migrations")}`]));
    expect(before.some((c) => c.startsWith(`fsync ${journal}/.plan.json.`)), "plan.json written through an fsynced temp file").toBe(true);
    const after = calls.slice(created);
    expect(after[1], "the journal folder fsynced right after the event log is created").toBe(`fsync ${journal}`);
    expect(after.slice(2)).toContain(`fsync ${events}`);
  });
});
