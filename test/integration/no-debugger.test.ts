// No debugger port (issue 13): no quick-migrate process — the controller, the agents, rsync's remote
// shell, what they start — opens Node's inspector because of a signal or an inherited NODE_OPTIONS.
// rsync sends SIGUSR1 to its remote shell when a run fails; Node answered that by listening on
// 127.0.0.1:9229. Every test watches the listening TCP sockets (ss) of the cluster's and the
// controller's process trees during the run and after it: only the agents' own ports may be there.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerRun, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { excludePaths, manifest } from "../../scripts/lib/manifest.js";
import { isRoot, mountTmpfsOver } from "../helpers/disk.js";
import { PortWatch } from "../helpers/listening.js";
import { type Scenario, expectMigrated, setupScenario, siteDir } from "../helpers/scenario.js";

const MB = 1024 * 1024;
const CONTROLLER_BIN = path.join(repoRoot(), "bin", "quick-migrate");
const AGENT_BIN = path.join(repoRoot(), "bin", "quick-migrate-agent");
/** what Node prints when it opens its inspector, or tries to (the port taken by another process) */
const DEBUGGER = /Debugger listening|Starting inspector/;

let scenario: Scenario | undefined;
const unmounts: Array<() => void> = [];
const watches: PortWatch[] = [];
afterEach(async () => {
  for (const w of watches.splice(0)) w.stop();
  await scenario?.cluster.stop();
  for (const u of unmounts.splice(0)) u();
  await scenario?.cleanup();
  scenario = undefined;
});

/** Watches the ports of the cluster's agents and of the controller (once `controller.pid` is set), and what they start. */
function watchPorts(s: Scenario, controller: { pid?: number }): PortWatch {
  const watch = new PortWatch(
    () => [...s.cluster.fronts.map((f) => f.process?.pid ?? 0), controller.pid ?? 0],
    () => new Set(s.cluster.fronts.map((f) => f.address)),
  ).start();
  watches.push(watch);
  return watch;
}

/** A large file in the fetched front's code, so that fetch-site and push-site take a while. */
function bigCode(s: Scenario, front: string, bytes: number): void {
  const dir = siteDir(s.cluster.frontRoot(front), s.from, s.site);
  const fd = fs.openSync(path.join(dir, "libraries", "big.bin"), "w", 0o644);
  try {
    for (let done = 0; done < bytes; done += MB) fs.writeSync(fd, randomBytes(Math.min(MB, bytes - done)));
  } finally {
    fs.closeSync(fd);
  }
}

async function refreshCode(s: Scenario, front: string): Promise<void> {
  s.codeBefore.set(front, excludePaths(await manifest(siteDir(s.cluster.frontRoot(front), s.from, s.site)), ["files", "private/files"]));
}

function agentLogs(s: Scenario): string {
  return s.cluster.fronts.map((f) => fs.readFileSync(f.logFile, "utf8")).join("\n");
}

function resultMessage(run: ControllerRun): string {
  return String(run.events.at(-1)?.message ?? "");
}

describe("a failing rsync run opens no port", () => {
  it("a front that refuses the push: the run rolls back with the front's reason, no port besides the agents'", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    // web2's agent may not make the new site folder
    const sites = path.join(s.cluster.frontRoot("web2"), s.to, "sites");
    fs.chmodSync(sites, 0o555);
    const controller: { pid?: number } = {};
    const ports = watchPorts(s, controller);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      onSpawn: (c) => (controller.pid = c.pid),
    });
    ports.stop();
    const out = run.stdout + run.stderr;
    expect(run.exitCode, out).toBe(1);
    expect(resultMessage(run)).toMatch(/push-site failed on web2: .*(denied|EACCES)/i);
    expect(ports.unexpected, `listening sockets after ${ports.polls} polls`).toEqual([]);
    expect(out + agentLogs(s)).not.toMatch(DEBUGGER);
  });

  it("an agent killed mid-transfer: rsync's or the agent's error in the message, no port besides the agents'", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    bigCode(s, "web1", 64 * MB);
    const web2 = s.cluster.front("web2");
    const web2Pid = web2.process?.pid as number;
    const controller: { pid?: number } = {};
    const ports = watchPorts(s, controller);
    // web2's agent is killed once its rsync server for push-site has started
    let killed = false;
    const killer = setInterval(() => {
      if (killed || !/"msg":"rsync server start".*"step":"push-site"|"step":"push-site".*"msg":"rsync server start"/.test(fs.readFileSync(web2.logFile, "utf8"))) return;
      killed = true;
      process.kill(web2Pid, "SIGKILL");
    }, 20);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      onSpawn: (c) => (controller.pid = c.pid),
    });
    clearInterval(killer);
    ports.stop();
    const out = run.stdout + run.stderr;
    expect(killed, "web2 was killed during push-site").toBe(true);
    // rolled back but for web2, which cannot be reached to undo its push
    expect(run.exitCode, out).toBe(3);
    expect(resultMessage(run)).toMatch(/push-site failed on web2: agent unreachable/);
    expect(ports.unexpected, `listening sockets after ${ports.polls} polls`).toEqual([]);
    expect(out + agentLogs(s)).not.toMatch(DEBUGGER);
  });
});

