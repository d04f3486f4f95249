// A hook's process group, with real processes: whether the one the journal names still runs (a reused
// pid is not it), and ending it whole, SIGKILL for what ignores SIGTERM.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { endGroup, groupMembers, isRunning } from "../../controller/processGroup.js";
import { processStartTime } from "../../shared/processes.js";

const started: ChildProcess[] = [];
afterEach(() => {
  for (const c of started.splice(0)) {
    try {
      if (c.pid) process.kill(-c.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
});

/** A leader of its own group with a child in it (as a hook that ran drush that ran php); `leaderExits`: it leaves the child behind. */
async function family(opts: { ignoreTerm?: boolean; leaderExits?: boolean } = {}): Promise<{ leader: ChildProcess; pgid: number; child: number }> {
  const ignore = opts.ignoreTerm ? "process.on('SIGTERM', () => {});" : "";
  const script = `${ignore}
    const c = require("node:child_process").spawn(process.execPath, ["-e", ${JSON.stringify(`${ignore} setInterval(() => {}, 1000)`)}], { stdio: "ignore" });
    console.log(c.pid);
    ${opts.leaderExits ? "process.exit(0);" : "setInterval(() => {}, 1000);"}`;
  const leader = spawn(process.execPath, ["-e", script], { detached: true, stdio: ["ignore", "pipe", "ignore"] });
  started.push(leader);
  const [line] = (await once(leader.stdout as NodeJS.ReadableStream, "data")) as [Buffer];
  if (opts.leaderExits && leader.exitCode === null) await once(leader, "exit");
  return { leader, pgid: leader.pid as number, child: Number(line.toString().trim()) };
}

describe("process groups", () => {
  it("a running group is the journal's only with the leader's start time; ending it ends every member", async () => {
    const { pgid, child } = await family();
    const startTime = processStartTime(pgid) ?? "";
    expect(groupMembers(pgid).sort()).toEqual([pgid, child].sort());
    expect(isRunning({ pgid, startTime })).toBe(true);
    expect(isRunning({ pgid, startTime: `${startTime}1` }), "the pid reused by another process").toBe(false);
    expect(await endGroup(pgid, 2000)).toBe("SIGTERM");
    expect(groupMembers(pgid)).toEqual([]);
    expect(isRunning({ pgid, startTime })).toBe(false);
  });

  it("a group whose leader exited is still the hook's while a member runs", async () => {
    const { pgid, child } = await family({ leaderExits: true });
    expect(groupMembers(pgid)).toEqual([child]);
    expect(isRunning({ pgid, startTime: "whatever the leader's was" })).toBe(true);
    expect(await endGroup(pgid, 2000)).toBe("SIGTERM");
    expect(groupMembers(pgid)).toEqual([]);
  });

  it("members that ignore SIGTERM get SIGKILL after the grace", async () => {
    const { pgid } = await family({ ignoreTerm: true });
    const t0 = Date.now();
    expect(await endGroup(pgid, 500)).toBe("SIGKILL");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    expect(groupMembers(pgid)).toEqual([]);
  });
});
