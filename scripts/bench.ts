// `npm run bench [-- --runs N] [--only data,fanout,…] [--quick] [--plaintext]`: the benchmark of
// issue 12. Each section runs on its own local cluster (agents on loopback with mutual TLS, as they are
// deployed; no hooks) and reports medians of several runs, comparisons measured in the same run, and
// the issue's target beside each figure. The table is printed and the same figures are written as
// JSON to bench/results/<date>-<commit>.json.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { abortOnSignals, checkRsync, repoRoot } from './lib/cluster.js';
import { type BenchContext, type Figure, type Section, type SectionResult, MigrationFailed, makeBenchPki } from './bench/common.js';
import { channel } from './bench/channel.js';
import { dataSize } from './bench/data.js';
import { fanOut } from './bench/fanout.js';
import { fixedCost } from './bench/fixed.js';
import { footprint } from './bench/footprint.js';
import { perOperation } from './bench/op.js';
import { manySites } from './bench/sites.js';
import { type Ssh, startSsh } from './bench/ssh.js';
import { printTable } from './bench/table.js';

/** In the order they run (cheap first). */
const SECTIONS: ReadonlyArray<readonly [string, Section, string]> = [
  ['fixed', fixedCost, '`status` and one migration on 2 fronts'],
  ['op', perOperation, 'one agent operation vs ssh mv'],
  ['fanout', fanOut, 'one front step and one migration on 1, 4, 16, 32 fronts'],
  ['footprint', footprint, 'agent and controller memory, agent start to SERVING'],
  ['channel', channel, 'a 200 MB site folder through the agent channel vs rsync -e ssh'],
  ['data', dataSize, 'files/ of 50, 5,000, 50,000 files and 3,000 x 100 KB: quick-migrate vs the classic path'],
  ['sites', manySites, '100 sites x 4 fronts, migrate --all at concurrency 1, 4, 8'],
];

