// `migrate --all`, the part without I/O: which folders of a platform's sites/ are sites, the outcome and
// exit code of the whole batch from each site's, the live summary line and the final table. The run
// itself (the sites folder, the pool, signals, output) is batchRun.ts's.
import { OUTCOMES, type Outcome, type RunEvent } from "./events.js";
import { checkSiteName } from "../shared/names.js";

export const DEFAULT_CONCURRENCY = 4;

/**
 * A site the batch did not start because a signal stopped it first: nothing was done to it, it is on
 * its old platform and out of maintenance, as after a rollback; the same exit code, 1.
 */
export const NOT_STARTED = "not-started";
export type SiteOutcome = Outcome | typeof NOT_STARTED;

export function siteExitCode(outcome: SiteOutcome): number {
  return outcome === NOT_STARTED ? OUTCOMES["rolled-back"] : OUTCOMES[outcome];
}

/** A usage problem of `migrate` with or without --all, as one line naming the option; undefined when none. */
export function migrateUsageProblem(uri: string | undefined, o: { all?: boolean; from?: string; newUri?: string; concurrency?: number }): string | undefined {
  if (!o.all) {
    if (uri === undefined) return "missing required argument 'uri' (or --all for every site of --from)";
    if (o.concurrency !== undefined) return "--concurrency applies to --all only";
    return undefined;
  }
  if (uri !== undefined) return `--all and a site (${uri}) are mutually exclusive: give one or the other`;
  if (o.from === undefined) return "--all needs --from <platform>: the platform whose sites are migrated";
  if (o.newUri !== undefined) return "--new-uri cannot be used with --all: every site keeps its name";
  return undefined;
}

/** `--concurrency <n>`: a whole number from 1. */
export function parseConcurrency(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new RangeError("must be a whole number from 1");
  return n;
}

export interface SitesEntry {
  readonly name: string;
  /** a symlink is an alias Aegir made for another site, not a site */
  readonly kind: "dir" | "symlink" | "file" | "other";
}

/** Folders of sites/ that are never a site. */
const NOT_SITES: ReadonlySet<string> = new Set(["all", "default"]);

/**
 * The sites of a platform from the entries of its sites/ folder, sorted: every real folder but `all`
 * and `default` whose name is a site name. Folders skipped for another reason than being `all` or
 * `default` are listed with why (an operator should see a site that is left out); files are not. Pure.
 */
