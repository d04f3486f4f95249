// The per-site lock on a real state dir: taken exclusively; taken over from an interrupted run only,
// atomically (of several takeovers at once exactly one wins), never from a running process, whatever
// pid reuse or reboots do; handed back or released at the end of a run.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type LockHolder, SiteLock } from "../../controller/siteLock.js";
import { processStartTime } from "../../shared/processes.js";
import { QmError } from "../../shared/errors.js";

let stateDir: string;
beforeEach(() => {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-lock-"));
});
afterEach(() => {
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const lockFile = (site = "a.com") => SiteLock.file(stateDir, site);
const lockDir = () => path.join(stateDir, "locks");
const readLock = (site = "a.com") => JSON.parse(fs.readFileSync(lockFile(site), "utf8")) as LockHolder;

/** the pid of a process that ran and exited */
let deadPid: number | undefined;

/** A lock left by a controller that is gone. */
function deadHolder(migrationId: string): LockHolder {
  deadPid ??= Number(execFileSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }));
  return { migrationId, pid: deadPid, startTime: "12345", host: os.hostname(), token: "0123456789abcdef" };
}

function writeLock(holder: LockHolder | string, site = "a.com"): void {
  fs.mkdirSync(lockDir(), { recursive: true });
  fs.writeFileSync(lockFile(site), typeof holder === "string" ? holder : `${JSON.stringify(holder)}\n`);
}

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "ok",
    (e: unknown) => (e instanceof QmError ? e.code : String(e)),
  );
}

describe("SiteLock", () => {
  it("acquire: exclusive, names this process; a second acquire is LOCKED", async () => {
    await SiteLock.acquire(stateDir, ["a.com", "b.com"], "m1");
    expect(readLock()).toMatchObject({ migrationId: "m1", pid: process.pid, host: os.hostname(), startTime: processStartTime(process.pid) });
    expect(await code(SiteLock.acquire(stateDir, ["b.com"], "m2"))).toBe("LOCKED");
    expect(fs.readdirSync(lockDir()).sort()).toEqual(["a.com.lock", "b.com.lock"]);
  });

  it("takeOver: refused while the holding process runs, and for another migration's lock", async () => {
    await SiteLock.acquire(stateDir, ["a.com"], "m1");
    expect(await code(SiteLock.takeOver(stateDir, ["a.com"], "m1"))).toBe("LOCKED");
    expect(await code(SiteLock.takeOver(stateDir, ["a.com"], "m2"))).toBe("LOCKED");
  });

  it("takeOver: from a process that is gone; the lock then names this one and nothing else is left", async () => {
    writeLock(deadHolder("m1"));
    const lock = await SiteLock.takeOver(stateDir, ["a.com"], "m1");
    expect(readLock()).toMatchObject({ migrationId: "m1", pid: process.pid });
    expect(fs.readdirSync(lockDir())).toEqual(["a.com.lock"]);
    await lock.release();
    expect(fs.readdirSync(lockDir())).toEqual([]);
  });

  it("a reused pid (this very process, another start time or another boot) does not count as the holder", async () => {
    const me = { migrationId: "m1", pid: process.pid, host: os.hostname(), startTime: processStartTime(process.pid) ?? "" };
    for (const holder of [{ ...me, startTime: "1" }, { ...me, bootId: "another-boot" }]) {
      writeLock(holder);
      expect(SiteLock.isAlive(holder)).toBe(false);
      await (await SiteLock.takeOver(stateDir, ["a.com"], "m1")).release();
    }
    expect(SiteLock.isAlive(me)).toBe(true);
  });

  it("of many takeovers at once, exactly one wins and the others are LOCKED", async () => {
    for (let round = 0; round < 20; round++) {
      writeLock(deadHolder("m1"));
      const results = await Promise.all(Array.from({ length: 5 }, () => code(SiteLock.takeOver(stateDir, ["a.com", "new.com"], "m1"))));
      expect(results.filter((r) => r === "ok"), results.join()).toHaveLength(1);
      expect(results.filter((r) => r === "LOCKED")).toHaveLength(4);
      // the winner holds both sites; the losers left no marker behind
      expect(fs.readdirSync(lockDir()).sort()).toEqual(["a.com.lock", "new.com.lock"]);
      fs.rmSync(lockDir(), { recursive: true });
    }
  });

  it("a takeover killed after it claimed the lock (its marker left, naming a process that is gone) is taken over in turn", async () => {
    const first = deadHolder("m1");
    writeLock(first);
    const killed = { ...deadHolder("m1"), token: "fedcba9876543210" };
    fs.writeFileSync(`${lockFile()}.next-${first.token}`, JSON.stringify(killed));
    expect(await SiteLock.holder(stateDir, "a.com")).toEqual(killed);
    const lock = await SiteLock.takeOver(stateDir, ["a.com"], "m1");
    expect(await SiteLock.holder(stateDir, "a.com")).toMatchObject({ pid: process.pid });
    expect(fs.readdirSync(lockDir())).toEqual(["a.com.lock"]);
    await lock.release();
  });

  it("a marker naming a running process: that process holds the lock", async () => {
    const first = deadHolder("m1");
    writeLock(first);
    const running = { migrationId: "m1", pid: process.pid, startTime: processStartTime(process.pid) ?? "", host: os.hostname(), token: "aaaabbbbccccdddd" };
    fs.writeFileSync(`${lockFile()}.next-${first.token}`, JSON.stringify(running));
    expect(await code(SiteLock.takeOver(stateDir, ["a.com"], "m1"))).toBe("LOCKED");
  });

  it("a hand-made lock file (one word) counts as held by that migration, by no process", async () => {
    writeLock("m1 by hand\n");
    expect(await SiteLock.holder(stateDir, "a.com")).toMatchObject({ migrationId: "m1", pid: 0 });
    expect(await code(SiteLock.takeOver(stateDir, ["a.com"], "m2"))).toBe("LOCKED");
    await (await SiteLock.takeOver(stateDir, ["a.com"], "m1")).release();
  });

  it("a missing lock is taken again by a takeover", async () => {
    const lock = await SiteLock.takeOver(stateDir, ["a.com"], "m1");
    expect(readLock()).toMatchObject({ migrationId: "m1", pid: process.pid });
    await lock.release();
  });

  it("handBack: the site stays locked for the migration, by no process; a takeover gets it", async () => {
    const lock = await SiteLock.acquire(stateDir, ["a.com"], "m1");
    await lock.handBack();
    const holder = await SiteLock.holder(stateDir, "a.com");
    expect(holder).toMatchObject({ migrationId: "m1", pid: 0 });
    expect(SiteLock.isAlive(holder as LockHolder)).toBe(false);
    expect(await code(SiteLock.acquire(stateDir, ["a.com"], "m2"))).toBe("LOCKED");
    await (await SiteLock.takeOver(stateDir, ["a.com"], "m1")).release();
    expect(fs.readdirSync(lockDir())).toEqual([]);
  });
});
