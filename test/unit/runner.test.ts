// The runner's failure policy, with in-memory fakes of the fronts, hooks, tunnel and clock (no process,
// no cluster; the hostmaster's own tree and journal are real, in a temp folder): a failure at each step
// before the point of no return rolls back in reverse order exactly the steps whose plan entry has an
// undo; after it, the step is retried; a failed undo stops with needs-attention.
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AgentConnectionLike } from "../../controller/agentConnection.js";
import type { Clock } from "../../controller/clock.js";
import type { HooksLike, TunnelLike } from "../../controller/clusterIO.js";
import { Cancellation } from "../../controller/execution.js";
import type { RunEvent } from "../../controller/events.js";
import { HOOK_NAMES, type HookName, type HookRunOptions } from "../../controller/hooks.js";
import { type Plan, buildPlan } from "../../controller/plan.js";
import { Journal } from "../../controller/journal.js";
import { replay } from "../../controller/journalState.js";
import type { EndedBy, HookGroup, ProcessGroupsLike } from "../../controller/processGroup.js";
import { MigrationRunner, type RunMode, type RunResult, type RunnerDeps } from "../../controller/runner.js";
import { SiteLock } from "../../controller/siteLock.js";
import { POINT_OF_NO_RETURN, STEP_NAMES, type StepName } from "../../controller/steps.js";
import type { RsyncRun } from "../../controller/tunnel.js";
import { QmError, isErrorCode } from "../../shared/errors.js";
import type { ApplyResponse, InspectResponse, PreflightResponse } from "../../shared/generated/quickmigrate/v1/agent.js";
import { type MigrationSpec, parkRel } from "../../shared/migration.js";
import { SiteTree } from "../../shared/siteTree.js";
import { fillDisk, isRoot, mountTmpfsOver } from "../helpers/disk.js";
import { PROTOCOL_VERSION } from "../../shared/version.js";
import type { FrontAction } from "../../shared/wire.js";

const m: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files"] };
const FRONTS = ["web1", "web2"];

/** What the fakes were asked, in order: "web1 fronts-park-data park-data", "hook maintenanceOn", "rsync push-site web2". */
type Calls = string[];

/** Failures to inject: "<step>" fails on every host, "<step>:<host>" on one; a number fails that many times, then works. */
type Failures = Map<string, number>;

function failing(failures: Failures, ...keys: string[]): boolean {
  for (const key of keys) {
    const left = failures.get(key);
    if (left === undefined || left === 0) continue;
    failures.set(key, left - 1);
    return true;
  }
  return false;
}

class FakeAgent implements AgentConnectionLike {
  readonly local = false;
  constructor(
    readonly name: string,
    private readonly calls: Calls,
    private readonly failures: Failures,
    private readonly onApply: (action: FrontAction) => void = () => undefined,
  ) {}
  async hello() {
    return { protocolVersion: PROTOCOL_VERSION, agentVersion: "fake", hostname: this.name, rootId: `root-of-${this.name}` };
  }
  async preflight(): Promise<PreflightResponse> {
    return { problems: [], dataDirs: [] };
  }
  async apply(_id: string, step: string, action: FrontAction): Promise<ApplyResponse> {
    this.calls.push(`${this.name} ${step} ${action}`);
    this.onApply(action);
    if (failing(this.failures, `${action}:${this.name}`, action)) throw new QmError("IO", `${action} failed`, { host: this.name });
    return { changes: [], repeated: false };
  }
  async inspect(): Promise<InspectResponse> {
    return { registered: true, restoredOnFrontAt: "", pastPointOfNoReturn: false, endedAs: "" };
  }
  openRsync(): never {
    throw new Error("the fake tunnel never opens a stream");
  }
  close(): void {}
}

class FakeTunnel implements TunnelLike {
  constructor(
    private readonly calls: Calls,
    private readonly failures: Failures,
  ) {}
  async run(run: RsyncRun): Promise<void> {
    this.calls.push(`rsync ${run.step} ${run.front.name}`);
    if (failing(this.failures, `${run.step}:${run.front.name}`, run.step)) throw new QmError("RSYNC_FAILED", "rsync failed (exit 12)", { host: run.front.name });
    // a fetch leaves a site folder in the hostmaster's staging place, as rsync would
    if (run.step === "fetch-site") fs.mkdirSync(run.destination, { recursive: true });
  }
}