describe.skipIf(!isRoot)(`a failing local rsync${isRoot ? "" : " — skipped: mounting a tmpfs needs root"}`, () => {
  it("the hostmaster's disk fills up during fetch-site: rsync's own message in the failure, no port besides the agents'", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    bigCode(s, "web1", 24 * MB);
    unmounts.push(mountTmpfsOver(s.cluster.masterRoot, "16m"));
    const controller: { pid?: number } = {};
    const ports = watchPorts(s, controller);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      onSpawn: (c) => (controller.pid = c.pid),
    });
    ports.stop();
    const out = run.stdout + run.stderr;
    expect(run.exitCode, out).toBe(1);
    // the local rsync's first complaint, not a remote shell's crash report
    expect(resultMessage(run), out).toMatch(/fetch-site failed on web1: rsync for fetch-site failed \(exit \d+\): rsync: .*No space left on device/);
    expect(ports.unexpected, `listening sockets after ${ports.polls} polls`).toEqual([]);
    expect(out + agentLogs(s)).not.toMatch(DEBUGGER);
  });
});

describe("SIGUSR1 during a migration", () => {
  it("sent again and again to the controller and every agent: no port opens, the migration completes", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    bigCode(s, "web1", 48 * MB);
    await refreshCode(s, "web1");
    const controller: { pid?: number } = {};
    const ports = watchPorts(s, controller);
    // Only the Node processes of quick-migrate: rsync, and the sh and cats of its remote shell, end on
    // SIGUSR1 by design (it is how rsync stops its remote shell and its own processes).
    const agents = s.cluster.fronts.map((f) => f.process?.pid as number);
    let sent = 0;
    let signalling: NodeJS.Timeout | undefined;
    const signalAll = (pids: number[]) => {
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGUSR1");
          sent++;
        } catch {
          // exited meanwhile
        }
      }
    };
    const agentSignalling = setInterval(() => signalAll(agents), 25);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      onSpawn: (c) => {
        controller.pid = c.pid;
        // from its first line of output on: before that, Node itself is still starting (the window
        // between exec and the first line of our code, which no program can close in Node 20)
        c.stdout?.once("data", () => {
          signalling = setInterval(() => signalAll([c.pid as number]), 25);
        });
      },
    });
    clearInterval(agentSignalling);
    clearInterval(signalling);
    ports.stop();
    const out = run.stdout + run.stderr;
    expect(run.exitCode, out).toBe(0);
    await expectMigrated(s);
    expect(sent, "signals sent").toBeGreaterThan(40);
    expect(ports.unexpected, `listening sockets after ${ports.polls} polls`).toEqual([]);
    expect(out + agentLogs(s)).not.toMatch(DEBUGGER);
    // the agents were running all along
    for (const f of s.cluster.fronts) expect(f.process?.exitCode, f.name).toBeNull();
  });
});

describe("NODE_OPTIONS=--inspect… in the environment", () => {
  it.each(["--inspect=127.0.0.1:0", "--inspect-brk=127.0.0.1:0"])(
    "%s: bin/quick-migrate and bin/quick-migrate-agent migrate without opening an inspector",
    async (inspect) => {
      const s = (scenario = await setupScenario({
        fronts: [{ name: "web1", env: { NODE_OPTIONS: inspect } }, { name: "web2", env: { NODE_OPTIONS: inspect } }],
        agentBin: AGENT_BIN,
        // a hook sees no NODE_OPTIONS either: with it, maintenance-on fails and the run rolls back
        hooks: { maintenanceOn: ["sh", "-c", 'test -z "${NODE_OPTIONS+set}"'] },
      }));
      const controller: { pid?: number } = {};
      const ports = watchPorts(s, controller);
      const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
        controllerBin: CONTROLLER_BIN,
        env: { NODE_OPTIONS: inspect },
        // --inspect-brk that got through would wait for a debugger: fail, do not hang
        timeoutMs: 60_000,
        onSpawn: (c) => (controller.pid = c.pid),
      });
      ports.stop();
      const out = run.stdout + run.stderr;
      expect(run.exitCode, out).toBe(0);
      await expectMigrated(s);
      expect(ports.unexpected, `listening sockets after ${ports.polls} polls`).toEqual([]);
      expect(out + agentLogs(s)).not.toMatch(DEBUGGER);
    },
  );

  it("node with --inspect or NODE_OPTIONS=--inspect, not through bin/: refused with exit 2 and one line", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }] }));
    const web1 = s.cluster.front("web1");
    const stateBefore = fs.readdirSync(s.cluster.masterState);
    // as web1's agent user, with web1's config: without the flag it would start and listen
    const agent = await execa(process.execPath, ["--inspect=127.0.0.1:0", path.join(repoRoot(), "dist", "agent", "main.js"), "--config", web1.configFile], {
      reject: false,
      timeout: 30_000,
      ...(web1.user ? { uid: web1.user.uid, gid: web1.user.gid } : {}),
    });
    expect(agent.exitCode, agent.stderr).toBe(2);
    expect(agent.stderr).toMatch(/^quick-migrate: refusing to run with Node's inspector open on 127\.0\.0\.1:\d+: /m);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], {
      env: { NODE_OPTIONS: "--inspect=127.0.0.1:0" },
      timeoutMs: 30_000,
    });
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(run.stderr).toMatch(/^quick-migrate: refusing to run with Node's inspector open on 127\.0\.0\.1:\d+: /m);
    // refused before anything: nothing journaled
    expect(fs.readdirSync(s.cluster.masterState)).toEqual(stateBefore);
  });
});
