// A front that stops answering costs a bounded time: its agent frozen (SIGSTOP) or its link cut (the
// front in a network namespace, its end of the veth taken down) — no FIN, no RST. The controller gives up on it within
// timeouts.unresponsive (3 s here), the usual failure policy follows, a rollback that cannot reach it
// gives up within the same bound (exit 3 naming the front), and once it is back `rollback` or `resume`
// finishes. A front that is slow but still moving data is not cut off.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerEvent, type ControllerRun, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { receiveWindowBytes } from "../../shared/receiveWindow.js";
import { logLines, parseLogLines, windowsLogged } from "../helpers/agentLog.js";
import { type TestLink, makeLink, netnsUnavailable } from "../helpers/netns.js";
import { type Scenario, expectMigrated, expectUnchanged, rescan, setupScenario } from "../helpers/scenario.js";

const UNRESPONSIVE_S = 3;
/** what one give-up may take beyond the bound: process start, the step's other work, a loaded CI machine */
const SLACK_MS = 3000;

let scenario: Scenario | undefined;
let link: TestLink | undefined;
const cleanups: Array<() => void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await scenario?.cleanup();
  scenario = undefined;
  link?.remove();
  link = undefined;
});

function stepEnd(run: ControllerRun, step: string, undo: boolean): { durationMs: number; ok: boolean } {
  const e = run.events.find((x) => x.event === "step-end" && x.step === step && (x.undo === true) === undo);
  if (!e) throw new Error(`no ${undo ? "undo " : ""}${step} step-end in:\n${run.stdout}`);
  return e as unknown as { durationMs: number; ok: boolean };
}

/** The front failed the step and its undo, each within the bound; the run ended needs-attention naming it. */
function expectGaveUpOn(run: ControllerRun, front: string, step = "push-site"): string {
  expect(run.exitCode, run.stdout + run.stderr).toBe(3);
  const result = run.events.at(-1) as { outcome: string; message: string; migrationId: string };
  expect(result.outcome).toBe("needs-attention");
  expect(result.message).toMatch(new RegExp(`${step} failed on ${front}: agent unreachable`));
  expect(result.message).toMatch(new RegExp(`undo of ${step} failed on ${front}: agent unreachable`));
  expect(result.message).toContain(`quick-migrate rollback ${result.migrationId}`);
  const forward = stepEnd(run, step, false);
  const undo = stepEnd(run, step, true);
  expect(forward.ok).toBe(false);
  expect(forward.durationMs, `${step} gave up within the bound`).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
  expect(undo.durationMs, "its undo gave up within the bound").toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
  return result.migrationId;
}

/**
 * Runs the controller with `--json`, handing each event to `onEvent` as it comes, with the time
 * (performance.now()) it came at: a test acts in the middle of a step and times the controller's answer.
 */
function runWatching(s: Scenario, args: string[], onEvent: (e: ControllerEvent, at: number) => void): Promise<ControllerRun> {
  return runController(s.cluster.controllerConfig, [...args, "--json"], {
    // a controller that does not end is a failure with its output, not the test's timeout
    timeoutMs: 60_000,
    onSpawn: (child) => {
      let pending = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        const at = performance.now();
        pending += chunk.toString();
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) {
          try {
            onEvent(JSON.parse(line) as ControllerEvent, at);
          } catch {
            // not an event line
          }
        }
      });
    },
  });
}

/** The bytes `front`'s rsync of `step` carried so far (sent for a push, received for a fetch), as progress events say. */
function carried(e: ControllerEvent, step: "push-site" | "fetch-site", front: string): number {
  if (e.event !== "progress" || e.step !== step || e.undo === true) return 0;
  const h = (e.hosts as Array<{ host: string; bytesSent?: number; bytesReceived?: number }>).find((x) => x.host === front);
  return (step === "push-site" ? h?.bytesSent : h?.bytesReceived) ?? 0;
}

function expectNoLock(s: Scenario): void {
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no lock left held").toEqual([]);
}

