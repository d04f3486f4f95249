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
import type { RunEvent } from "../../controller/events.js";
import { HOOK_NAMES, type HookName } from "../../controller/hooks.js";
import { type Plan, buildPlan } from "../../controller/plan.js";
import { Journal } from "../../controller/journal.js";
import { MigrationRunner, type RunMode, type RunResult } from "../../controller/runner.js";
import { SiteLock } from "../../controller/siteLock.js";
import { POINT_OF_NO_RETURN, STEP_NAMES, type StepName } from "../../controller/steps.js";
import type { RsyncRun } from "../../controller/tunnel.js";
import { QmError } from "../../shared/errors.js";
import type { ApplyResponse, PreflightResponse } from "../../shared/generated/quickmigrate/v1/agent.js";
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
  ) {}
  async hello() {
    return { protocolVersion: PROTOCOL_VERSION, agentVersion: "fake", hostname: this.name };
  }
  async preflight(): Promise<PreflightResponse> {
    return { problems: [], dataDirs: [] };
  }
  async apply(_id: string, step: string, action: FrontAction): Promise<ApplyResponse> {
    this.calls.push(`${this.name} ${step} ${action}`);
    if (failing(this.failures, `${action}:${this.name}`, action)) throw new QmError("IO", `${action} failed`, { host: this.name });
    return { changes: [], repeated: false };
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
  ) {}
  has(name: HookName): boolean {
    return HOOK_NAMES.includes(name);
  }
  async run(name: HookName) {
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

afterEach(async () => {
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

async function migrate(failures: Record<string, number> = {}, master = new SiteTree(root)): Promise<Run> {
  return runWith({ kind: "migrate", dryRun: false }, failures, master);
}

/** `resume` or `rollback` of m1, from its journal. */
async function continueRun(kind: "resume" | "rollback", failures: Record<string, number> = {}): Promise<Run> {
  const { journal, events } = await Journal.load(stateDir, m.id);
  return runWith({ kind, journal, events }, failures);
}

async function runWith(mode: RunMode, failures: Record<string, number> = {}, master = new SiteTree(root)): Promise<Run> {
  const calls: Calls = [];
  const fail: Failures = new Map(Object.entries(failures));
  const events: RunEvent[] = [];
  const clock = new FakeClock();
  const plan = buildPlan({ migration: m, master: "hostmaster", fronts: FRONTS.map((name) => ({ name, local: false })), hooks: new Set(HOOK_NAMES) });
  const runner = new MigrationRunner({
    plan,
    mode,
    root,
    stateDir,
    fronts: new Map(FRONTS.map((name) => [name, new FakeAgent(name, calls, fail)])),
    master,
    hooks: new FakeHooks(calls, fail),
    tunnel: new FakeTunnel(calls, fail),
    reporter: { event: (e) => events.push(e) },
    log: pino({ level: "silent" }),
    clock,
    retryDelayMs: 1000,
  });
  return { result: await runner.run(), events, calls, clock, plan };
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
      reporter: { event: (e) => reported.push(e) },
      log: pino({ level: "silent" }),
      clock: new FakeClock(),
    }).run();
    expect(late).toMatchObject({ outcome: "refused", exitCode: 2 });
    expect(late.message).toContain("is finished (rolled-back)");
    expect(calls).toEqual([]);
    expectBackAsBefore();
  });
});
