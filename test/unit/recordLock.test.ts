// One writer at a time for an agent's record: the service and `parked restore` serialize on the
// record's lock file; a lock left by a process that is gone is broken; a live one past the wait is BUSY.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { withRecordLock } from "../../agent/recordLock.js";
import { rejection } from "../helpers/rejection.js";
import { processStartTime } from "../../shared/processes.js";

let stateDir: string;
beforeEach(() => {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-lock-"));
  fs.mkdirSync(path.join(stateDir, "migrations"));
});
afterEach(() => {
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const lockFile = () => path.join(stateDir, "migrations", "m1.lock");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("withRecordLock", () => {
  it("runs two writers one after the other, never both at once, and leaves no lock file", async () => {
    const log: string[] = [];
    const writer = (name: string) =>
      withRecordLock(stateDir, "m1", { what: name }, async () => {
        log.push(`${name} in`);
        await sleep(100);
        log.push(`${name} out`);
      });
    await Promise.all([writer("a"), writer("b")]);
    expect([log.slice(0, 2), log.slice(2)].map((pair) => pair.map((e) => e.split(" ")[1]))).toEqual([
      ["in", "out"],
      ["in", "out"],
    ]);
    expect(fs.existsSync(lockFile())).toBe(false);
  });

  it("breaks a lock whose process is gone", async () => {
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: 2 ** 22 + 7, startTime: "1", what: "a crashed parked restore" }));
    expect(await withRecordLock(stateDir, "m1", { what: "test" }, async () => "ran")).toBe("ran");
  });

  it("refuses as BUSY, naming the holder, when a live writer keeps it past the wait", async () => {
    const startTime = processStartTime(process.pid);
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: process.pid, startTime, what: "the agent service" }));
    const err = await rejection(withRecordLock(stateDir, "m1", { what: "test", waitMs: 200 }, async () => "ran"));
    expect(err.code).toBe("BUSY");
    expect(err.message).toContain(`the agent service (pid ${process.pid})`);
    expect(fs.existsSync(lockFile()), "the holder's lock stays").toBe(true);
  });

  it("breaks a lock file torn by a crash (empty, a few seconds old)", async () => {
    fs.writeFileSync(lockFile(), "");
    const old = new Date(Date.now() - 5000);
    fs.utimesSync(lockFile(), old, old);
    expect(await withRecordLock(stateDir, "m1", { what: "test" }, async () => "ran")).toBe("ran");
  });

  it("releases the lock when the writer throws", async () => {
    await expect(withRecordLock(stateDir, "m1", { what: "test" }, async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(fs.existsSync(lockFile())).toBe(false);
  });
});
