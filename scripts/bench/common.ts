// What every section of the benchmark shares: the figures it reports (a median, its samples, the
// issue's target beside it), the context it runs in, and small timing helpers.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { makeClusterPki, repoRoot, runController, startCluster, type Cluster, type ClusterTlsOptions, type ControllerRun } from '../lib/cluster.js';
import { makePlatform, makeSite } from '../lib/fixtures.js';
import type { Ssh } from './ssh.js';

/** What an operator runs, and systemd: the bin/ wrappers (the bundled code; the agent with its V8 flag), not dist/ */
export const CONTROLLER_BIN = path.join(repoRoot(), 'bin', 'quick-migrate');
export const AGENT_BIN = path.join(repoRoot(), 'bin', 'quick-migrate-agent');

export const FROM = 'bench-a';
export const TO = 'bench-b';

/** A target of the issue: the figure must be below (`<`), at most (`<=`) or at least (`>=`) `value`. */
export interface Target {
  readonly op: '<' | '<=' | '>=';
  readonly value: number;
}

export interface Figure {
  /** stable key in the JSON, e.g. `data.qm.50` */
  readonly key: string;
  readonly section: string;
  /** what the table says */
  readonly label: string;
  /** the median of `samples` (or the figure itself, for a ratio of two medians) */
  readonly value: number;
  readonly unit: 'ms' | 's' | 'MB' | 'x';
  readonly samples: readonly number[];
  readonly target?: Target;
  /** undefined without a target */
  readonly pass?: boolean;
  readonly note?: string;
}

export interface SectionResult {
  readonly figures: Figure[];
  /** what went wrong while the figures that are there were measured (the section then counts as failed) */
  readonly failures?: string[];
  /** anything else worth keeping in the JSON (per-step medians, the classic path's transport…) */
  readonly details?: Record<string, unknown>;
}

export interface BenchContext {
  /** timed runs per figure (warm-ups come on top) */
  readonly runs: number;
  /** the smoke run: 1 run, small sizes, few fronts */
  readonly quick: boolean;
  /** a fresh folder for this section; removed after it */
  readonly dir: string;
  readonly signal: AbortSignal;
  /**
   * The PKI every cluster of the bench runs with (mutual TLS, as the agents and the controller are
   * deployed: deploy/tls/make-certs.sh, certificates for web1…web32); undefined with --plaintext.
   */
  readonly tls: ClusterTlsOptions | undefined;
  /** the bench's own sshd, started on first use; null when none can be started (the reason is in `sshUnavailable`) */
  ssh(): Promise<Ssh | null>;
  sshUnavailable(): string | undefined;
  log(line: string): void;
}

export type Section = (ctx: BenchContext) => Promise<SectionResult>;

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function meets(value: number, t: Target): boolean {
  if (!Number.isFinite(value)) return false;
  return t.op === '<' ? value < t.value : t.op === '<=' ? value <= t.value : value >= t.value;
}

/** A figure that is the median of its samples. */
export function figure(
  section: string,
  key: string,
  label: string,
  unit: Figure['unit'],
  samples: readonly number[],
  opts: { target?: Target; note?: string; value?: number } = {},
): Figure {
  const value = opts.value ?? median(samples);
  return {
    key: `${section}.${key}`,
    section,
    label,
    value: round(value),
    unit,
    samples: samples.map(round),
    ...(opts.target !== undefined ? { target: opts.target, pass: meets(value, opts.target) } : {}),
    ...(opts.note !== undefined ? { note: opts.note } : {}),
  };
}

/** A ratio of two medians measured in the same run (e.g. classic / quick-migrate). */
export function ratio(section: string, key: string, label: string, numerator: readonly number[], denominator: readonly number[], opts: { target?: Target; note?: string } = {}): Figure {
  return figure(section, key, label, 'x', [], { ...opts, value: median(numerator) / median(denominator) });
}

export function round(n: number): number {
  if (!Number.isFinite(n)) return n;
  return Math.abs(n) >= 100 ? Math.round(n) : Math.round(n * 100) / 100;
}

