// The rsync channel: a site folder of 200 MB of code (a few big files, many small ones) copied from a
// front to the hostmaster. Compared: the migration's fetch-site step (rsync client on the hostmaster,
// rsync daemon on the agent, bytes through the agent's gRPC stream; its step-end durationMs) against
// `rsync -a -e ssh root@127.0.0.1:<site>/ <empty folder>/` of the same folder with the same data dirs
// excluded, over the bench's sshd. push-site (the same folder to the one front) is shown beside it.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { addSiteCode, makeSite, sitePath } from '../lib/fixtures.js';
import { agentPid, procMb } from './footprint.js';
import { type BenchContext, type Figure, type SectionResult, FROM, benchCluster, bounce, controllerMaxRssMb, figure, migrate, ratio, removeTree, stepDurations, syncDisk, timed } from './common.js';

const S = 'channel';

export async function channel(ctx: BenchContext): Promise<SectionResult> {
  const mb = ctx.quick ? 20 : 200;
  const c = await benchCluster(ctx, 'cluster', 1);
  try {
    const web1 = c.fronts[0] as (typeof c.fronts)[number];
    const uri = 'channel.bench.test';
    // 80% in 4 big files, 20% in small files of 20 KB
    const bigBytes = Math.floor((mb * 0.8 * 1024 * 1024) / 4);
    const smallBytes = 20 * 1024;
    const smallFiles = Math.floor((mb * 0.2 * 1024 * 1024) / smallBytes);
    const site = makeSite(web1.root, FROM, uri, { files: 50, privateFiles: 5, seed: 'web1' });
    addSiteCode(site.siteDir, { bigFiles: 4, bigBytes, smallFiles, smallBytes });
    c.handOver();
    const shape = `${mb} MB: 4 files of ${(bigBytes / 1024 / 1024).toFixed(0)} MB + ${smallFiles} files of 20 KB`;
    ctx.log(`site folder ${shape}`);

    const ssh = await ctx.ssh();
    const fetch: number[] = [];
    const push: number[] = [];
    const viaSsh: number[] = [];
    const controllerRss: number[] = [];
    for (let i = 0; i <= ctx.runs; i++) {
      ctx.signal.throwIfAborted();
      const { from, to } = bounce(i);
      // the hostmaster's copy is a small stale one, as before every migration: fetch-site sends it all
      await removeTree(sitePath(c.masterRoot, from, uri));
      makeSite(c.masterRoot, from, uri, { files: 0, privateFiles: 0, seed: 'stale' });
      await syncDisk();
      const run = await migrate(c, uri, from, to, ctx.signal, { QM_LOG_LEVEL: 'info' });
      const steps = stepDurations(run);

      const copy = path.join(ctx.dir, 'rsync-copy');
      await removeTree(copy);
      fs.mkdirSync(copy);
      await syncDisk();
      const src = `${sitePath(web1.root, to, uri)}/`;
      const excludes = ['--exclude=/files/***', '--exclude=/private/files/***'];
      const rsyncArgs = ssh === null ? ['-a', ...excludes, src, `${copy}/`] : ['-a', ...excludes, '-e', ssh.rsh, `${ssh.target}:${src}`, `${copy}/`];
      const ms = await timed(async () => {
        const r = await execa('rsync', rsyncArgs, { reject: false, stdin: 'ignore', cancelSignal: ctx.signal });
        if (r.exitCode !== 0) throw new Error(`rsync ${rsyncArgs.join(' ')}: exit ${String(r.exitCode)}: ${String(r.stderr)}`);
      });
      ctx.log(`run ${i}${i === 0 ? ' (warm-up)' : ''}: fetch-site ${Math.round(steps.get('fetch-site') ?? NaN)} ms, push-site ${Math.round(steps.get('push-site') ?? NaN)} ms, rsync${ssh ? ' -e ssh' : ' (local)'} ${Math.round(ms)} ms`);
      await removeTree(copy);
      if (i === 0) continue;
      controllerRss.push(controllerMaxRssMb(run));
      fetch.push(steps.get('fetch-site') ?? NaN);
      push.push(steps.get('push-site') ?? NaN);
      viaSsh.push(ms);
    }
    const other = ssh === null ? 'local rsync -a (no sshd)' : 'rsync -a -e ssh';
    const figures: Figure[] = [
      figure(S, 'fetchSite', `${mb} MB site folder, front → hostmaster: fetch-site through the agent channel`, 'ms', fetch),
      figure(S, 'rsyncSsh', `the same folder with ${other}`, 'ms', viaSsh, ssh === null ? { note: `no sshd: ${ctx.sshUnavailable() ?? '?'}` } : {}),
      ratio(S, 'fetchOverSsh', `agent channel / ${other}`, fetch, viaSsh, ssh === null ? { note: 'not against ssh' } : { target: { op: '<=', value: 1.15 } }),
      figure(S, 'pushSite', `${mb} MB push-site, hostmaster → 1 front`, 'ms', push),
      // nothing buffers the folder whole: both stay far below its size
      figure(S, 'controllerRss', `controller peak RSS, migrating the ${mb} MB folder`, 'MB', controllerRss),
      figure(S, 'agentRss', `agent peak RSS (VmHWM) after ${ctx.runs + 1} such migrations`, 'MB', [procMb(agentPid(web1), 'VmHWM')]),
    ];
    return { figures, details: { siteFolder: shape, comparedWith: other, compared: 'fetch-site step-end durationMs vs wall time of one rsync process into an empty folder; both exclude files/ and private/files/' } };
  } finally {
    await c.stop();
  }
}
