// The controller's textfile for node_exporter: counters carried over from the previous file, the last
// run's figures replaced, dry runs and skipped steps left out, and the file written by rename.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Reporter, RunEvent } from "../../controller/events.js";
import { loadControllerConfig } from "../../controller/config.js";
import { RunFigures, type RunSummary, readCounters, renderTextfile, writeRunFigures } from "../../controller/metricsTextfile.js";
import { createRootLogger } from "../../shared/logger.js";
import { samples } from "../helpers/exposition.js";

const migration = { id: "20260101T000000Z-abcdef", from: "d7", site: "shop.example.com", to: "d8", newSite: "shop.example.com", dataDirs: ["files"] };

const run = (over: Partial<RunSummary> = {}): RunSummary => ({
  command: "migrate",
  outcome: "migrated",
  migrationId: migration.id,
  site: migration.site,
  newSite: migration.newSite,
  seconds: 2.5,
  endedAt: 1_767_225_600,
  steps: [
    { step: "preflight", direction: "forward", seconds: 0.25, ok: true },
    { step: "fronts-park-data", direction: "forward", seconds: 0.125, ok: true },
  ],
  ...over,
});


describe("renderTextfile", () => {
  it("a first run: its counters at 1, its steps, and the last run's figures", () => {
    const s = samples(renderTextfile("", run()));
    expect(s.get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(1);
    expect(s.get('quick_migrate_step_duration_seconds_sum{step="preflight",direction="forward"}')).toBe(0.25);
    expect(s.get('quick_migrate_step_duration_seconds_count{step="preflight",direction="forward"}')).toBe(1);
    expect(s.get('quick_migrate_last_run_info{command="migrate",outcome="migrated",migration_id="20260101T000000Z-abcdef",site="shop.example.com",new_site="shop.example.com"}')).toBe(1);
    expect(s.get("quick_migrate_last_run_timestamp_seconds")).toBe(1_767_225_600);
    expect(s.get("quick_migrate_last_run_duration_seconds")).toBe(2.5);
    expect(s.get('quick_migrate_last_run_step_duration_seconds{step="fronts-park-data",direction="forward"}')).toBe(0.125);
    expect([...s.keys()].some((k) => k.startsWith("quick_migrate_step_failures_total"))).toBe(false);
  });

  it("a second run adds to the first's counters and replaces its last-run figures", () => {
    const first = renderTextfile("", run());
    const second = renderTextfile(
      first,
      run({ command: "rollback", outcome: "rolled-back", site: "blog.example.com", seconds: 1, steps: [{ step: "fronts-park-data", direction: "undo", seconds: 0.5, ok: false }] }),
    );
    const s = samples(second);
    expect(s.get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(1);
    expect(s.get('quick_migrate_runs_total{command="rollback",outcome="rolled-back"}')).toBe(1);
    expect(s.get('quick_migrate_step_duration_seconds_count{step="preflight",direction="forward"}')).toBe(1);
    expect(s.get('quick_migrate_step_duration_seconds_sum{step="fronts-park-data",direction="undo"}')).toBe(0.5);
    expect(s.get('quick_migrate_step_failures_total{step="fronts-park-data",direction="undo"}')).toBe(1);
    expect([...s.keys()].filter((k) => k.startsWith("quick_migrate_last_run_info"))).toEqual([
      'quick_migrate_last_run_info{command="rollback",outcome="rolled-back",migration_id="20260101T000000Z-abcdef",site="blog.example.com",new_site="shop.example.com"}',
    ]);
    expect(s.get('quick_migrate_last_run_step_duration_seconds{step="preflight",direction="forward"}')).toBeUndefined();
    const third = samples(renderTextfile(second, run()));
    expect(third.get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(2);
    expect(third.get('quick_migrate_step_duration_seconds_sum{step="preflight",direction="forward"}')).toBe(0.5);
  });

  it("each metric family's lines are together, with one HELP and TYPE each (the text format requires it)", () => {
    const text = renderTextfile(renderTextfile("", run()), run({ outcome: "refused" }));
    const families: string[] = [];
    for (const line of text.split("\n")) {
      const m = /^# TYPE (\S+) /.exec(line) ?? /^([a-z_]+?)(?:_sum|_count)?(?:\{|\s)/.exec(line);
      if (!m || line.startsWith("# HELP") || (line.startsWith("#") && !line.startsWith("# TYPE"))) continue;
      const family = m[1] as string;
      if (families.at(-1) !== family) families.push(family);
    }
    expect(new Set(families).size, families.join(", ")).toBe(families.length);
  });

  it("reads back only its own counters; junk, other metrics and bad values are dropped", () => {
    const previous = [
      "# a comment",
      'quick_migrate_runs_total{command="migrate",outcome="migrated"} 7',
      'quick_migrate_runs_total{command="migrate",outcome="refused"} -3',
      "quick_migrate_last_run_duration_seconds 12",
      'node_something{a="b"} 4',
      "garbage line",
      'quick_migrate_step_failures_total{step="a\\"b",direction="forward"} 2',
    ].join("\n");
    expect([...readCounters(previous)]).toEqual([
      ['quick_migrate_runs_total{command="migrate",outcome="migrated"}', 7],
      ['quick_migrate_step_failures_total{step="a\\"b",direction="forward"}', 2],
    ]);
  });

  it("escapes label values", () => {
    const text = renderTextfile("", run({ site: 'we"ird\\site' }));
    expect(text).toContain('site="we\\"ird\\\\site"');
  });
});

describe("RunFigures", () => {
  const seen: RunEvent[] = [];
  const inner: Reporter = { event: (e) => seen.push(e) };
  const plan = (dryRun: boolean): RunEvent => ({ event: "plan", migrationId: migration.id, site: migration.site, newSite: migration.newSite, from: "d7", to: "d8", dryRun, fetchFrom: "web1", steps: [] });
  const stepEnd = (step: string, durationMs: number, extra: object = {}): RunEvent => ({ event: "step-end", migrationId: migration.id, step, ok: true, acked: 1, expected: 1, durationMs, ...extra });
  const result: RunEvent = { event: "result", migrationId: migration.id, outcome: "rolled-back", exitCode: 1, message: "x", durationMs: 4000 };

  it("passes every event on and keeps the steps that ran, undo apart, skipped ones left out", () => {
    const f = new RunFigures(inner);
    const events = [plan(false), stepEnd("preflight", 100), stepEnd("master-park-data", 0, { skipped: "the hostmaster is a front" }), stepEnd("fronts-park-data", 50, { ok: false }), stepEnd("fronts-park-data", 20, { undo: true }), result];
    for (const e of events) f.event(e);
    expect(seen.slice(-events.length)).toEqual(events);
    expect(f.summary("migrate", migration, 100)).toEqual({
      command: "migrate",
      outcome: "rolled-back",
      migrationId: migration.id,
      site: migration.site,
      newSite: migration.newSite,
      seconds: 4,
      endedAt: 100,
      steps: [
        { step: "preflight", direction: "forward", seconds: 0.1, ok: true },
        { step: "fronts-park-data", direction: "forward", seconds: 0.05, ok: false },
        { step: "fronts-park-data", direction: "undo", seconds: 0.02, ok: true },
      ],
    });
  });

  it("a dry run, or a run without a result, has no figures", () => {
    const dry = new RunFigures(inner);
    for (const e of [plan(true), stepEnd("preflight", 100), result]) dry.event(e);
    expect(dry.summary("migrate", migration, 1)).toBeUndefined();
    const unfinished = new RunFigures(inner);
    unfinished.event(plan(false));
    expect(unfinished.summary("migrate", migration, 1)).toBeUndefined();
  });
});

describe("writeRunFigures", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-textfile-"));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("writes the file readable by node_exporter, leaves no temp or lock file, and counts on from the previous one", async () => {
    const file = path.join(dir, "quick_migrate.prom");
    await writeRunFigures(file, run());
    await writeRunFigures(file, run());
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(dir)).toEqual(["quick_migrate.prom"]);
    expect(samples(fs.readFileSync(file, "utf8")).get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(2);
  });

  it("replaces the file by rename: a reader holding the old file still reads it whole", async () => {
    const file = path.join(dir, "quick_migrate.prom");
    await writeRunFigures(file, run());
    const before = fs.statSync(file).ino;
    const old = fs.openSync(file, "r");
    const oldText = fs.readFileSync(file, "utf8");
    await writeRunFigures(file, run({ outcome: "refused" }));
    expect(fs.statSync(file).ino, "a new file was renamed over the old one").not.toBe(before);
    expect(fs.readFileSync(old, "utf8")).toBe(oldText);
    fs.closeSync(old);
  });

  it("two controllers ending at once: neither's run is lost", async () => {
    const file = path.join(dir, "quick_migrate.prom");
    await Promise.all(Array.from({ length: 8 }, () => writeRunFigures(file, run())));
    expect(samples(fs.readFileSync(file, "utf8")).get('quick_migrate_runs_total{command="migrate",outcome="migrated"}')).toBe(8);
  });

  it("a lock left by a controller that died is taken over once stale", async () => {
    const file = path.join(dir, "quick_migrate.prom");
    const lock = path.join(dir, ".quick_migrate.prom.lock");
    fs.writeFileSync(lock, "");
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lock, old, old);
    await writeRunFigures(file, run());
    expect(fs.existsSync(file)).toBe(true);
    expect(fs.existsSync(lock)).toBe(false);
  });

  it("a folder that is not there: RunFigures logs it and the run goes on", async () => {
    const f = new RunFigures({ event: () => undefined });
    f.event({ event: "plan", migrationId: migration.id, site: migration.site, newSite: migration.newSite, from: "d7", to: "d8", dryRun: false, fetchFrom: "web1", steps: [] });
    f.event({ event: "result", migrationId: migration.id, outcome: "migrated", exitCode: 0, message: "", durationMs: 1 });
    const lines: string[] = [];
    const log = createRootLogger("test", "warn", { write: (l: string) => lines.push(l) });
    await f.writeTo(path.join(dir, "missing", "quick_migrate.prom"), "migrate", migration, log);
    expect(lines.join("")).toContain("metrics textfile not written");
  });
});