/** runs inside each fake hook, after it is recorded (a test's way to fill the disk at that point) */
let onHook: ((name: HookName) => void) | undefined;

class FakeHooks implements HooksLike {
  constructor(
    private readonly calls: Calls,
    private readonly failures: Failures,
    /** called as each hook starts (a test cancels the run there) */
    private readonly onRun: (name: HookName) => void = () => undefined,
  ) {}
  has(name: HookName): boolean {
    return HOOK_NAMES.includes(name);
  }
  async run(name: HookName, _values: unknown, opts: HookRunOptions = {}) {
    this.onRun(name);
    // as the real runner: a cancelled signal ends the hook, and the step fails
    if (opts.signal?.aborted) {
      this.calls.push(`hook ${name} cancelled`);
      throw new QmError("HOOK_FAILED", `hook ${name} (drush) failed: cancelled`, { key: `hooks.${name}` });
    }
    this.calls.push(`hook ${name}`);
    onHook?.(name);
    if (failing(this.failures, `hook:${name}`)) throw new QmError("HOOK_FAILED", `hook ${name} (drush) failed: exit 1`, { key: `hooks.${name}` });
    return { skipped: false, detail: `hook ${name} ran` };
  }
}

/** The hostmaster's real tree, but its first park of the stale data fails as a disk error would. */
class TreeFailingToPark extends SiteTree {
  private failed = false;
  override async moveData(...args: Parameters<SiteTree["moveData"]>): ReturnType<SiteTree["moveData"]> {
    const [, , from, to] = args;
    if (from === "old" && to === "park" && !this.failed) {
      this.failed = true;
      throw new QmError("IO", "rename to .quick-migrate-park/m1/files: p1/sites/a.com/files: EIO", { path: "p1/sites/a.com/files" });
    }
    return super.moveData(...args);
  }
}

class FakeClock implements Clock {
  readonly sleeps: number[] = [];
  private t = 0;
  now(): number {
    return (this.t += 5);
  }
  async sleep(ms: number): Promise<void> {
    this.sleeps.push(ms);
  }
}

let base: string;
let root: string;
let stateDir: string;

beforeEach(async () => {
  base = await mkdtemp(path.join(tmpdir(), "qm-runner-"));
  root = path.join(base, "root");
  stateDir = path.join(base, "state");
  // the hostmaster's stale copy of the site, and the target platform
  fs.mkdirSync(path.join(root, "p1/sites/a.com/files"), { recursive: true });
  fs.writeFileSync(path.join(root, "p1/sites/a.com/settings.php"), "<?php\n");
  fs.writeFileSync(path.join(root, "p1/sites/a.com/files/stale.txt"), "stale\n");
  fs.mkdirSync(path.join(root, "p2/sites"), { recursive: true });
});

/** Every result event of every run of a test, whichever reporter its runner had. */
const results: RunEvent[] = [];

function reportingTo(events: RunEvent[]): RunnerDeps["reporter"] {
  return {
    event: (e) => {
      events.push(e);
      if (e.event === "result") results.push(e);
    },
  };
}

afterEach(async () => {
  // in every scenario: a result that is not a success says why with a code of the catalogue
  const uncoded = results.splice(0).filter((e) => e.event === "result" && e.exitCode !== 0 && !(typeof e.code === "string" && isErrorCode(e.code)));
  expect(uncoded, "results with a non-zero exit code and no catalogue code").toEqual([]);
  onHook = undefined;
  for (const u of unmounts.splice(0)) u();
  await rm(base, { recursive: true, force: true });
});

const unmounts: Array<() => void> = [];

interface Run {
  readonly result: RunResult;
  readonly events: RunEvent[];
  readonly calls: Calls;
  readonly clock: FakeClock;
  readonly plan: Plan;
}

type RunOpts = { onHook?: (name: HookName) => void; onApply?: (action: FrontAction) => void; deps?: Partial<RunnerDeps>; calls?: Calls };

async function migrate(failures: Record<string, number> = {}, master = new SiteTree(root), opts: RunOpts = {}): Promise<Run> {
  return runWith({ kind: "migrate", dryRun: false }, failures, master, opts);
}