/** The wall time of `fn` in ms. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Runs a command; throws with its stderr on a non-zero exit. */
export async function sh(file: string, args: readonly string[], opts: { signal?: AbortSignal; cwd?: string } = {}): Promise<void> {
  const r = await execa(file, args, { reject: false, stdin: 'ignore', ...(opts.signal ? { cancelSignal: opts.signal } : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  if (r.exitCode !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${String(r.exitCode)}\n${String(r.stderr).slice(-2000)}`);
}

/** Flushes the page cache's dirty pages, so that building a site never overlaps a timed run. */
export async function syncDisk(): Promise<void> {
  await execa('sync');
}

/**
 * Sites `uris` of the source platform on every front (`files` and `privateFiles` in their data dirs) and
 * their 50-file stale copies on the hostmaster, handed to the agents' user and written back to disk.
 */
export async function buildSites(c: Cluster, uris: readonly string[], data: { files: number; privateFiles: number }): Promise<void> {
  for (const uri of uris) {
    for (const f of c.fronts) makeSite(f.root, FROM, uri, { ...data, seed: f.name });
    makeSite(c.masterRoot, FROM, uri, { files: 50, privateFiles: 0, seed: 'stale' });
  }
  c.handOver();
  await syncDisk();
}

export class MigrationFailed extends Error {}

/** `quick-migrate migrate <uri> --from --to --json`; throws MigrationFailed unless it migrated. */
export async function migrate(c: Cluster, uri: string, from: string, to: string, signal: AbortSignal, env?: Record<string, string>): Promise<ControllerRun> {
  const run = await runController(c.controllerConfig, ['migrate', uri, '--from', from, '--to', to, '--json'], { controllerBin: CONTROLLER_BIN, signal, timeoutMs: 600_000, ...(env ? { env } : {}) });
  const result = run.events.at(-1);
  if (run.exitCode !== 0 || result?.event !== 'result' || result.outcome !== 'migrated') {
    throw new MigrationFailed(`migrate ${uri} ${from} -> ${to}: exit ${run.exitCode}${run.timedOut ? ' (timed out)' : ''}; last event: ${JSON.stringify(result)}\n${run.stderr.slice(-3000)}`);
  }
  return run;
}

/** Each step's durationMs from the `step-end` events of a run. */
export function stepDurations(run: ControllerRun): Map<string, number> {
  const steps = new Map<string, number>();
  for (const e of run.events) if (e.event === 'step-end' && typeof e.durationMs === 'number') steps.set(String(e.step), e.durationMs);
  return steps;
}

/** The controller's peak RSS (MB) from its "controller finished" log line (needs QM_LOG_LEVEL=info). */
export function controllerMaxRssMb(run: ControllerRun): number {
  return maxRssKb(run.stderr, 'controller finished') / 1024;
}

export function maxRssKb(log: string, msg: string): number {
  let max = 0;
  for (const line of log.split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    try {
      const kb = (JSON.parse(line) as { maxRssKb?: unknown }).maxRssKb;
      if (typeof kb === 'number' && kb > max) max = kb;
    } catch {
      // not a log line
    }
  }
  return max;
}

/** Makes both bench platforms on every root of the cluster. */
export function makePlatforms(c: Cluster): void {
  for (const { root } of c.roots()) {
    makePlatform(root, FROM);
    makePlatform(root, TO);
  }
}

/** The platform a site bouncing between FROM and TO is on before its run `i` (0-based), and where it goes. */
export function bounce(i: number): { from: string; to: string } {
  return i % 2 === 0 ? { from: FROM, to: TO } : { from: TO, to: FROM };
}

/** Removes a tree; rm -rf is much faster than fs.rmSync on 50,000 files. */
export async function removeTree(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  await sh('rm', ['-rf', '--one-file-system', path.resolve(dir)]);
}

/** "50", "5k", "50k" */
export function label(n: number): string {
  return n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
}

/** The most fronts a bench cluster has (fan-out and footprint: 32). */
export const BENCH_FRONTS = 32;

/**
 * The bench's PKI in `dir` (makeClusterPki): the controller's certificate (CN hostmaster) and one for each
 * of web1…web32.
 */
export function makeBenchPki(dir: string): ClusterTlsOptions {
  try {
    return makeClusterPki(dir, 'hostmaster', Array.from({ length: BENCH_FRONTS }, (_, i) => `web${i + 1}`));
  } catch (err) {
    throw new Error(`bench: ${(err as Error).message} (--plaintext runs without TLS)`);
  }
}

/** A cluster of `fronts` web fronts (web1…webN) in `<ctx.dir>/<sub>`, with both bench platforms on every root. */
export async function benchCluster(ctx: BenchContext, sub: string, fronts: number): Promise<Cluster> {
  const baseDir = path.join(ctx.dir, sub);
  fs.mkdirSync(baseDir, { recursive: true });
  // 32 agents starting at once on 2 cores take a while
  if (fronts > BENCH_FRONTS) throw new Error(`benchCluster: at most ${BENCH_FRONTS} fronts have certificates`);
  const c = await startCluster({
    baseDir,
    agentBin: AGENT_BIN,
    fronts: Array.from({ length: fronts }, (_, i) => ({ name: `web${i + 1}` })),
    listenTimeoutMs: 120_000,
    ...(ctx.tls ? { tls: ctx.tls } : {}),
  });
  makePlatforms(c);
  return c;
}