describe("the controller's metrics config", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-textfile-config-"));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const load = (extra: string) => {
    const file = path.join(dir, "controller.yaml");
    fs.writeFileSync(file, `root: /var/aegir/platforms\nstateDir: /var/aegir/qm\ninsecure: true\nfronts: [{ name: web1, address: "127.0.0.1:7101" }]\n${extra}`);
    return { file, config: loadControllerConfig(file) };
  };

  it("off when absent; an absolute path ending in .prom when set", async () => {
    expect((await load("").config).metrics).toBeUndefined();
    expect((await load("metrics: { textfile: /var/lib/prometheus/node-exporter/quick_migrate.prom }\n").config).metrics).toEqual({
      textfile: "/var/lib/prometheus/node-exporter/quick_migrate.prom",
    });
  });

  it("refuses a relative path, a name the collector would not read, and unknown keys, each with its key", async () => {
    for (const [extra, message] of [
      ["metrics: { textfile: quick_migrate.prom }\n", "metrics.textfile: must be an absolute path"],
      ["metrics: { textfile: /var/lib/node-exporter/quick_migrate.txt }\n", "metrics.textfile: must end in .prom"],
      ["metrics: { textfile: /x/q.prom, listen: 9 }\n", "metrics: Unrecognized key"],
    ] as const) {
      const { file, config } = load(extra);
      await expect(config).rejects.toThrow(`${file}: ${message}`);
    }
  });
});