/** `resume` or `rollback` of m1, from its journal. */
async function continueRun(kind: "resume" | "rollback", failures: Record<string, number> = {}, opts: RunOpts = {}): Promise<Run> {
  const { journal, events } = await Journal.load(stateDir, m.id);
  return runWith({ kind, journal, events }, failures, new SiteTree(root), opts);
}

async function runWith(mode: RunMode, failures: Record<string, number> = {}, master = new SiteTree(root), opts: RunOpts = {}): Promise<Run> {
  const calls: Calls = opts.calls ?? [];
  const fail: Failures = new Map(Object.entries(failures));
  const events: RunEvent[] = [];
  const clock = new FakeClock();
  const plan = buildPlan({ migration: m, master: "hostmaster", fronts: FRONTS.map((name) => ({ name, local: false })), hooks: new Set(HOOK_NAMES) });
  const runner = new MigrationRunner({
    plan,
    mode,
    root,
    stateDir,
    fronts: new Map(FRONTS.map((name) => [name, new FakeAgent(name, calls, fail, opts.onApply)])),
    master,
    hooks: new FakeHooks(calls, fail, opts.onHook),
    tunnel: new FakeTunnel(calls, fail),
    reporter: reportingTo(events),
    log: pino({ level: "silent" }),
    clock,
    retryDelayMs: 1000,
    ...opts.deps,
  });
  return { result: await runner.run(), events, calls, clock, plan };
}

/** What this process holds open under `dir` (its descriptors, as /proc names their files). */
function openFilesUnder(dir: string): string[] {
  return fs
    .readdirSync("/proc/self/fd")
    .map((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return ""; // closed meanwhile (the descriptor of the listing itself)
      }
    })
    .filter((file) => file.startsWith(`${dir}/`));
}

/** Calls grouped by what they are without the host (consecutive runs), each group sorted. */
function grouped(calls: Calls): string[][] {
  const groups: string[][] = [];
  const kind = (c: string) => c.replace(/\bweb\d\b/, "");
  for (const c of calls) {
    const last = groups.at(-1);
    if (last && kind(last[0] as string) === kind(c)) last.push(c);
    else groups.push([c]);
  }
  return groups.map((g) => g.sort());
}

/** The steps a run undid, in the order it undid them. */
function undone(run: Run): string[] {
  return run.events.flatMap((e) => (e.event === "step-start" && e.undo ? [e.step] : []));
}

/** What a rollback after a failure at `step` must undo: every step up to it whose plan entry has an undo, latest first. */
function expectedUndo(plan: Plan, step: StepName): string[] {
  const upTo = plan.steps.slice(0, STEP_NAMES.indexOf(step) + 1);
  return upTo.filter((s) => s.undo !== null && s.hosts.length > 0).map((s) => s.name).reverse();
}

function expectBackAsBefore(): void {
  expect(fs.readFileSync(path.join(root, "p1/sites/a.com/files/stale.txt"), "utf8")).toBe("stale\n");
  expect(fs.existsSync(path.join(root, "p2/sites/a.com"))).toBe(false);
  expect(fs.existsSync(path.join(root, parkRel(m.id))), "nothing left in the park area").toBe(false);
  expect(fs.readdirSync(path.join(stateDir, "locks")), "lock released").toEqual([]);
}

