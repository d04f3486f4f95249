// Data size: one site whose files/ holds 50, 5,000, 50,000 files (and 3,000 files of 100 KB), moved
// by quick-migrate's whole `migrate` command and by the classic data path Aegir's migrate takes for
// the same site and hosts:
//   1. rsync the site, data included, from the first front to the hostmaster's copy
//   2. tar it into a backup (tar czpf, as provision's backup)
//   3. unpack the backup under the new platform on the hostmaster
//   4. rsync the new site folder out to every front, one after the other
//   5. remove the old site folders (fronts and hostmaster)
// Over SSH (the bench's own sshd on loopback) when one can be started, else local rsync and rm.
// Each size has two identical sites, one per path, each moved back and forth between the platforms;
// before every run the hostmaster's copy is reset to a small stale one, the same for both paths.
import fs from 'node:fs';
import path from 'node:path';
import { type Cluster } from '../lib/cluster.js';
import { makeSite, sitePath } from '../lib/fixtures.js';
import { type BenchContext, type Figure, type SectionResult, FROM, benchCluster, bounce, figure, label, median, migrate, ratio, removeTree, round, sh, syncDisk, timed } from './common.js';
import type { Ssh } from './ssh.js';

const S = 'data';
const SHORT: Record<string, string> = {
  'rsync front → hostmaster': 'in',
  'tar czpf backup': 'tar',
  'unpack under new platform': 'untar',
  'rsync out to every front': 'out',
  'remove old folders': 'rm',
};
const STALE_FILES = 50;

interface Size {
  readonly key: string;
  readonly label: string;
  readonly files: number;
  readonly fileBytes?: number;
  /** the target for classic / quick-migrate */
  readonly target?: boolean;
}

function sizes(quick: boolean): Size[] {
  const n = (files: number): Size => ({ key: label(files), label: `${files.toLocaleString('en-US')} files`, files });
  if (quick) return [n(50), n(1000), { key: '100x100KB', label: '100 files x 100 KB', files: 100, fileBytes: 100 * 1024, target: true }];
  return [n(50), n(5000), n(50_000), { key: '3000x100KB', label: '3,000 files x 100 KB', files: 3000, fileBytes: 100 * 1024, target: true }];
}

/** The classic path's transport: commands on a front run through ssh, or locally. */
class Classic {
  readonly steps = new Map<string, number[]>();
  constructor(
    private readonly c: Cluster,
    private readonly ssh: Ssh | null,
    private readonly backups: string,
    private readonly signal: AbortSignal,
  ) {}

  private remote(p: string): string {
    return this.ssh === null ? p : `${this.ssh.target}:${p}`;
  }

  private rsync(src: string, dest: string): Promise<void> {
    const args = ['-a', '--delete', ...(this.ssh === null ? [] : ['-e', this.ssh.rsh]), src, dest];
    return sh('rsync', args, { signal: this.signal });
  }

  private onFront(args: string[]): Promise<void> {
    if (this.ssh === null) return sh(args[0] as string, args.slice(1), { signal: this.signal });
    return sh(this.ssh.command[0] as string, [...this.ssh.command.slice(1), this.ssh.target, ...args], { signal: this.signal });
  }

  private async step(name: string, fn: () => Promise<void>): Promise<void> {
    const ms = await timed(fn);
    const key = `${this.size}: ${name}`;
    this.steps.set(key, [...(this.steps.get(key) ?? []), ms]);
  }

  /** the size being measured, for the step breakdown */
  private size = '';

  /** The steps' median times of one size, as a note: "rsync in 1.2 s, tar …". */
  stepNote(size: string): string {
    return [...this.steps]
      .filter(([k]) => k.startsWith(`${size}: `))
      .map(([k, v]) => `${SHORT[k.slice(size.length + 2)] ?? k} ${(median(v) / 1000).toFixed(1)}`)
      .join(', ');
  }

  /** One classic migration of `uri`; returns its wall time. */
  async migrate(uri: string, from: string, to: string, size: string, counted: boolean): Promise<number> {
    this.size = counted ? size : `warm-up ${size}`;
    const { c } = this;
    const first = c.fronts[0];
    if (first === undefined) throw new Error('no front');
    const masterOld = sitePath(c.masterRoot, from, uri);
    const masterNew = sitePath(c.masterRoot, to, uri);
    const backup = path.join(this.backups, `${uri}-${Date.now()}.tar.gz`);
    const t = performance.now();
    await this.step('rsync front → hostmaster', () => this.rsync(`${this.remote(sitePath(first.root, from, uri))}/`, `${masterOld}/`));
    await this.step('tar czpf backup', () => sh('tar', ['-czpf', backup, '-C', masterOld, '.'], { signal: this.signal }));
    await this.step('unpack under new platform', async () => {
      fs.mkdirSync(masterNew);
      await sh('tar', ['-xzpf', backup, '-C', masterNew], { signal: this.signal });
    });
    await this.step('rsync out to every front', async () => {
      for (const f of c.fronts) await this.rsync(`${masterNew}/`, `${this.remote(sitePath(f.root, to, uri))}/`);
    });
    await this.step('remove old folders', async () => {
      for (const f of c.fronts) await this.onFront(['rm', '-rf', sitePath(f.root, from, uri)]);
      await sh('rm', ['-rf', masterOld], { signal: this.signal });
    });
    const ms = performance.now() - t;
    fs.rmSync(backup, { force: true });
    return ms;
  }
}