const USAGE = `usage: npm run bench -- [--runs N] [--only ${SECTIONS.map(([n]) => n).join(',')}] [--quick] [--plaintext] [--results-dir DIR] [--keep]`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        runs: { type: 'string' },
        only: { type: 'string' },
        quick: { type: 'boolean', default: false },
        plaintext: { type: 'boolean', default: false },
        'results-dir': { type: 'string' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(`${USAGE}\n\nsections:\n${SECTIONS.map(([n, , d]) => `  ${n.padEnd(10)} ${d}`).join('\n')}`);
    return 0;
  }
  const quick = values.quick;
  const runs = Number(values.runs ?? (quick ? 1 : 3));
  const only = values.only === undefined ? SECTIONS.map(([n]) => n) : values.only.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = only.filter((n) => !SECTIONS.some(([name]) => name === n));
  if (!Number.isInteger(runs) || runs < 1 || unknown.length > 0 || only.length === 0) {
    console.error(`${unknown.length > 0 ? `unknown section(s): ${unknown.join(', ')}\n` : ''}${USAGE}`);
    return 2;
  }
  try {
    checkRsync();
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }

  const repo = repoRoot();
  const machine = machineInfo(repo);
  const resultsDir = path.resolve(values['results-dir'] ?? path.join(repo, 'bench', 'results'));
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quick-migrate-bench-'));
  fs.chmodSync(baseDir, 0o755);
  const abort = abortOnSignals(baseDir);
  // every cluster runs with mutual TLS, as deployed; --plaintext (insecure: true) shows what TLS costs
  let tls: BenchContext['tls'];
  try {
    tls = values.plaintext ? undefined : makeBenchPki(path.join(baseDir, 'pki'));
  } catch (err) {
    console.error((err as Error).message);
    fs.rmSync(baseDir, { recursive: true, force: true });
    return 1;
  }
  const security = tls ? 'mutual TLS' : 'plaintext (insecure: true)';
  console.log(`quick-migrate bench${quick ? ' (quick)' : ''}: ${only.join(', ')}; ${runs} run(s) per figure; ${machine.cores} cores, ${machine.memoryMB} MB, node ${machine.node}, commit ${machine.commit.slice(0, 12)}${machine.dirty ? ' (dirty)' : ''}; ${security}; in ${baseDir}`);

  let ssh: Ssh | null | undefined;
  let sshWhyNot: string | undefined;
  const ctxFor = (name: string): BenchContext => {
    const dir = path.join(baseDir, name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    return {
      runs,
      quick,
      dir,
      tls,
      signal: abort.signal,
      ssh: async () => {
        if (ssh === undefined) {
          try {
            ssh = await startSsh(path.join(baseDir, 'ssh'));
            console.log(`  sshd on 127.0.0.1:${ssh.port} (the bench's own, throwaway keys)`);
          } catch (err) {
            ssh = null;
            sshWhyNot = (err as Error).message;
            console.log(`  no sshd: ${sshWhyNot}`);
          }
        }
        return ssh;
      },
      sshUnavailable: () => sshWhyNot,
      log: (line) => console.log(`  ${name}: ${line}`),
    };
  };

  const results: Record<string, SectionResult & { seconds?: number; error?: string }> = {};
  let failed = false;
  try {
    for (const [name, run] of SECTIONS) {
      if (!only.includes(name)) continue;
      if (abort.signal.aborted) break;
      console.log(`\n== ${name}`);
      const t = performance.now();
      const ctx = ctxFor(name);
      try {
        const r = await run(ctx);
        results[name] = { ...r, seconds: Math.round((performance.now() - t) / 100) / 10 };
        printTable(r.figures);
        if (r.failures !== undefined) {
          failed = true;
          for (const f of r.failures) console.error(`${name} FAILED: ${f}`);
        }
      } catch (err) {
        if (abort.signal.aborted) break;
        failed = true;
        const message = err instanceof MigrationFailed ? err.message : ((err as Error).stack ?? String(err));
        console.error(`${name} FAILED: ${message}`);
        results[name] = { figures: [], error: message.split('\n').slice(0, 20).join('\n'), seconds: Math.round((performance.now() - t) / 100) / 10 };
      } finally {
        if (!values.keep) fs.rmSync(ctx.dir, { recursive: true, force: true, maxRetries: 3 });
      }
    }
  } finally {
    await ssh?.stop().catch(() => undefined);
    if (values.keep) console.log(`kept ${baseDir}`);
    else fs.rmSync(baseDir, { recursive: true, force: true, maxRetries: 3 });
  }
  if (abort.signal.aborted) return 130;

  const figures: Figure[] = Object.values(results).flatMap((r) => r.figures);
  console.log(`\n== quick-migrate bench: every figure the median of ${runs} run(s) unless said; ${machine.cores} cores, ${machine.memoryMB} MB, node ${machine.node}, commit ${machine.commit.slice(0, 12)}; ${security}`);
  printTable(figures);
  for (const [name, r] of Object.entries(results)) {
    if (r.error !== undefined) console.log(`${name}: FAILED (${r.error.split('\n')[0]})`);
    for (const f of r.failures ?? []) console.log(`${name}: FAILED (${f})`);
  }
  const withTarget = figures.filter((f) => f.target !== undefined);
  console.log(`targets met: ${withTarget.filter((f) => f.pass).length} of ${withTarget.length}`);

  const date = new Date();
  const report = {
    date: date.toISOString(),
    commit: machine.commit,
    dirty: machine.dirty,
    machine: { cores: machine.cores, cpu: machine.cpu, memoryMB: machine.memoryMB, node: machine.node, kernel: machine.kernel, platform: machine.platform },
    options: { runs, quick, only, tls: tls !== undefined },
    ssh: ssh === undefined ? { used: false } : ssh === null ? { used: false, reason: sshWhyNot } : { used: true, server: 'the bench\'s own sshd on 127.0.0.1' },
    targets: { met: withTarget.filter((f) => f.pass).length, of: withTarget.length },
    figures,
    sections: results,
  };
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${date.toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z')}-${machine.commit.slice(0, 12)}${quick ? '-quick' : ''}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`results: ${file}`);
  return failed ? 1 : 0;
}

interface Machine {
  cores: number;
  cpu: string;
  memoryMB: number;
  node: string;
  kernel: string;
  platform: string;
  commit: string;
  dirty: boolean;
}

function machineInfo(repo: string): Machine {
  const git = (args: string[]): string => {
    try {
      return execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return '';
    }
  };
  return {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryMB: Math.round(os.totalmem() / 1024 / 1024),
    node: process.version,
    kernel: os.release(),
    platform: `${os.platform()}-${os.arch()}`,
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
  };
}

process.exitCode = await main();
