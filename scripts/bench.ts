// `npm run bench [-- --runs N]`: shows that a migration takes the same time whether files/ holds
// 50 or 50,000 files, because data directories are renamed, never copied.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { checkRsync, startCluster, runController, type Cluster } from './lib/cluster.js';
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
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (abort.signal.aborted) process.exit(130); // second signal: give up on cleaning
    console.error(`\n${signal}: stopping agents and removing ${baseDir}`);
    abort.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

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
