// Front-side recovery while the hostmaster's recovery runs (issue 8, item 5): `parked restore` on the
// fronts in the middle of a `rollback` or a `resume` (held at a step by a hook that waits for the
// test), after a recovery that ended needs-attention, and in the middle of an Apply of the agent
// service on the same record (two processes, one record). Every case ends in one consistent state:
// every tree as before (or fully migrated past the point of no return), the data in one place, no
// site lock and no record lock left.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { execa } from "execa";
import { type ClusterFront, type ControllerRun, fakeDrushHooks, repoRoot, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { eventually } from "../helpers/eventually.js";
import { type Scenario, DATA_DIRS, expectDataExactlyOnce, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";
import { crashedScenario } from "./crash.helpers.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** Waits until `ok` says yes (test/helpers/eventually.ts, polled every 100 ms). */
async function until(what: string, ok: () => boolean, withinMs = 30_000): Promise<void> {
  await eventually(what, ok, (yes) => yes, withinMs);
}

/** `parked restore` as the front's operator would run it: as the agent's user, the service running or not. */
function parkedRestore(f: ClusterFront, id: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return runAgentCommand(f, ["parked", "restore", id]);
}

/** No site lock on the hostmaster, and no record lock on any front. */
function expectNoLock(s: Scenario): void {
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no site lock left held").toEqual([]);
  for (const f of s.cluster.fronts) {
    const records = path.join(f.stateDir, "migrations");
    const locks = fs.existsSync(records) ? fs.readdirSync(records).filter((n) => n.endsWith(".lock")) : [];
    expect(locks, `${f.name}: no record lock left`).toEqual([]);
  }
}

/**
 * A hook that waits for the test: it says it started (a file), waits until the test lets it go
 * (another file), then runs the real hook. The recovery is held at that hook's step meanwhile.
 */
interface Gate {
  readonly hook: string[];
  started(): Promise<void>;
  open(): void;
}

function gate(s: Scenario, name: string, real: readonly string[]): Gate {
  const started = path.join(s.baseDir, `${name}.started`);
  const go = path.join(s.baseDir, `${name}.go`);
  return {
    hook: ["sh", "-c", `touch '${started}'; while [ ! -e '${go}' ]; do sleep 0.05; done; exec "$@"`, "sh", ...real],
    started: () => until(`hook ${name} started`, () => fs.existsSync(started)),
    open: () => fs.writeFileSync(go, ""),
  };
}

/** Starts the controller (`args`) with hook `hookName` gated; resolves once the run is held at that hook. */
async function heldAt(s: Scenario, args: readonly string[], hookName: string): Promise<{ done: Promise<ControllerRun>; release: () => void }> {
  const hooks = fakeDrushHooks();
  const g = gate(s, hookName, hooks[hookName] as string[]);
  s.cluster.writeControllerConfig({ hooks: { ...hooks, [hookName]: g.hook } });
  const done = runController(s.cluster.controllerConfig, [...args, "--json"], { timeoutMs: 60_000 });
  // a controller that ended before the hook started is a failure with its output, not a wait for ever
  await Promise.race([
    g.started(),
    done.then((r) => {
      throw new Error(`${args.join(" ")} ended before hook ${hookName} ran (exit ${r.exitCode}):\n${r.stdout}${r.stderr}`);
    }),
  ]);
  return { done, release: g.open };
}

/** `parked restore` on every front, each ending well and saying `said`. */
async function restoreOnEveryFront(s: Scenario, id: string, said: RegExp): Promise<void> {
  for (const f of s.cluster.fronts) {
    const r = await parkedRestore(f, id);
    expect(r.exitCode, `${f.name}: ${lines(r)}`).toBe(0);
    expect(r.stdout).toMatch(said);
  }
}

/**
 * `parked restore` while an Apply holds the record: it waits for the Apply (which pauses `pauseMs` at
 * each rename), then finds every data dir in the park area and puts it back.
 */
async function restoreOnceTheApplyEnds(f: ClusterFront, id: string, pauseMs: number): Promise<void> {
  const started = performance.now();
  const r = await parkedRestore(f, id);
  const took = performance.now() - started;
  expect(r.exitCode, lines(r)).toBe(0);
  expect(took, "parked restore waited for the Apply").toBeGreaterThan(pauseMs / 2);
  for (const d of DATA_DIRS) expect(r.stdout).toMatch(new RegExp(`^${d}: restored to .* from park `, "m"));
}

function lines(r: { stdout: string; stderr: string }): string {
  return `${r.stdout}${r.stderr}`;
}

describe("parked restore while the hostmaster's rollback runs", () => {
  // killed with the data in the new site folders; the rollback is held at master-move-site's undo
  // (dbRestore: the fronts' data was put back in the park area just before) or at the last undo
  // (maintenanceOff: the fronts' data is back in the old site folders)
  it.each([
    ["dbRestore", "the fronts' data is parked: restore puts it back", /^files: restored to .* from park /m],
    ["maintenanceOff", "the fronts' data is back already: restore has nothing to do", /^files: already at /m],
  ])("held at hook %s (%s); rollback then ends: exit 0, every tree as before, no lock", async (hook, _what, said) => {
    const { s, id } = await crashedScenario("kill-before:fronts-remove-old");
    scenario = s;
    const held = await heldAt(s, ["rollback", id], hook);
    await expectDataExactlyOnce(s, id);
    await restoreOnEveryFront(s, id, said);
    await expectDataExactlyOnce(s, id);
    held.release();
    const run = await held.done;
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });
});

describe("parked restore while the hostmaster's resume runs", () => {
  it("before the point of no return (held at updatedb): restore puts the data back; resume rolls back instead, every tree as before, no lock", async () => {
    const { s, id } = await crashedScenario("kill-before:master-move-site");
    scenario = s;
    const held = await heldAt(s, ["resume", id], "updatedb");
    await restoreOnEveryFront(s, id, /restored to/);
    held.release();
    const run = await held.done;
    const result = run.events.at(-1) as { outcome: string; message: string; code?: string };
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(result.outcome).toBe("rolled-back");
    // the first front action after the restore is refused: the run rolls back instead of going on (both
    // fronts were restored and both refuse their push; the message names the one that answered first)
    expect(result.message).toMatch(/^push-site failed on web[12]: migration \S+ was put back by `quick-migrate-agent parked restore` .*: it can only be rolled back .*; rolled back: /);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("past the point of no return (held at maintenanceOff): restore is refused on every front; resume ends migrated, no lock", async () => {
    const { s, id } = await crashedScenario("kill-before:fronts-remove-old");
    scenario = s;
    const held = await heldAt(s, ["resume", id], "maintenanceOff");
    for (const f of s.cluster.fronts) {
      const r = await parkedRestore(f, id);
      expect(r.exitCode, `${f.name}: ${lines(r)}`).not.toBe(0);
      expect(r.stderr).toContain("past the point of no return");
    }
    held.release();
    const run = await held.done;
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    expectNoLock(s);
  });
});

describe("parked restore after a recovery that ended needs-attention", () => {
  it.each([
    ["rollback", 0],
    ["resume", 1],
  ] as const)("web2 down during the rollback (exit 3); parked restore on web2, its service still down; web2 back, %s: every tree as before, no lock", async (command, exitCode) => {
    const { s, id } = await crashedScenario("kill-before:fronts-remove-old");
    scenario = s;
    await s.cluster.stopAgent("web2");
    const first = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(first.exitCode, first.stdout + first.stderr).toBe(3);
    const result = first.events.at(-1) as { outcome: string; message: string };
    expect(result.outcome).toBe("needs-attention");
    expect(result.message).toMatch(/on web2: agent unreachable/);
    expect(result.message).toContain(`quick-migrate rollback ${id}`);
    await expectDataExactlyOnce(s, id);

    // the front's operator, the service stopped: the data goes back where it was
    const r = await parkedRestore(s.cluster.front("web2"), id);
    expect(r.exitCode, lines(r)).toBe(0);
    expect(r.stdout).toMatch(/restored to/);
    await s.cluster.startAgent("web2");

    const again = await runController(s.cluster.controllerConfig, [command, id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(exitCode);
    // either way the migration goes back: resume, which cannot go forward past a restore, rolls back instead
    expect(again.events.at(-1)).toMatchObject({ outcome: "rolled-back" });
    await expectUnchanged(s);
    expectNoLock(s);
  });
});

describe("the agent service and the parked command on one record, as two processes", () => {
  const PAUSE_MS = 1500;

  it("parked restore started while an Apply (park-data) holds the record: it waits for the Apply to end, then restores both data dirs; the migration rolls back, every tree as before", async () => {
    const s = (scenario = await setupScenario({
      // web1's agent holds each park-data rename open for PAUSE_MS, the record's lock held
      fronts: [{ name: "web1", env: { QM_AGENT_FAULT: `pause-mid:park-data:${PAUSE_MS}` } }, { name: "web2" }],
      hooks: fakeDrushHooks(),
    }));
    const web1 = s.cluster.front("web1");
    const records = path.join(web1.stateDir, "migrations");
    const running = runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { timeoutMs: 60_000 });

    // the Apply is in the middle of its first rename: the record's lock is the service's
    let lockFile = "";
    await until("web1's record lock taken by the Apply", () => {
      const found = fs.existsSync(records) ? fs.readdirSync(records).find((n) => n.endsWith(".lock")) : undefined;
      lockFile = found ? path.join(records, found) : "";
      return found !== undefined && fs.statSync(lockFile).size > 0;
    });
    const id = path.basename(lockFile, ".lock");
    const holder = JSON.parse(fs.readFileSync(lockFile, "utf8")) as { pid: number; what: string };
    expect(holder).toMatchObject({ pid: web1.process?.pid, what: "the agent service" });

    // it waited: the Apply had at least one more pause to go, and the restore found both data dirs
    // parked (run between the Apply's two renames, it would have found private/files still in place)
    await restoreOnceTheApplyEnds(web1, id, PAUSE_MS);

    const run = await running;
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expect(run.events.find((e) => e.event === "ack" && e.step === "fronts-park-data" && e.host === "web1")).toMatchObject({ ok: true });
    expect(run.events.at(-1)).toMatchObject({ outcome: "rolled-back" });
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("parked restore started while the rollback's Apply (unrestore-data) holds the record: it waits, then puts the data back; the rollback ends, every tree as before", async () => {
    const { s, id } = await crashedScenario("kill-before:fronts-remove-old");
    scenario = s;
    // web1's agent again, now holding each rename of the rollback's first front action open
    await s.cluster.stopAgent("web1");
    await s.cluster.startAgent("web1", { env: { QM_AGENT_FAULT: `pause-mid:unrestore-data:${PAUSE_MS}` } });
    const web1 = s.cluster.front("web1");
    const lockFile = path.join(web1.stateDir, "migrations", `${id}.lock`);
    const running = runController(s.cluster.controllerConfig, ["rollback", id, "--json"], { timeoutMs: 60_000 });
    await until("web1's record lock taken by the rollback's Apply", () => fs.existsSync(lockFile) && fs.statSync(lockFile).size > 0);
    expect(JSON.parse(fs.readFileSync(lockFile, "utf8"))).toMatchObject({ pid: web1.process?.pid, what: "the agent service" });

    // both were in the park area when it ran: the Apply had moved both
    await restoreOnceTheApplyEnds(web1, id, PAUSE_MS);

    const run = await running;
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  // The other way round. `parked restore` holds the record only for its renames, too briefly to catch
  // from outside; a process of its own takes the record's lock as the command does (the agent's own
  // withRecordLock, from dist/), holds it, and watches the tree meanwhile.
  // long enough that the Apply comes while it is held, the gated hook and master-park-data before it on a loaded machine
  const HOLD_MS = 3000;
  const HOLDER = `
    import fs from "node:fs";
    const [module, stateDir, id, watched, ms] = process.argv.slice(1);
    const { withRecordLock } = await import(module);
    let moved = false;
    await withRecordLock(stateDir, id, { what: "quick-migrate-agent parked restore" }, async () => {
      process.stdout.write("held\\n");
      for (const end = Date.now() + Number(ms); Date.now() < end; await new Promise((r) => setTimeout(r, 10))) moved ||= !fs.existsSync(watched);
    });
    process.stdout.write(JSON.stringify({ moved }) + "\\n");
  `;

  it("an Apply (park-data) that comes while another process holds the record, as parked restore does, waits for it and changes nothing meanwhile; the migration completes", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], hooks: fakeDrushHooks() }));
    const web1 = s.cluster.front("web1");
    const records = path.join(web1.stateDir, "migrations");
    // held at db-dump: the migration is registered on web1, nothing is parked yet
    const held = await heldAt(s, ["migrate", s.site, "--to", s.to], "dbDump");
    const id = path.basename(fs.readdirSync(records).find((n) => n.endsWith(".json")) as string, ".json");

    const files = path.join(web1.root, s.from, "sites", s.site, "files");
    const holder = execa(process.execPath, ["--input-type=module", "-e", HOLDER, path.join(repoRoot(), "dist", "agent", "recordLock.js"), web1.stateDir, id, files, String(HOLD_MS)], {
      reject: false,
      ...(web1.user ? { uid: web1.user.uid, gid: web1.user.gid } : {}),
    });
    await until("the holder took the record's lock", () => fs.existsSync(path.join(records, `${id}.lock`)));
    held.release();

    const h = await holder;
    expect(h.exitCode, String(h.stdout) + String(h.stderr)).toBe(0);
    expect(JSON.parse(String(h.stdout).split("\n")[1] as string), "web1's files stayed in place while the record was held").toEqual({ moved: false });
    const run = await held.done;
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    const parked = run.events.find((e) => e.event === "step-end" && e.step === "fronts-park-data") as { durationMs: number } | undefined;
    expect(parked?.durationMs, "fronts-park-data waited for the holder").toBeGreaterThan(HOLD_MS / 3);
    await expectMigrated(s);
    expectNoLock(s);
  });
});
