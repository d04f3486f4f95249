// `npm run bench [-- --runs N]`: shows that a migration takes the same time whether files/ holds
// 50 or 50,000 files, because data directories are renamed, never copied.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { abortOnSignals, checkRsync, startCluster, runController, type Cluster } from './lib/cluster.js';
import { makePlatform, makeSite } from './lib/fixtures.js';

const FROM = 'bench-a';
const TO = 'bench-b';
const FLAT_RATIO = 1.5;

interface Sample {
  size: number;
  /** wall time of the whole controller command */
  ms: number;
  /** each step's duration as the controller reported it */
  steps: Map<string, number>;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      sizes: { type: 'string', default: '50,50000' },
      'master-files': { type: 'string', default: '50' },
      'push-mb': { type: 'string', default: '500' },
      keep: { type: 'boolean', default: false },
    },
  });
  const runs = Number(values.runs);
  const sizes = values.sizes.split(',').map(Number);
  const masterFiles = Number(values['master-files']);
  if (!Number.isInteger(runs) || runs < 1 || sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.length < 2 || !Number.isInteger(masterFiles)) {
    console.error('usage: bench [--runs N] [--sizes 50,50000] [--master-files N] [--keep]');
    return 2;
  }
  try {
    checkRsync();
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }

  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quick-migrate-bench-'));
  let cluster: Cluster | undefined;
  // A signal aborts the run; the finally below then stops the agents and removes the temp dir.
  const abort = abortOnSignals(baseDir);

  try {
    cluster = await startCluster({ baseDir, fronts: [{ name: 'web1' }, { name: 'web2' }] });
    for (const { root } of cluster.roots()) {
      makePlatform(root, FROM);
      makePlatform(root, TO);
    }
    console.log(`quick-migrate bench: 2 fronts, no hooks, ${runs} run(s) per size, hostmaster stale copy ${masterFiles} files, in ${baseDir}`);

    const c = cluster;
    // Every site is built first and written back (sync) before any timing, so the disk's work of
    // creating (and later deleting) 100,000 files never overlaps a measured migration.
    const build = (size: number, uri: string): void => {
      for (const f of c.fronts) makeSite(f.root, FROM, uri, { files: size, privateFiles: Math.min(size, 100), seed: f.name });
      makeSite(c.masterRoot, FROM, uri, { files: masterFiles, privateFiles: 0, seed: 'stale' });
      c.handOver();
    };
    const order = [{ size: sizes[0] ?? 50, warmUp: true }, ...Array.from({ length: runs }, () => sizes.map((size) => ({ size, warmUp: false }))).flat()];
    const jobs = order.map((o, i) => ({ ...o, uri: `s${o.size}-${i}.bench.test` }));
    const t = performance.now();
    for (const job of jobs) {
      abort.signal.throwIfAborted();
      build(job.size, job.uri);
    }
    await execa('sync');
    console.log(`built ${jobs.length} sites (${sizes.join(', ')} files in files/, x ${c.fronts.length} fronts) in ${Math.round(performance.now() - t)} ms`);

    const samples: Sample[] = [];
    for (const job of jobs) {
      abort.signal.throwIfAborted();
      const run = await runController(c.controllerConfig, ['migrate', job.uri, '--from', FROM, '--to', TO, '--json'], { signal: abort.signal });
      const result = run.events.at(-1);
      if (run.exitCode !== 0 || result?.event !== 'result' || result.outcome !== 'migrated') {
        console.error(`migrate ${job.uri} FAILED: exit ${run.exitCode}${run.timedOut ? ' (timed out)' : ''}; last event: ${JSON.stringify(result)}\n${run.stderr.slice(-3000)}`);
        throw new MigrationFailed();
      }
      const steps = new Map<string, number>();
      for (const e of run.events) if (e.event === 'step-end' && typeof e.durationMs === 'number') steps.set(String(e.step), e.durationMs);
      console.log(`  ${job.uri}${job.warmUp ? ' (warm-up, not counted)' : ''}: ${Math.round(run.durationMs)} ms`);
      if (!job.warmUp) samples.push({ size: job.size, ms: run.durationMs, steps });
    }

    console.log('\nmedian per step (ms):');
    const stepNames = [...(samples[0]?.steps.keys() ?? [])];
    console.log(`  ${'step'.padEnd(22)}${sizes.map((n) => label(n).padStart(8)).join('')}`);
    for (const name of stepNames) {
      const row = sizes.map((n) => fmt(median(samples.filter((x) => x.size === n).map((x) => x.steps.get(name) ?? 0))).padStart(8));
      console.log(`  ${name.padEnd(22)}${row.join('')}`);
    }

    console.log('');
    console.log(`${'files/'.padStart(8)}  ${'runs'.padStart(4)}  ${'median ms'.padStart(9)}  ${'min ms'.padStart(7)}  ${'max ms'.padStart(7)}`);
    const medians = new Map<number, number>();
    for (const size of sizes) {
      const ms = samples.filter((s) => s.size === size).map((s) => s.ms);
      const med = median(ms);
      medians.set(size, med);
      console.log(`${String(size).padStart(8)}  ${String(ms.length).padStart(4)}  ${fmt(med).padStart(9)}  ${fmt(Math.min(...ms)).padStart(7)}  ${fmt(Math.max(...ms)).padStart(7)}`);
    }
    const small = Math.min(...sizes);
    const large = Math.max(...sizes);
    const ratio = (medians.get(large) ?? NaN) / (medians.get(small) ?? NaN);
    const flat = ratio < FLAT_RATIO;
    console.log(`\n${flat ? 'flat' : 'NOT flat'}: ${label(large)}/${label(small)} ratio ${ratio.toFixed(2)} (${flat ? '<' : '>='}${FLAT_RATIO})`);

    const pushMb = Number(values['push-mb']);
    if (pushMb > 0) await largePush(c, pushMb, abort.signal);
    return 0;
  } catch (err) {
    if (abort.signal.aborted) return 130;
    if (!(err instanceof MigrationFailed)) console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await cluster?.stop().catch(() => undefined);
    if (values.keep) console.log(`kept ${baseDir}`);
    else fs.rmSync(baseDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

class MigrationFailed extends Error {}

/**
 * A site whose code holds one large file: it crosses the rsync tunnel once to the hostmaster and once
 * to each front. Peak memory of the controller and the agents shows that nothing buffers it whole.
 */
async function largePush(c: Cluster, mb: number, signal: AbortSignal): Promise<void> {
  const uri = `push${mb}.bench.test`;
  for (const f of c.fronts) makeSite(f.root, FROM, uri, { files: 10, privateFiles: 0, seed: f.name });
  makeSite(c.masterRoot, FROM, uri, { files: 0, privateFiles: 0, seed: 'stale' });
  c.handOver();
  const web1 = c.fronts[0];
  if (!web1) return;
  const big = path.join(web1.root, FROM, 'sites', uri, 'libraries', 'big.bin');
  const fd = fs.openSync(big, 'w', 0o644);
  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < mb; i++) {
    // incompressible enough and different per MB, without the cost of random bytes
    chunk.fill(i % 251);
    chunk.writeUInt32LE(i, 0);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  await execa('sync');
  const logBefore = new Map(c.fronts.map((f) => [f.name, fs.statSync(f.logFile).size]));
  const run = await runController(c.controllerConfig, ['migrate', uri, '--from', FROM, '--to', TO, '--json'], { signal, env: { QM_LOG_LEVEL: 'info' } });
  if (run.exitCode !== 0) {
    console.error(`large push FAILED: exit ${run.exitCode}\n${run.stderr.slice(-3000)}`);
    throw new MigrationFailed();
  }
  const rss = (text: string, msg: string): number =>
    Math.max(0, ...text.split('\n').filter((l) => l.includes(`"msg":"${msg}"`)).map((l) => (JSON.parse(l) as { maxRssKb: number }).maxRssKb));
  const steps = new Map(run.events.filter((e) => e.event === 'step-end').map((e) => [String(e.step), Number(e.durationMs)]));
  console.log(`\nlarge push: ${mb} MB file in the site code, fetched once and pushed to ${c.fronts.length} fronts in ${Math.round(run.durationMs)} ms`);
  console.log(`  fetch-site ${steps.get('fetch-site')} ms, push-site ${steps.get('push-site')} ms`);
  console.log(`  peak RSS: controller ${Math.round(rss(run.stderr, 'controller finished') / 1024)} MB`);
  for (const f of c.fronts) {
    const log = fs.readFileSync(f.logFile).subarray(logBefore.get(f.name) ?? 0).toString('utf8');
    console.log(`  peak RSS: agent ${f.name} ${Math.round(rss(log, 'rsync server end') / 1024)} MB`);
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

function fmt(ms: number): string {
  return String(Math.round(ms));
}

function label(n: number): string {
  return n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
}

process.exitCode = await main();
