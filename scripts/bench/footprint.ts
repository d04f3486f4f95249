// Footprint: an agent's resident memory idle and its peak during a migration (from /proc of the agent's
// node process), the time from spawning an agent to its first SERVING health answer, and the
// controller's peak memory on the largest cluster.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import YAML from 'yaml';
import { probeHealth } from '../../shared/healthProbe.js';
import type { ClusterFront, ClusterTls } from '../lib/cluster.js';
import { type BenchContext, type SectionResult, AGENT_BIN, FROM, TO, benchCluster, buildSites, controllerMaxRssMb, figure, migrate } from './common.js';
import { freePort } from './ssh.js';

const S = 'footprint';

/** A field of /proc/<pid>/status in MB (VmRSS, VmHWM). */
export function procMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]) / 1024;
}

/**
 * The agent's node process: the spawned process itself when it is node (the cluster switches the user
 * with setuid, no wrapper), else the first node process below it (a bin/ wrapper, setpriv, ip netns exec).
 */
export function nodePid(pid: number): number {
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    let exe = '';
    try {
      exe = fs.readlinkSync(`/proc/${p}/exe`);
    } catch {
      // gone, or not ours to read
    }
    if (exe === process.execPath || /\/node$/.test(exe)) return p;
    for (const task of safeList(`/proc/${p}/task`)) {
      const children = safeRead(`/proc/${p}/task/${task}/children`).trim();
      if (children !== '') queue.push(...children.split(/\s+/).map(Number));
    }
  }
  throw new Error(`no node process at or below pid ${pid}`);
}

function safeList(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function agentPid(f: ClusterFront): number {
  const pid = f.process?.pid;
  if (pid === undefined) throw new Error(`agent ${f.name} is not running`);
  return nodePid(pid);
}

/**
 * Spawns a second agent with `f`'s config on a fixed free port (its own agent is stopped first) and
 * polls the standard health service until it answers SERVING: ms from spawn to that answer.
 */
async function startToServing(f: ClusterFront, dir: string, tls: ClusterTls | undefined): Promise<number> {
  // the probe presents the controller's certificate, as the controller's health check does
  const creds = tls && { ca: fs.readFileSync(tls.ca), cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) };
  const port = await freePort();
  const config = YAML.parse(fs.readFileSync(f.configFile, 'utf8')) as Record<string, unknown>;
  const file = path.join(dir, `agent-${port}.yaml`);
  fs.writeFileSync(file, YAML.stringify({ ...config, listen: `127.0.0.1:${port}` }));
  fs.chmodSync(file, 0o644);
  const address = `127.0.0.1:${port}`;
  const started = performance.now();
  const child = execa(AGENT_BIN, ['--config', file], {
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
    env: { QM_LOG_LEVEL: 'warn' },
    ...(f.user !== undefined ? { uid: f.user.uid, gid: f.user.gid } : {}),
  });
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`agent exited with ${String(child.exitCode)} before SERVING: ${String((await child).stderr).slice(-1000)}`);
      if (performance.now() - started > 30_000) throw new Error('agent not SERVING within 30 s');
      const probe = await probeHealth({ name: f.name, address, ...(creds ? { tls: creds } : {}) }, 250);
      if (probe.status === 'SERVING') return performance.now() - started;
      await new Promise((res) => setTimeout(res, 2));
    }
  } finally {
    child.kill('SIGTERM');
    await child;
  }
}

export async function footprint(ctx: BenchContext): Promise<SectionResult> {
  const n = ctx.quick ? 4 : 32;
  const c = await benchCluster(ctx, 'cluster', n);
  try {
    // idle: listening, connected to nobody yet; give the start-up garbage a moment to settle
    await new Promise((res) => setTimeout(res, 2000));
    const idle = c.fronts.map((f) => procMb(agentPid(f), 'VmRSS'));
    ctx.log(`${n} agents idle: VmRSS ${Math.min(...idle).toFixed(1)}..${Math.max(...idle).toFixed(1)} MB`);

    const uris = Array.from({ length: ctx.runs }, (_, i) => `foot${i}.bench.test`);
    await buildSites(c, uris, { files: 500, privateFiles: 20 });
    const controllerRss: number[] = [];
    for (const uri of uris) {
      ctx.signal.throwIfAborted();
      const run = await migrate(c, uri, FROM, TO, ctx.signal, { QM_LOG_LEVEL: 'info' });
      controllerRss.push(controllerMaxRssMb(run));
      ctx.log(`migrate ${uri} on ${n} fronts: ${Math.round(run.durationMs)} ms, controller peak RSS ${controllerMaxRssMb(run).toFixed(1)} MB`);
    }
    // the peak since each agent started: idle, then the migration(s)
    const peak = c.fronts.map((f) => procMb(agentPid(f), 'VmHWM'));

    const web1 = c.fronts[0] as ClusterFront;
    await c.stopAgent(web1.name);
    const starts: number[] = [];
    const tries = ctx.quick ? 2 : Math.max(5, ctx.runs);
    for (let i = 0; i <= tries; i++) {
      ctx.signal.throwIfAborted();
      const ms = await startToServing(web1, ctx.dir, c.tls);
      if (i > 0) starts.push(ms); // the first warms the disk cache
    }
    return {
      figures: [
        figure(S, 'agentRssIdle', `agent RSS idle (median of ${n} agents)`, 'MB', idle, { target: { op: '<', value: 60 } }),
        figure(S, 'agentRssPeak', `agent peak RSS (VmHWM) after ${ctx.runs} migration(s), median of ${n}`, 'MB', peak, { note: `max ${Math.max(...peak).toFixed(1)} MB` }),
        figure(S, 'agentStartToServing', 'agent spawn to first SERVING health answer', 'ms', starts, { target: { op: '<', value: 300 }, note: `median of ${tries}` }),
        figure(S, 'controllerRss', `controller peak RSS, migration on ${n} fronts`, 'MB', controllerRss),
      ],
      details: { fronts: n, sitesFiles: 500 },
    };
  } finally {
    await c.stop();
  }
}