export async function dataSize(ctx: BenchContext): Promise<SectionResult> {
  const c = await benchCluster(ctx, 'cluster', 2);
  try {
    const ssh = await ctx.ssh();
    const transport = ssh === null ? 'local rsync (no sshd)' : 'rsync -e ssh';
    const backups = path.join(ctx.dir, 'backups');
    fs.mkdirSync(backups);
    const classic = new Classic(c, ssh, backups, ctx.signal);
    const list = sizes(ctx.quick);
    const site = (s: Size, path: 'qm' | 'classic'): string => `${path === 'qm' ? 'q' : 'c'}${s.key.toLowerCase()}.bench.test`;
    const stale = async (uri: string, platform: string): Promise<void> => {
      await removeTree(sitePath(c.masterRoot, platform, uri));
      makeSite(c.masterRoot, platform, uri, { files: STALE_FILES, privateFiles: 0, seed: 'stale' });
    };

    // everything is built and written back before any timing
    const t = performance.now();
    for (const s of list) {
      for (const p of ['qm', 'classic'] as const) {
        for (const f of c.fronts) makeSite(f.root, FROM, site(s, p), { files: s.files, privateFiles: Math.min(s.files, 100), seed: f.name, ...(s.fileBytes ? { fileBytes: s.fileBytes } : {}) });
        makeSite(c.masterRoot, FROM, site(s, p), { files: STALE_FILES, privateFiles: 0, seed: 'stale' });
      }
    }
    c.handOver();
    await syncDisk();
    ctx.log(`built ${list.length * 2} sites on ${c.fronts.length} fronts (${list.map((s) => s.label).join(', ')}) in ${Math.round(performance.now() - t)} ms; classic path over ${transport}`);

    const qm = new Map<string, number[]>();
    const old = new Map<string, number[]>();
    for (let i = 0; i <= ctx.runs; i++) {
      const { from, to } = bounce(i);
      for (const s of list) {
        ctx.signal.throwIfAborted();
        if (i > 0) await stale(site(s, 'qm'), from);
        await syncDisk();
        const run = await migrate(c, site(s, 'qm'), from, to, ctx.signal);
        if (i > 0) await stale(site(s, 'classic'), from);
        await syncDisk();
        const ms = await classic.migrate(site(s, 'classic'), from, to, s.key, i > 0);
        ctx.log(`${s.label}: quick-migrate ${Math.round(run.durationMs)} ms, classic ${Math.round(ms)} ms${i === 0 ? ' (warm-up)' : ''}`);
        if (i === 0) continue;
        qm.set(s.key, [...(qm.get(s.key) ?? []), run.durationMs]);
        old.set(s.key, [...(old.get(s.key) ?? []), ms]);
      }
    }

    const figures: Figure[] = [];
    for (const s of list) {
      const q = qm.get(s.key) ?? [];
      const o = old.get(s.key) ?? [];
      figures.push(
        figure(S, `qm.${s.key}`, `${s.label}: quick-migrate migrate, 2 fronts`, 'ms', q),
        figure(S, `classic.${s.key}`, `${s.label}: classic path (${transport})`, 'ms', o, { note: `steps (s): ${classic.stepNote(s.key)}` }),
        ratio(S, `ratio.${s.key}`, `${s.label}: classic / quick-migrate`, o, q, s.target ? { target: { op: '>=', value: 20 } } : {}),
      );
    }
    const smallest = list[0] as Size;
    const largest = list.filter((s) => s.fileBytes === undefined).at(-1) as Size;
    figures.push(
      ratio(S, 'qmFlat', `quick-migrate ${largest.label} / ${smallest.label} (flat: about 1)`, qm.get(largest.key) ?? [], qm.get(smallest.key) ?? []),
    );
    return {
      figures,
      details: {
        transport,
        fronts: c.fronts.length,
        classicStepMedians: Object.fromEntries([...classic.steps].filter(([k]) => !k.startsWith('warm-up')).map(([k, v]) => [k, round(median(v))])),
        classicSteps: 'in: rsync -a --delete front→hostmaster, data included; tar: tar czpf backup (gzip, as provision backup); untar: tar xzpf under the new platform; out: rsync -a --delete to each front in turn; rm: rm -rf the old folders (fronts over ssh, hostmaster)',
      },
    };
  } finally {
    await c.stop();
  }
}
