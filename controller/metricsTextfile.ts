// The controller's figures for Prometheus, through node_exporter's textfile collector: after each
// migrate, resume or rollback run (not a dry run), the file metrics.textfile names is written again,
// atomically (a temp file in its folder, then a rename: the collector never reads half a file). Each run
// is a new process, so the counters go on from the previous file's values; the last run's figures
// replace the previous run's. Labels are bounded (command, outcome, step): the site is named only by
// the one quick_migrate_last_run_info series.
import { open, readFile, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { describeError } from "../shared/errors.js";
import { writeFileAtomic } from "../shared/fsutil.js";
import type { Logger } from "../shared/logger.js";
import type { MigrationSpec } from "../shared/migration.js";
import type { Reporter, RunEvent } from "./events.js";

export type Command = "migrate" | "resume" | "rollback";

export interface StepFigure {
  readonly step: string;
  readonly direction: "forward" | "undo";
  readonly seconds: number;
  /** every host acknowledged */
  readonly ok: boolean;
}

/** What one run adds to the textfile. */
export interface RunSummary {
  readonly command: Command;
  readonly outcome: string;
  readonly migrationId: string;
  readonly site: string;
  readonly newSite: string;
  readonly seconds: number;
  /** when the run ended, unix seconds */
  readonly endedAt: number;
  /** the steps this run ran (skipped ones left out), in order */
  readonly steps: readonly StepFigure[];
}

/** A reporter in front of the real one: passes every event on, and keeps the figures of the run. */
export class RunFigures implements Reporter {
  private readonly steps: StepFigure[] = [];
  private dryRun = false;
  private result: Extract<RunEvent, { event: "result" }> | undefined;

  constructor(private readonly inner: Reporter) {}

  event(e: RunEvent): void {
    this.inner.event(e);
    if (e.event === "plan") this.dryRun = e.dryRun;
    if (e.event === "step-end" && e.skipped === undefined) {
      this.steps.push({ step: e.step, direction: e.undo ? "undo" : "forward", seconds: e.durationMs / 1000, ok: e.ok });
    }
    if (e.event === "result") this.result = e;
  }

  /** The run's figures once it has its result; undefined for a dry run (it changes nothing) or a run without one. */
  summary(command: Command, m: MigrationSpec, endedAt: number): RunSummary | undefined {
    if (this.dryRun || !this.result) return undefined;
    return { command, outcome: this.result.outcome, migrationId: m.id, site: m.site, newSite: m.newSite, seconds: this.result.durationMs / 1000, endedAt, steps: [...this.steps] };
  }

  /** Writes the run's figures to `textfile` (when set); a failure is logged, never thrown: the run's outcome stands. */
  async writeTo(textfile: string | undefined, command: Command, m: MigrationSpec, log: Logger): Promise<void> {
    const run = this.summary(command, m, Date.now() / 1000);
    if (textfile === undefined || run === undefined) return;
    try {
      await writeRunFigures(textfile, run);
    } catch (err) {
      log.warn({ textfile, err: describeError(err) }, "metrics textfile not written");
    }
  }
}

// ---- the file --------------------------------------------------------------------------------------

const RUNS = "quick_migrate_runs_total";
const STEP_SUM = "quick_migrate_step_duration_seconds_sum";
const STEP_COUNT = "quick_migrate_step_duration_seconds_count";
const STEP_FAILURES = "quick_migrate_step_failures_total";
/** the series carried over from the previous file */
const CUMULATIVE: ReadonlySet<string> = new Set([RUNS, STEP_SUM, STEP_COUNT, STEP_FAILURES]);

type Labels = Readonly<Record<string, string>>;

const escape = (v: string): string => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const unescape = (v: string): string => v.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));

