// One acknowledged agent operation against what SSH-based tools do for the same work: a real Apply
// RPC (fronts-park-data: the agent journals, renames the site's data dirs into its park area, fsyncs,
// answers) through the controller's own client on an open channel, against `ssh root@127.0.0.1 mv a b`
// with a new SSH connection each time, as Ansible without ControlPersist or Aegir's remote calls do.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { AgentConnection, channelCredentials, deadlinesFrom } from '../../controller/agentConnection.js';
import { loadControllerConfig } from '../../controller/config.js';
import { makeSite } from '../lib/fixtures.js';
import { type BenchContext, type SectionResult, FROM, TO, figure, benchCluster, median, ratio, syncDisk, timed } from './common.js';

const S = 'op';
const DATA_DIRS = ['files', 'private/files'];

export async function perOperation(ctx: BenchContext): Promise<SectionResult> {
  const ops = ctx.quick ? 10 : 50;
  const mvs = ctx.quick ? 5 : 20;
  const warm = 3;
  const c = await benchCluster(ctx, 'cluster', 1);
  const config = await loadControllerConfig(c.controllerConfig);
  const front = config.fronts[0];
  if (front === undefined) throw new Error('no front in the controller config');
  const conn = new AgentConnection(front, channelCredentials(config), deadlinesFrom(config));
  try {
    const web1 = c.fronts[0] as (typeof c.fronts)[number];
    const stamp = Date.now().toString(36);
    const ids = Array.from({ length: warm + ops }, (_, i) => ({ id: `bench-op-${stamp}-${i}`, site: `op${i}.bench.test` }));
    for (const { site } of ids) makeSite(web1.root, FROM, site, { files: 5, privateFiles: 2, seed: 'web1' });
    c.handOver();
    await syncDisk();
    await conn.hello();
    // registering is the preflight's part of a migration, not the operation measured
    for (const { id, site } of ids) {
      const r = await conn.preflight({ id, from: FROM, site, to: TO, newSite: site, dataDirs: DATA_DIRS }, { register: true, local: false });
      if (r.problems.length > 0) throw new Error(`preflight refused ${id}: ${JSON.stringify(r).slice(0, 500)}`);
    }
    const applied: number[] = [];
    for (const [i, { id }] of ids.entries()) {
      ctx.signal.throwIfAborted();
      const ms = await timed(() => conn.apply(id, 'fronts-park-data', 'park-data', 1));
      if (i >= warm) applied.push(ms);
    }
    ctx.log(`${ops} Apply fronts-park-data: median ${median(applied).toFixed(2)} ms`);
    const figures = [figure(S, 'apply', 'one agent operation (Apply park-data, acknowledged)', 'ms', applied, { target: { op: '<', value: 5 }, note: `median of ${ops}` })];

    const ssh = await ctx.ssh();
    if (ssh === null) {
      figures.push(figure(S, 'sshMv', '`ssh host mv a b`', 'ms', [], { note: `no sshd: ${ctx.sshUnavailable() ?? '?'}` }));
      return { figures, details: { ssh: false } };
    }
    const dir = path.join(web1.root, 'mv-bench');
    fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
    const sshMv: number[] = [];
    for (let i = 0; i < warm + mvs; i++) {
      ctx.signal.throwIfAborted();
      const [from, to] = i % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
      const ms = await timed(async () => {
        const r = await execa(ssh.command[0] as string, [...ssh.command.slice(1), ssh.target, 'mv', path.join(dir, from), path.join(dir, to)], { reject: false, stdin: 'ignore' });
        if (r.exitCode !== 0) throw new Error(`ssh mv: exit ${String(r.exitCode)}: ${String(r.stderr)}`);
      });
      if (i >= warm) sshMv.push(ms);
    }
    figures.push(figure(S, 'sshMv', '`ssh root@127.0.0.1 mv a b` (new connection each)', 'ms', sshMv, { note: `median of ${mvs}` }));
    figures.push(ratio(S, 'sshMvOverApply', 'ssh mv / agent operation', sshMv, applied, { target: { op: '>=', value: 50 } }));
    return { figures, details: { ssh: true } };
  } finally {
    conn.close();
    await c.stop();
  }
}