describe("a frozen agent (SIGSTOP)", () => {
  // frozen by a hook: by dbDump, fronts-park-data finds it silent on a connection that was up (the
  // keepalive pings catch it); by updatedb, push-site finds it silent inside the rsync stream
  it.each([
    ["dbDump", "fronts-park-data", "rollback"],
    ["updatedb", "push-site", "rollback"],
    ["updatedb", "push-site", "resume"],
  ] as const)("frozen by the %s hook: %s gives up within the bound, exit 3; thawed, %s finishes", async (hook, step, finish) => {
    const pidFile = path.join(fs.mkdtempSync(path.join("/tmp", "qm-pid-")), "web2.pid");
    cleanups.push(() => fs.rmSync(path.dirname(pidFile), { recursive: true, force: true }));
    // the hook freezes web2's agent: everything after it finds web2 silent
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2" }],
      symlinkFiles: ["web2"],
      // (updatedb needs a dbDump hook; a hook the rollback runs again, like deploy, would freeze it again)
      hooks: { dbDump: ["true"], [hook]: ["sh", "-c", `kill -STOP "$(cat '${pidFile}')"`] },
    }));
    const pid = s.cluster.front("web2").process?.pid as number;
    fs.writeFileSync(pidFile, String(pid));
    cleanups.push(() => {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // gone
      }
    });
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    const id = expectGaveUpOn(run, "web2", step);

    process.kill(pid, "SIGCONT");
    // the small bound was under test in the first run; the run that finishes uses the defaults
    s.cluster.writeControllerConfig({ extra: {} });
    const again = await runController(s.cluster.controllerConfig, [finish, id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    if (finish === "rollback") await expectUnchanged(s);
    else await expectMigrated(s);
    expectNoLock(s);
  });

  it("frozen before preflight: refused within the bound, nothing changed", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });
    const pid = s.cluster.front("web1").process?.pid as number;
    process.kill(pid, "SIGSTOP");
    cleanups.push(() => process.kill(pid, "SIGCONT"));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(String(run.events.at(-1)?.message)).toMatch(/preflight refused: web1: agent unreachable: no connection within 3 s/);
    expect(run.durationMs).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
    process.kill(pid, "SIGCONT");
    await expectUnchanged(s);
  });
});

describe("a frozen agent, over TLS", () => {
  // the kernel completes the TCP handshake for a stopped process; the TLS handshake is never answered,
  // and the socket gRPC opened for it stays referenced after the command gave up on the agent
  it("frozen before any command: migrate (refused), agents and both monitoring plugins give up within their bound, and each exits", async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    // a fixed port: the agent's own plugin finds its agent by its configured address
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1", agentConfig: { listen: `127.0.0.1:${port}` } }, { name: "web2" }], tls: true }));
    // (agents bounds its health check and its certificate read by timeouts.hello: the same small bound)
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S, hello: UNRESPONSIVE_S } } });
    const web1 = s.cluster.front("web1");
    const pid = web1.process?.pid as number;
    process.kill(pid, "SIGSTOP");
    cleanups.push(() => process.kill(pid, "SIGCONT"));

    const cases: Array<[string[], number, RegExp, number]> = [
      [["migrate", s.site, "--to", s.to, "--json"], 2, /preflight refused: web1: agent unreachable/, UNRESPONSIVE_S * 1000],
      [["agents", "--json"], 1, /web1.*(agent unreachable|no connection within 3 s)/, UNRESPONSIVE_S * 1000],
      [["health", "--warn-ms", "500", "--crit-ms", "2000"], 2, /^QUICK-MIGRATE CRITICAL - web1 down/, 2000],
    ];
    for (const [args, exitCode, says, boundMs] of cases) {
      const run = await runController(s.cluster.controllerConfig, args, { timeoutMs: 30_000 });
      expect(run.timedOut, `quick-migrate ${args[0]} exited`).toBe(false);
      expect(run.exitCode, run.stdout + run.stderr).toBe(exitCode);
      expect(run.stdout).toMatch(says);
      expect(run.durationMs).toBeLessThan(boundMs + SLACK_MS);
    }
    const started = performance.now();
    const health = await runAgentCommand(web1, ["health", "--crit-ms", "2000"]);
    expect(health.exitCode, `quick-migrate-agent health exited (-1: killed at runAgentCommand's timeout): ${health.stdout}`).toBe(2);
    expect(health.stdout).toMatch(/^QUICK-MIGRATE-AGENT CRITICAL - web1 down/);
    expect(performance.now() - started).toBeLessThan(2000 + SLACK_MS);

    process.kill(pid, "SIGCONT");
    await expectUnchanged(s);
  });
});