describe("the runner with fakes", () => {
  it("runs every step in order and acknowledges each host once", async () => {
    const run = await migrate();
    expect(run.result).toEqual({ outcome: "migrated", exitCode: 0, message: "a.com is on p2" });
    const started = run.events.flatMap((e) => (e.event === "step-start" ? [e.step] : []));
    expect(started).toEqual(STEP_NAMES);
    // one group a step, in order; within a step the hosts run in parallel
    expect(grouped(run.calls)).toEqual([
      ["hook maintenanceOn"],
      ["hook dbDump"],
      ["web1 fronts-park-data park-data", "web2 fronts-park-data park-data"],
      ["rsync fetch-site web1"],
      ["hook deploy"],
      ["hook updatedb"],
      ["rsync push-site web1", "rsync push-site web2"],
      ["web1 fronts-restore-data restore-data", "web2 fronts-restore-data restore-data"],
      ["web1 fronts-remove-old remove-old-site", "web2 fronts-remove-old remove-old-site"],
      ["hook maintenanceOff"],
    ]);
    // the hostmaster: the fetched copy in its new place, the stale copy and its data gone
    expect(fs.existsSync(path.join(root, "p2/sites/a.com"))).toBe(true);
    expect(fs.existsSync(path.join(root, "p1/sites/a.com"))).toBe(false);
    expect(fs.existsSync(path.join(root, parkRel(m.id)))).toBe(false);
    expect(fs.readdirSync(path.join(stateDir, "locks"))).toEqual([]);
  });

  // a failure at each step before the point of no return, with what makes it fail
  const BEFORE_NO_RETURN: Array<[StepName, Record<string, number>]> = [
    ["maintenance-on", { "hook:maintenanceOn": 1 }],
    ["db-dump", { "hook:dbDump": 1 }],
    ["fronts-park-data", { "park-data:web2": 1 }],
    ["fetch-site", { "fetch-site": 1 }],
    ["master-move-site", { "hook:updatedb": 1 }],
    ["push-site", { "push-site:web2": 1 }],
    ["fronts-restore-data", { "restore-data:web1": 1 }],
  ];

  it("covers every step before the point of no return that can fail on a host", () => {
    const covered = new Set(BEFORE_NO_RETURN.map(([s]) => s));
    const before = STEP_NAMES.slice(0, STEP_NAMES.indexOf(POINT_OF_NO_RETURN));
    // preflight refuses (nothing to undo); lock and master-park-data fail on the hostmaster's own disk: tested below
    expect(before.filter((s) => !covered.has(s))).toEqual(["preflight", "lock", "master-park-data"]);
  });

  it.each(BEFORE_NO_RETURN)("a failure at %s rolls back in reverse order, exactly the steps with an undo", async (step, failures) => {
    const run = await migrate(failures);
    expect(run.result.outcome).toBe("rolled-back");
    expect(run.result.exitCode).toBe(1);
    expect(run.result.message).toMatch(new RegExp(`^${step} failed on (hostmaster|web1|web2): `));
    expect(run.result.message).not.toMatch(/failed on (\w+): \1:/);
    expect(undone(run)).toEqual(expectedUndo(run.plan, step));
    expectBackAsBefore();
    // the undo of each front step asked each front for its undo action
    if (STEP_NAMES.indexOf(step) >= STEP_NAMES.indexOf("fronts-park-data")) {
      expect(run.calls).toContain("web1 fronts-park-data unpark-data");
      expect(run.calls).toContain("web2 fronts-park-data unpark-data");
    }
    if (run.plan.steps.find((s) => s.name === "maintenance-on")?.undo) expect(run.calls.at(-1)).toBe("hook maintenanceOff");
    // the failed ack carries the error's code
    const failedAck = run.events.find((e) => e.event === "ack" && !e.ok);
    expect(failedAck).toMatchObject({ step, code: expect.stringMatching(/^[A-Z_]+$/) });
  });

  it("a failure at master-park-data (a disk error on the hostmaster) rolls back in reverse order", async () => {
    const run = await migrate({}, new TreeFailingToPark(root));
    expect(run.result.outcome).toBe("rolled-back");
    expect(run.result.message).toMatch(/^master-park-data failed on hostmaster: rename .*EIO/);
    expect(undone(run)).toEqual(expectedUndo(run.plan, "master-park-data"));
    expectBackAsBefore();
  });

  it("a lock held by another migration ends as locked (exit 4) and leaves no journal of this attempt", async () => {
    await SiteLock.acquire(stateDir, ["a.com"], "other");
    const run = await migrate();
    expect(run.result.outcome).toBe("locked");
    expect(run.result.exitCode).toBe(4);
    expect(undone(run)).toEqual([]);
    expect(fs.existsSync(path.join(stateDir, "migrations", m.id))).toBe(false);
    expect(run.calls).toEqual([]);
    // nor a descriptor of it: a batch meets many locked sites in one process
    expect(openFilesUnder(path.join(stateDir, "migrations"))).toEqual([]);
  });

  it("after the point of no return a failing host is retried, with a growing pause, and the migration ends", async () => {
    const run = await migrate({ "remove-old-site:web2": 2 });
    expect(run.result.outcome).toBe("migrated");
    expect(run.calls.filter((c) => c === "web2 fronts-remove-old remove-old-site")).toHaveLength(3);
    expect(run.calls.filter((c) => c === "web1 fronts-remove-old remove-old-site"), "only the host that failed is retried").toHaveLength(1);
    expect(run.clock.sleeps).toEqual([1000, 2000]);
    expect(undone(run)).toEqual([]);
  });

  it.each([
    ["fronts-remove-old", { "remove-old-site:web1": 9 }],
    ["maintenance-off", { "hook:maintenanceOff": 9 }],
  ] as const)("after the point of no return, %s failing every time stops with needs-attention and undoes nothing", async (step, failures) => {
    const run = await migrate(failures);
    expect(run.result.outcome).toBe("needs-attention");
    expect(run.result.exitCode).toBe(3);
    expect(run.result.message).toContain(`${step} failed on`);
    expect(run.result.message).toContain("quick-migrate resume m1");
    expect(undone(run)).toEqual([]);
    expect(run.events.at(-1)).toMatchObject({ event: "result", code: expect.any(String) });
  });

  it("a rollback past the point of no return is refused (exit 2, PAST_POINT_OF_NO_RETURN) and undoes nothing", async () => {
    expect((await migrate({ "remove-old-site:web1": 9 })).result.outcome).toBe("needs-attention");
    const run = await continueRun("rollback");
    expect(run.result).toMatchObject({ outcome: "refused", exitCode: 2 });
    expect(run.events.at(-1)).toMatchObject({ event: "result", code: "PAST_POINT_OF_NO_RETURN" });
    expect(run.calls).toEqual([]);
  });

  it("a failed undo stops the rollback there with needs-attention; the undos after it are not attempted", async () => {
    const run = await migrate({ "push-site:web1": 1, "unpark-data:web2": 1 });
    expect(run.result.outcome).toBe("needs-attention");
    expect(run.result.exitCode).toBe(3);
    expect(run.result.message).toMatch(/rollback stopped: undo of fronts-park-data failed on web2: unpark-data failed/);
    expect(run.result.message).toContain("quick-migrate rollback m1");
    const all = expectedUndo(run.plan, "push-site");
    expect(undone(run)).toEqual(all.slice(0, all.indexOf("fronts-park-data") + 1));
    expect(run.calls).not.toContain("hook maintenanceOff");
    // the lock stays with the migration, held by no process, for rollback or resume to take over
    expect(fs.readdirSync(path.join(stateDir, "locks"))).toEqual(["a.com.lock"]);
    expect(await SiteLock.holder(stateDir, "a.com")).toMatchObject({ migrationId: m.id, pid: 0 });
  });

  it.skipIf(!isRoot)("a state dir that fills up: exit 3 not 2, no front's change without its journaled intent; once freed, rollback finishes (needs root for mount)", async () => {
    fs.mkdirSync(stateDir);
    unmounts.push(mountTmpfsOver(stateDir, "1m"));
    const filler = path.join(stateDir, "filler");
    onHook = (name) => {
      if (name === "maintenanceOn") fillDisk(filler);
    };
    const run = await migrate();
    expect(run.result.outcome).toBe("needs-attention");
    expect(run.result.exitCode).toBe(3);
    expect(run.result.message).toMatch(/ENOSPC; .*`quick-migrate rollback m1`/);
    // every change asked of a front was journaled (intent) before it was asked
    const journaled = fs
      .readFileSync(path.join(stateDir, "migrations", m.id, "events.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; step?: string; host?: string; undo?: boolean });
    const intents = journaled.filter((e) => e.event === "intent").map((e) => `${e.host} ${e.step}${e.undo ? " undo" : ""}`);
    const asked = run.calls.flatMap((c) => {
      const [host, step, action] = c.split(" ");
      return /^web\d$/.test(host ?? "") ? [`${host} ${step}${/^un|remove-new/.test(action ?? "") ? " undo" : ""}`] : [];
    });
    for (const a of asked) expect(intents, `${a} asked without its intent journaled`).toContain(a);
    onHook = undefined;
    fs.rmSync(filler);
    // the lock could not be handed back (no space): it names the controller, which exits; here, where the
    // controller is this test's process, its exit is played by writing the lock as no process's
    const lockFile = SiteLock.file(stateDir, "a.com");
    expect(JSON.parse(fs.readFileSync(lockFile, "utf8"))).toMatchObject({ migrationId: m.id, pid: process.pid });
    fs.writeFileSync(lockFile, JSON.stringify({ migrationId: m.id, pid: 0, startTime: "", host: "" }));
    const done = await continueRun("rollback");
    expect(done.result).toMatchObject({ outcome: "rolled-back", exitCode: 0 });
    expect(done.calls.at(-1)).toBe("hook maintenanceOff");
    expectBackAsBefore();
    expect(fs.readdirSync(path.join(stateDir, "migrations", m.id)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("a rollback that stops again hands the lock back; once the cause is gone a rollback ends and releases it", async () => {
    await migrate({ "push-site:web1": 1, "unpark-data:web2": 1 });
    const again = await continueRun("rollback", { "unpark-data:web2": 1 });
    expect(again.result.outcome).toBe("needs-attention");
    expect(await SiteLock.holder(stateDir, "a.com")).toMatchObject({ migrationId: m.id, pid: 0 });
    const done = await continueRun("rollback");
    expect(done.result).toMatchObject({ outcome: "rolled-back", exitCode: 0 });
    expectBackAsBefore();
  });

  it("a rollback with nothing left to undo (killed after it released the lock, before its result) takes the lock again and releases it", async () => {
    await migrate({ "push-site:web1": 1 });
    expectBackAsBefore();
    // the run's result line lost, as if it was killed right before it
    const file = path.join(stateDir, "migrations", m.id, "events.jsonl");
    const lines = fs.readFileSync(file, "utf8").trim().split("\n");
    fs.writeFileSync(file, `${lines.filter((l) => !l.includes('"event":"result"')).join("\n")}\n`);
    const run = await continueRun("rollback");
    expect(run.result).toMatchObject({ outcome: "rolled-back", exitCode: 0 });
    expect(undone(run)).toEqual([]);
    expectBackAsBefore();
  });

  it("resume or rollback of a migration whose lock a running process holds: locked (exit 4), and nothing is journaled", async () => {
    await migrate({ "push-site:web1": 1, "unpark-data:web2": 1 });
    const file = path.join(stateDir, "migrations", m.id, "events.jsonl");
    const journaled = fs.readFileSync(file, "utf8");
    const running = await SiteLock.takeOver(stateDir, ["a.com"], m.id);
    for (const kind of ["resume", "rollback"] as const) {
      const run = await continueRun(kind);
      expect(run.result).toMatchObject({ outcome: "locked", exitCode: 4 });
      expect(run.events).toEqual([expect.objectContaining({ event: "result", outcome: "locked" })]);
      expect(run.calls).toEqual([]);
    }
    expect(fs.readFileSync(file, "utf8")).toBe(journaled);
    await running.release();
  });

  it("resume or rollback that finds, once it holds the lock, that another run finished the migration: refused, lock released", async () => {
    await migrate({ "push-site:web1": 1, "unpark-data:web2": 1 });
    const { journal, events } = await Journal.load(stateDir, m.id);
    // another rollback ends the migration after this one read the journal
    expect((await continueRun("rollback")).result.outcome).toBe("rolled-back");
    const calls: Calls = [];
    const reported: RunEvent[] = [];
    const plan = buildPlan({ migration: m, master: "hostmaster", fronts: FRONTS.map((name) => ({ name, local: false })), hooks: new Set(HOOK_NAMES) });
    const late = await new MigrationRunner({
      plan,
      mode: { kind: "resume", journal, events },
      root,
      stateDir,
      fronts: new Map(FRONTS.map((name) => [name, new FakeAgent(name, calls, new Map())])),
      master: new SiteTree(root),
      hooks: new FakeHooks(calls, new Map()),
      tunnel: new FakeTunnel(calls, new Map()),
      reporter: reportingTo(reported),
      log: pino({ level: "silent" }),
      clock: new FakeClock(),
    }).run();
    expect(late).toMatchObject({ outcome: "refused", exitCode: 2 });
    expect(late.message).toContain("is finished (rolled-back)");
    expect(reported.at(-1)).toMatchObject({ event: "result", code: "MIGRATION_FINISHED" });
    expect(calls).toEqual([]);
    expectBackAsBefore();
  });

  it("a run cancelled during a hook still runs the undo hooks of its rollback", async () => {
    const cancel = new AbortController();
    const cancelUndo = new AbortController();
    const onHook = (name: HookName) => {
      if (name === "updatedb") cancel.abort(new Error("interrupted by SIGTERM"));
    };
    const run = await migrate({}, new SiteTree(root), { onHook, deps: { signal: cancel.signal, undoSignal: cancelUndo.signal } });
    expect(run.result.outcome).toBe("rolled-back");
    expect(run.result.message).toMatch(/^master-move-site failed on hostmaster: hook updatedb \(drush\) failed: cancelled/);
    expect(run.calls.filter((c) => c.startsWith("hook "))).toEqual([
      "hook maintenanceOn",
      "hook dbDump",
      "hook deploy",
      "hook updatedb cancelled",
      "hook dbRestore",
      "hook deploy",
      "hook maintenanceOff",
    ]);
    expectBackAsBefore();
  });

  it("cancelled during a step that cannot be cut short (restore-data), no further step starts: it rolls back, never past the point of no return", async () => {
    // what a SIGTERM does to a migration (execution.ts)
    const cancel = new Cancellation();
    const onApply = (action: FrontAction) => {
      // one signal (restore-data goes to both fronts; a second signal would cancel the rollback too)
      if (action === "restore-data" && !cancel.forward.aborted) cancel.interrupt("SIGTERM");
    };
    const run = await migrate({}, new SiteTree(root), { onApply, deps: { signal: cancel.forward, undoSignal: cancel.undo } });
    expect(run.result.outcome).toBe("rolled-back");
    expect(run.result.message).toMatch(/^interrupted by SIGTERM before fronts-remove-old; rolled back/);
    // stopped by the operator, not a bug: its own code
    expect(run.events.at(-1)).toMatchObject({ event: "result", code: "CANCELLED" });
    expect(run.calls.some((c) => c.includes("remove-old-site"))).toBe(false);
    expect(undone(run)).toEqual(expectedUndo(run.plan, "fronts-restore-data"));
    expectBackAsBefore();
  });

  it("a cancelled rollback stops at the undo hook it cancelled, resumable", async () => {
    const cancelUndo = new AbortController();
    cancelUndo.abort(new Error("interrupted by SIGTERM"));
    const run = await migrate({ "hook:updatedb": 1 }, new SiteTree(root), { deps: { undoSignal: cancelUndo.signal } });
    expect(run.result.outcome).toBe("needs-attention");
    expect(run.result.message).toMatch(/rollback stopped: undo of master-move-site failed on hostmaster: hook dbRestore \(drush\) failed: cancelled/);
    expect(run.calls).not.toContain("hook maintenanceOff");
  });
});

/** The hostmaster's process groups as the runner sees them: whether one runs, and ending it. */
class FakeGroups implements ProcessGroupsLike {
  constructor(
    private readonly calls: Calls,
    private alive: boolean,
    private readonly endsWith: EndedBy | Error = "SIGTERM",
  ) {}
  running(): boolean {
    return this.alive;
  }
  async end(g: HookGroup): Promise<EndedBy> {
    this.calls.push(`end group ${g.pgid} (${g.startTime})`);
    if (this.endsWith instanceof Error) throw this.endsWith;
    this.alive = false;
    return this.endsWith;
  }
}

describe("resume and rollback after the controller was killed while a hook ran", () => {
  /**
   * A migration whose controller dies while updatedb runs: the run is left suspended inside the hook (it
   * never ends) once the hook's group is journaled, so that the journal and the trees are what a kill
   * at that instant leaves. Its lock names this very process, alive: it goes, as a dead holder's would be
   * taken over.
   */
  async function killedDuringUpdatedb(): Promise<void> {
    let journaled: () => void = () => undefined;
    const hanging = new Promise<void>((resolve) => (journaled = resolve));
    const hooks = new FakeHooks([], new Map());
    const hang: HooksLike = {
      has: (name) => hooks.has(name),
      run: async (name, values, opts) => {
        if (name !== "updatedb") return hooks.run(name, values, opts);
        await opts?.started?.({ pgid: 4242, startTime: "777" });
        journaled();
        return new Promise(() => undefined);
      },
    };
    void migrate({}, new SiteTree(root), { deps: { hooks: hang } });
    await hanging;
    fs.rmSync(path.join(stateDir, "locks"), { recursive: true });
  }

  async function recover(kind: "resume" | "rollback", groups: FakeGroups, calls: Calls): Promise<{ result: RunResult; events: RunEvent[] }> {
    const { journal, events: journaled } = await Journal.load(stateDir, m.id);
    const plan = buildPlan({ migration: m, master: "hostmaster", fronts: FRONTS.map((name) => ({ name, local: false })), hooks: new Set(HOOK_NAMES) });
    const events: RunEvent[] = [];
    const mode: RunMode = { kind, journal, events: journaled };
    const runner = new MigrationRunner({
      plan,
      mode,
      root,
      stateDir,
      fronts: new Map(FRONTS.map((name) => [name, new FakeAgent(name, calls, new Map())])),
      master: new SiteTree(root),
      hooks: new FakeHooks(calls, new Map()),
      tunnel: new FakeTunnel(calls, new Map()),
      reporter: reportingTo(events),
      log: pino({ level: "silent" }),
      clock: new FakeClock(),
      groups,
    });
    return { result: await runner.run(), events };
  }

  it("rollback ends the hook's process group first, says so, then undoes everything (dbRestore included)", async () => {
    await killedDuringUpdatedb();
    const calls: Calls = [];
    const { result, events } = await recover("rollback", new FakeGroups(calls, true), calls);
    expect(result.outcome, result.message).toBe("rolled-back");
    expect(calls[0]).toBe("end group 4242 (777)");
    expect(calls).toContain("hook dbRestore");
    const orphan = events.findIndex((e) => e.event === "orphaned-hook");
    expect(events[orphan]).toEqual({ event: "orphaned-hook", migrationId: m.id, step: "master-move-site", hook: "updatedb", pgid: 4242, endedBy: "SIGTERM" });
    expect(orphan).toBeLessThan(events.findIndex((e) => e.event === "step-start"));
    expectBackAsBefore();
    const { events: after } = await Journal.load(stateDir, m.id);
    expect(replay(after).unendedHooks).toEqual([]);
  });

  it("resume ends it first too, then runs updatedb again and migrates", async () => {
    await killedDuringUpdatedb();
    const calls: Calls = [];
    const { result, events } = await recover("resume", new FakeGroups(calls, true, "SIGKILL"), calls);
    expect(result.outcome, result.message).toBe("migrated");
    expect(calls[0]).toBe("end group 4242 (777)");
    expect(calls).toContain("hook updatedb");
    expect(events.find((e) => e.event === "orphaned-hook")).toMatchObject({ hook: "updatedb", endedBy: "SIGKILL" });
  });

  it("a group already gone is journaled as such, silently", async () => {
    await killedDuringUpdatedb();
    const calls: Calls = [];
    const { result, events } = await recover("rollback", new FakeGroups(calls, false), calls);
    expect(result.outcome).toBe("rolled-back");
    expect(calls.filter((c) => c.startsWith("end group"))).toEqual([]);
    expect(events.filter((e) => e.event === "orphaned-hook")).toEqual([]);
    const { events: after } = await Journal.load(stateDir, m.id);
    expect(after.filter((e) => e.event === "hook-ended")).toEqual([expect.objectContaining({ hook: "updatedb", pgid: 4242, endedBy: "gone" })]);
  });

  it("a group that cannot be ended: needs attention, nothing is done; once it is gone, rollback finishes", async () => {
    await killedDuringUpdatedb();
    const calls: Calls = [];
    const eperm = new QmError("HOOK_FAILED", "process group 4242 cannot be signalled: EPERM");
    const { result, events } = await recover("rollback", new FakeGroups(calls, true, eperm), calls);
    expect(result.outcome).toBe("needs-attention");
    expect(result.exitCode).toBe(3);
    expect(result.message).toBe(
      `hook updatedb of the interrupted run (process group 4242) is still running and could not be ended: process group 4242 cannot be signalled: EPERM; nothing was done: end it, then run \`quick-migrate rollback ${m.id}\` again`,
    );
    expect(calls).toEqual(["end group 4242 (777)"]);
    expect(events.filter((e) => e.event === "step-start")).toEqual([]);
    // the lock stays with the migration (its holder, this process, stands for one that has exited)
    expect(fs.readdirSync(path.join(stateDir, "locks"))).toEqual(["a.com.lock"]);
    fs.rmSync(path.join(stateDir, "locks"), { recursive: true });
    const again: Calls = [];
    expect((await recover("rollback", new FakeGroups(again, false), again)).result.outcome).toBe("rolled-back");
    expectBackAsBefore();
  });
});

