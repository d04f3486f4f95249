// The fixed cost: `quick-migrate status` (process start, config, exit) and one whole migration of a
// small site on 2 fronts, with the steps that make it up.
import path from 'node:path';
import { execa } from 'execa';
import { repoRoot } from '../lib/cluster.js';
import { type BenchContext, type SectionResult, FROM, TO, figure, benchCluster, buildSites, median, migrate, round, stepDurations, timed } from './common.js';

const S = 'fixed';

export async function fixedCost(ctx: BenchContext): Promise<SectionResult> {
  const c = await benchCluster(ctx, 'cluster', 2);
  try {
    const uris = Array.from({ length: ctx.runs + 1 }, (_, i) => `fixed${i}.bench.test`);
    await buildSites(c, uris, { files: 50, privateFiles: 5 });

    const whole: number[] = [];
    const steps = new Map<string, number[]>();
    for (const [i, uri] of uris.entries()) {
      ctx.signal.throwIfAborted();
      const run = await migrate(c, uri, FROM, TO, ctx.signal);
      ctx.log(`migrate ${uri}, 2 fronts: ${Math.round(run.durationMs)} ms${i === 0 ? ' (warm-up)' : ''}`);
      if (i === 0) continue;
      whole.push(run.durationMs);
      for (const [step, ms] of stepDurations(run)) steps.set(step, [...(steps.get(step) ?? []), ms]);
    }

    // the bin/ wrapper, as a hostmaster task calls it: a shell, then node with the no-debugger preload
    const bin = path.join(repoRoot(), 'bin', 'quick-migrate');
    const statusRuns = ctx.quick ? 3 : 10;
    const status: number[] = [];
    for (let i = 0; i <= statusRuns; i++) {
      ctx.signal.throwIfAborted();
      let exitCode: number | undefined;
      const ms = await timed(async () => {
        exitCode = (await execa(bin, ['status', '--config', c.controllerConfig], { reject: false, stdin: 'ignore', env: { QM_LOG_LEVEL: 'warn' } })).exitCode;
      });
      if (exitCode !== 0) throw new Error(`quick-migrate status: exit ${String(exitCode)}`);
      if (i > 0) status.push(ms); // the first is a warm-up (disk cache)
    }

    const stepTotal = whole.map((_, i) => [...steps.values()].reduce((sum, xs) => sum + (xs[i] ?? 0), 0));
    return {
      figures: [
        figure(S, 'status', '`quick-migrate status` (bin/, wall)', 'ms', status, { target: { op: '<', value: 120 } }),
        figure(S, 'migrate2', 'one migration, 2 fronts, whole command', 'ms', whole, { target: { op: '<', value: 400 } }),
        figure(S, 'steps2', '  sum of its steps', 'ms', stepTotal),
        figure(S, 'fetch2', '  fetch-site', 'ms', steps.get('fetch-site') ?? []),
        figure(S, 'push2', '  push-site', 'ms', steps.get('push-site') ?? []),
      ],
      details: { stepMedians: Object.fromEntries([...steps].map(([k, v]) => [k, round(median(v))])) },
    };
  } finally {
    await c.stop();
  }
}