const noNetns = netnsUnavailable();

describe.skipIf(noNetns !== undefined)(`a front behind a link that is cut${noNetns ? ` — skipped: ${noNetns}` : ""}`, () => {
  it("the link fails after master-move-site: gives up within the bound, exit 3; mended, rollback finishes", async () => {
    link = makeLink();
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2", netns: { name: link.ns, address: link.address } }],
      tls: true,
      hooks: { dbDump: ["true"], updatedb: link.cut },
    }));
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    const id = expectGaveUpOn(run, "web2");

    const [cmd, ...args] = link.mend;
    execFileSync(cmd as string, args);
    s.cluster.writeControllerConfig({ extra: {} });
    // requests the first run sent while the link was cut may still reach web2 once it is mended (TCP
    // retransmits them): web2 refuses those of run 1 once this rollback (run 2) has been there, so a late
    // push-site cannot put its step order ahead of the undo
    const again = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("a slow link that still moves data is not unresponsive: a push slower than the bound completes", async () => {
    link = makeLink();
    const l = link;
    const s = (scenario = await setupScenario({
      // web2's agent with the same small bound: a slow link is not an idle rsync on its end either
      fronts: [{ name: "web1" }, { name: "web2", netns: { name: l.ns, address: l.address }, agentConfig: { timeouts: { unresponsive: UNRESPONSIVE_S } } }],
      tls: true,
      // 2 MB of site code at 2 Mbit/s: about 8 s of pushing, well past the 3 s bound
      hooks: { dbDump: ["true"], updatedb: l.slow("2mbit") },
    }));
    // random bytes: rsync may compress, and zeros would cross the link in no time
    const big = randomBytes(2 * 1024 * 1024);
    for (const { root } of s.cluster.roots()) fs.writeFileSync(path.join(root, s.from, "sites", s.site, "big-module.inc"), big);
    // (the fixture's snapshot was taken before: the code check below compares against the fetched front's code)
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(stepEnd(run, "push-site", false).durationMs, "the push took longer than the bound").toBeGreaterThan(UNRESPONSIVE_S * 1000);
    const pushed = path.join(s.cluster.frontRoot("web2"), s.to, "sites", s.site, "big-module.inc");
    expect(fs.readFileSync(pushed).equals(big)).toBe(true);
    expectNoLock(s);
  });

  // Inside a running rsync stream: bytes have moved, then the front falls silent. On a push the
  // controller waits on the link (a write the other end does not take), where the tunnel's stall timer
  // holds off, as a slow link is not a silent one: the connection's keepalive pings must catch it. On a
  // fetch it waits for data: the stall timer and the keepalive pings both watch.
  interface MidStream {
    readonly step: "push-site" | "fetch-site";
    /** the front behind the slowed link: web2 for the push, web1 (fetched from) for the fetch */
    readonly front: "web1" | "web2";
    /** where the rollback stops: the first undo that needs the silent front */
    readonly undoStep: string;
    /** silences the front; returns what brings it back */
    readonly silence: (s: Scenario) => () => void;
  }

  async function silencedMidStream(c: MidStream): Promise<{ s: Scenario; id: string }> {
    link = makeLink();
    const l = link;
    const behind = { netns: { name: l.ns, address: l.address } };
    const s = (scenario = await setupScenario({
      fronts: [
        { name: "web1", ...(c.front === "web1" ? behind : {}) },
        { name: "web2", ...(c.front === "web2" ? behind : {}) },
      ],
      tls: true,
    }));
    // random bytes (rsync may compress): 2 MB of site code at 2 Mbit/s, some 8 s of carrying. A fetch
    // takes unchanged files from the hostmaster's stale copy: there, only the fronts have it.
    const big = randomBytes(2 * 1024 * 1024);
    const roots = c.step === "push-site" ? s.cluster.roots().map((r) => r.root) : s.cluster.fronts.map((f) => f.root);
    for (const root of roots) fs.writeFileSync(path.join(root, s.from, "sites", s.site, "big-module.inc"), big);
    s.cluster.handOver();
    const ready = (scenario = await rescan(s));
    const [cmd, ...args] = c.step === "push-site" ? l.slow("2mbit") : l.slowFromFront("2mbit");
    execFileSync(cmd as string, args);
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });

    let silencedAt: number | undefined;
    let stepEndAt: number | undefined;
    let back: (() => void) | undefined;
    const run = await runWatching(ready, ["migrate", s.site, "--to", s.to], (e, at) => {
      if (silencedAt === undefined && carried(e, c.step, c.front) >= 64 * 1024) {
        back = c.silence(ready);
        silencedAt = performance.now();
      }
      if (e.event === "step-end" && e.step === c.step && e.undo !== true) stepEndAt = at;
    });
    back?.();
    expect(silencedAt, `${c.front} was silenced once bytes had moved:\n${run.stdout}`).toBeDefined();
    expect(run.exitCode, run.stdout + run.stderr).toBe(3);
    const result = run.events.at(-1) as { outcome: string; message: string; migrationId: string };
    expect(result.outcome).toBe("needs-attention");
    expect(result.message).toMatch(new RegExp(`^${c.step} failed on ${c.front}: agent unreachable`));
    expect(result.message).toMatch(new RegExp(`undo of ${c.undoStep} failed on ${c.front}: agent unreachable`));
    expect(result.message).toContain(`quick-migrate rollback ${result.migrationId}`);
    expect(stepEnd(run, c.step, false).ok).toBe(false);
    // from the moment it fell silent, not from the start of a step that was moving data
    expect((stepEndAt as number) - (silencedAt as number), `${c.step} gave up within the bound of the silence`).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
    expect(stepEnd(run, c.undoStep, true).durationMs, "the undo gave up within the bound").toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
    // what comes next is not under test: at full speed again
    const [fcmd, ...fargs] = l.unslow(c.step === "push-site" ? "host" : "front");
    execFileSync(fcmd as string, fargs);
    s.cluster.writeControllerConfig({ extra: {} });
    return { s: ready, id: result.migrationId };
  }

  const cutLink = (): (() => void) => {
    const [cmd, ...args] = (link as TestLink).cut;
    execFileSync(cmd as string, args);
    const [mcmd, ...margs] = (link as TestLink).mend;
    return () => execFileSync(mcmd as string, margs);
  };

  const freezeAgent =
    (front: string) =>
    (s: Scenario): (() => void) => {
      const pid = s.cluster.front(front).process?.pid as number;
      process.kill(pid, "SIGSTOP");
      const thaw = () => {
        try {
          process.kill(pid, "SIGCONT");
        } catch {
          // gone
        }
      };
      cleanups.push(thaw);
      return thaw;
    };

  it("the link fails in the middle of push-site, bytes already moved: gives up within the bound, exit 3; mended, rollback finishes", async () => {
    const { s, id } = await silencedMidStream({ step: "push-site", front: "web2", undoStep: "push-site", silence: cutLink });
    const again = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("web2's agent frozen (SIGSTOP) in the middle of push-site, bytes already moved: gives up within the bound, exit 3; thawed, resume finishes", async () => {
    const { s, id } = await silencedMidStream({ step: "push-site", front: "web2", undoStep: "push-site", silence: freezeAgent("web2") });
    const again = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectMigrated(s);
    expectNoLock(s);
  });

  it("web1's agent frozen (SIGSTOP) in the middle of fetch-site, bytes already moved: gives up within the bound, exit 3; thawed, rollback finishes", async () => {
    const { s, id } = await silencedMidStream({ step: "fetch-site", front: "web1", undoStep: "fronts-park-data", silence: freezeAgent("web1") });
    const again = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  /**
   * A migration whose fetch-site comes from web1 behind a link of `rate`, with `kb` more to fetch than the
   * hostmaster's stale copy holds, and `bound` as timeouts.unresponsive on both ends: it completes, the
   * fetch taking longer than the bound, and the controller's receive window never holds more than the
   * link carries within the keepalive timeout (`rate`: tc's `<n>kbit` or `<n>mbit`).
   */
  async function slowFetchCompletes(bound: number, rate: string, kb: number, windowGrows = false): Promise<void> {
    link = makeLink();
    const l = link;
    const s = (scenario = await setupScenario({
      // web1 is the front fetched from: behind the link, its agent with the same bound
      fronts: [{ name: "web1", netns: { name: l.ns, address: l.address }, agentConfig: { timeouts: { unresponsive: bound } } }, { name: "web2" }],
      tls: true,
    }));
    // on the fronts only: the hostmaster's stale copy, which the fetch takes unchanged files from, lacks it
    const big = randomBytes(kb * 1024);
    for (const f of s.cluster.fronts) fs.writeFileSync(path.join(f.root, s.from, "sites", s.site, "big-module.inc"), big);
    s.cluster.handOver();
    const ready = (scenario = await rescan(s));
    const [cmd, ...args] = l.slowFromFront(rate);
    execFileSync(cmd as string, args);
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: bound } } });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_LOG_LEVEL: "debug" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(stepEnd(run, "fetch-site", false).durationMs, "the fetch took longer than the bound").toBeGreaterThan(bound * 1000);
    // the receive window follows the link: never more than the link carries within the keepalive timeout
    const keepaliveTimeoutMs = (bound / 2) * 1000;
    const bytesPerMs = (Number.parseInt(rate, 10) * (rate.endsWith("mbit") ? 1_000_000 : 1000)) / 8 / 1000;
    const windows = windowsLogged(parseLogLines(run.stderr)).map((w) => w.windowBytes);
    for (const w of windows) expect(w, `a window of ${w} bytes on a ${rate} link`).toBeLessThanOrEqual(bytesPerMs * keepaliveTimeoutMs);
    if (windowGrows) expect(Math.max(0, ...windows), "the window grew with the link").toBeGreaterThan(receiveWindowBytes(keepaliveTimeoutMs));
    await expectMigrated(ready);
    expectNoLock(ready);
  }

  it("a slow fetch that keeps sending is not unresponsive: fetch-site takes longer than the bound on both ends and the migration completes", async () => {
    // 1.5 MB from web1 at 2 Mbit/s: some 6 s of fetching, twice the bound
    await slowFetchCompletes(UNRESPONSIVE_S, "2mbit", 1536);
  });

  it("a slow fetch with a larger receive window (an 8 s bound: 125 KB) is not unresponsive either: the keepalive answers wait behind less than the timeout", async () => {
    // 768 KB from web1 at 500 kbit/s: some 12 s of fetching, three keepalive pings of 4 s, each answer
    // behind up to a window of data (2 s at this rate)
    await slowFetchCompletes(8, "500kbit", 768);
  });

  it("a push over a 4 Mbit/s link completes, the agent's receive window grown with what the link carries and never more than it carries within the controller's keepalive timeout", async () => {
    link = makeLink();
    const l = link;
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2", netns: { name: l.ns, address: l.address }, agentConfig: { logLevel: "debug" } }], tls: true }));
    // 3 MB of site code pushed to web2 at 4 Mbit/s: some 6 s; fetched from web1 at full speed
    const big = randomBytes(3 * 1024 * 1024);
    fs.writeFileSync(path.join(s.cluster.frontRoot("web1"), s.from, "sites", s.site, "big-module.inc"), big);
    fs.writeFileSync(path.join(s.cluster.frontRoot("web2"), s.from, "sites", s.site, "big-module.inc"), big);
    s.cluster.handOver();
    const ready = (scenario = await rescan(s));
    const [cmd, ...args] = l.slow("4mbit");
    execFileSync(cmd as string, args);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(ready);
    const web2 = s.cluster.fronts.find((f) => f.name === "web2");
    const windows = windowsLogged(logLines(web2?.logFile ?? "")).map((w) => w.windowBytes);
    // the controller (default bound, 30 s) waits 15 s for a keepalive answer, the agent 30 s: the shorter
    // counts, and 4 Mbit/s is 500 bytes a millisecond
    for (const w of windows) expect(w, `a window of ${w} bytes on a 4 Mbit/s link`).toBeLessThanOrEqual(500 * 15_000);
    expect(Math.max(0, ...windows), "the window grew with the link").toBeGreaterThan(256 * 1024);
  });

  it("a fetch over a 4 Mbit/s link grows the receive window with what the link carries, and the keepalive answers still come in time", async () => {
    // 4.5 MB at 4 Mbit/s: some 9 s of fetching, two keepalive pings of 4 s; the window starts at 125 KB
    // and follows the link's 500 bytes a millisecond: about 500 KB, a second of it
    await slowFetchCompletes(8, "4mbit", 4608, true);
  });
});