function series(name: string, labels: Labels): string {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`);
  return l.length === 0 ? name : `${name}{${l.join(",")}}`;
}

/** The cumulative series of a previous file, by their text (`name{labels}`): anything else in it is dropped. Pure. */
export function readCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{.*\})? (\S+)$/.exec(line);
    if (!m || !CUMULATIVE.has(m[1] ?? "")) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value) || value < 0) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k as string] = unescape(v as string);
    out.set(series(m[1] as string, labels), value);
  }
  return out;
}

const number = (v: number): string => (Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6));

/** The textfile after `run`, given the previous file's text. Pure. */
export function renderTextfile(previous: string, run: RunSummary): string {
  const counters = readCounters(previous);
  const add = (name: string, labels: Labels, by: number) => {
    const key = series(name, labels);
    counters.set(key, (counters.get(key) ?? 0) + by);
  };
  add(RUNS, { command: run.command, outcome: run.outcome }, 1);
  for (const s of run.steps) {
    const labels = { step: s.step, direction: s.direction };
    add(STEP_SUM, labels, s.seconds);
    add(STEP_COUNT, labels, 1);
    if (!s.ok) add(STEP_FAILURES, labels, 1);
  }
  const of = (name: string) =>
    [...counters]
      .filter(([key]) => key === name || key.startsWith(`${name}{`))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([key, v]) => `${key} ${number(v)}`);
  const lines = [
    "# quick-migrate's figures, written by the controller after each run (node_exporter textfile collector)",
    `# HELP ${RUNS} Runs of quick-migrate migrate, resume and rollback, by command and outcome.`,
    `# TYPE ${RUNS} counter`,
    ...of(RUNS),
    "# HELP quick_migrate_step_duration_seconds How long each step took on all its hosts, by step and direction (forward or undo), over all runs.",
    "# TYPE quick_migrate_step_duration_seconds summary",
    ...of(STEP_SUM),
    ...of(STEP_COUNT),
    `# HELP ${STEP_FAILURES} Steps that did not get every host's acknowledgement, by step and direction, over all runs.`,
    `# TYPE ${STEP_FAILURES} counter`,
    ...of(STEP_FAILURES),
    "# HELP quick_migrate_last_run_info The last run: its command, outcome, migration and site (always 1).",
    "# TYPE quick_migrate_last_run_info gauge",
    `${series("quick_migrate_last_run_info", { command: run.command, outcome: run.outcome, migration_id: run.migrationId, site: run.site, new_site: run.newSite })} 1`,
    "# HELP quick_migrate_last_run_timestamp_seconds When the last run ended (unix seconds).",
    "# TYPE quick_migrate_last_run_timestamp_seconds gauge",
    `quick_migrate_last_run_timestamp_seconds ${number(run.endedAt)}`,
    "# HELP quick_migrate_last_run_duration_seconds How long the last run took.",
    "# TYPE quick_migrate_last_run_duration_seconds gauge",
    `quick_migrate_last_run_duration_seconds ${number(run.seconds)}`,
    "# HELP quick_migrate_last_run_step_duration_seconds How long each step of the last run took, by step and direction.",
    "# TYPE quick_migrate_last_run_step_duration_seconds gauge",
    // a step run twice in one run (an undo after its forward) has one series per direction; a repeat adds up
    ...lastRunSteps(run.steps),
  ];
  return `${lines.join("\n")}\n`;
}

function lastRunSteps(steps: readonly StepFigure[]): string[] {
  const sums = new Map<string, number>();
  for (const s of steps) {
    const key = series("quick_migrate_last_run_step_duration_seconds", { step: s.step, direction: s.direction });
    sums.set(key, (sums.get(key) ?? 0) + s.seconds);
  }
  return [...sums].map(([key, v]) => `${key} ${number(v)}`);
}

/** A lock older than this was left by a controller that died while writing (a write takes milliseconds). */
const STALE_LOCK_MS = 10_000;
const LOCK_WAIT_MS = 5_000;

/**
 * Reads the previous file, adds `run` and writes the result atomically (mode 0644: node_exporter runs
 * as another user). Two controllers ending at once take turns through a lock file beside it, so that
 * neither's counts are lost.
 */
export async function writeRunFigures(textfile: string, run: RunSummary): Promise<void> {
  const lock = join(dirname(textfile), `.${basename(textfile)}.lock`);
  await withLock(lock, async () => {
    let previous = "";
    try {
      previous = await readFile(textfile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await writeFileAtomic(textfile, renderTextfile(previous, run), 0o644);
  });
}

async function withLock(lock: string, fn: () => Promise<void>): Promise<void> {
  const until = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await (await open(lock, "wx", 0o644)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const held = await stat(lock).catch(() => undefined);
    if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() > until) throw new Error(`${lock} is held by another controller writing its figures (for more than ${LOCK_WAIT_MS / 1000} s)`);
    await new Promise((r) => setTimeout(r, 25));
  }
  try {
    await fn();
  } finally {
    await rm(lock, { force: true });
  }
}