export function selectSites(entries: readonly SitesEntry[]): { sites: string[]; skipped: Array<{ name: string; why: string }> } {
  const sites: string[] = [];
  const skipped: Array<{ name: string; why: string }> = [];
  for (const e of [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (NOT_SITES.has(e.name) || e.kind === "file") continue;
    if (e.kind === "symlink") {
      skipped.push({ name: e.name, why: "a symlink (an alias of another site), not a site folder" });
      continue;
    }
    if (e.kind !== "dir") continue;
    try {
      checkSiteName(e.name, "site folder");
      sites.push(e.name);
    } catch (err) {
      skipped.push({ name: e.name, why: (err as Error).message });
    }
  }
  return { sites, skipped };
}

export interface SiteResult {
  readonly site: string;
  readonly outcome: SiteOutcome;
  /** null when the site's migration never got an id (refused before its plan, or not started) */
  readonly migrationId: string | null;
  readonly exitCode: number;
  readonly durationMs: number;
  readonly message: string;
}

/** 0 only when every site migrated (or, dry-running, was planned); else the highest of the sites' codes. Pure. */
export function batchExitCode(results: readonly SiteResult[]): number {
  return results.reduce((code, r) => Math.max(code, r.exitCode), 0);
}

export type BatchOutcome = "migrated" | "dry-run" | "failed" | "interrupted" | "refused";

export function batchOutcome(results: readonly SiteResult[], o: { dryRun: boolean; interrupted: boolean }): BatchOutcome {
  if (batchExitCode(results) === 0) return o.dryRun ? "dry-run" : "migrated";
  return o.interrupted ? "interrupted" : "failed";
}

/** `6 migrated`, `4 migrated, 1 rolled-back, 1 not-started`: each outcome's count, in the order of first appearance. */
export function countOutcomes(results: readonly SiteResult[]): string {
  const counts = new Map<SiteOutcome, number>();
  for (const r of results) counts.set(r.outcome, (counts.get(r.outcome) ?? 0) + 1);
  return counts.size === 0 ? "no sites" : [...counts].map(([o, n]) => `${n} ${o}`).join(", ");
}

/** The batch's closing line, for humans and in its JSON summary. */
export function batchMessage(results: readonly SiteResult[], o: { from: string; to: string; interrupted?: string }): string {
  const what = `${results.length} site${results.length === 1 ? "" : "s"} of ${o.from} → ${o.to}: ${countOutcomes(results)}`;
  return o.interrupted ? `${what} (interrupted by ${o.interrupted}: no new site was started)` : what;
}

/** The final table: site, outcome, migration id, time; one line each, in the order given. Pure. */
export function formatTable(results: readonly SiteResult[]): string[] {
  const rows = [["site", "outcome", "migration", "time"], ...results.map((r) => [r.site, r.outcome, r.migrationId ?? "-", `${(r.durationMs / 1000).toFixed(2)} s`])];
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => (row[i] ?? "").length)));
  return rows.map((row) => row.map((cell, i) => (i < 3 ? cell.padEnd(widths[i] ?? 0) : cell)).join("  "));
}

/** What the live summary knows: each running site's step, the finished sites, the slowest step so far. */
export class BatchProgress {
  private readonly running = new Map<string, { step: string | undefined; undo: boolean }>();
  private readonly finished: SiteResult[] = [];
  private slowest: { site: string; step: string; undo: boolean; durationMs: number } | undefined;

  constructor(
    readonly total: number,
    private readonly dryRun: boolean,
  ) {}

  started(site: string): void {
    this.running.set(site, { step: undefined, undo: false });
  }

  /** An event of a site's migration. */
  observe(site: string, e: RunEvent): void {
    const r = this.running.get(site);
    if (r && e.event === "step-start") {
      r.step = e.step;
      r.undo = e.undo === true;
    }
    if (e.event === "step-end" && !e.skipped && (this.slowest === undefined || e.durationMs > this.slowest.durationMs)) {
      this.slowest = { site, step: e.step, undo: e.undo === true, durationMs: e.durationMs };
    }
  }

  ended(result: SiteResult): void {
    this.running.delete(result.site);
    this.finished.push(result);
  }

  get results(): readonly SiteResult[] {
    return this.finished;
  }

  /**
   * `sites 3/6: 2 migrated, 1 failed, 2 running, 1 waiting; slowest step: push-site 2.1 s (c.example.com);
   * running: a.example.com push-site, b.example.com lock` (the list last: a terminal cuts it first). Pure.
   */
  line(): string {
    const ok = this.finished.filter((r) => r.exitCode === 0).length;
    const failed = this.finished.length - ok;
    const waiting = this.total - this.finished.length - this.running.size;
    const counts = `${ok} ${this.dryRun ? "planned" : "migrated"}, ${failed} failed, ${this.running.size} running, ${waiting} waiting`;
    const s = this.slowest;
    const slowest = s ? `; slowest step: ${s.undo ? "undo " : ""}${s.step} ${(s.durationMs / 1000).toFixed(1)} s (${s.site})` : "";
    const running = [...this.running].map(([site, r]) => `${site}${r.step ? ` ${r.undo ? "undo " : ""}${r.step}` : ""}`);
    return `sites ${this.finished.length}/${this.total}: ${counts}${slowest}${running.length > 0 ? `; running: ${running.join(", ")}` : ""}`;
  }
}
