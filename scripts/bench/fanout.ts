// Fan-out: one front step (fronts-park-data, as the controller's step-end event times it: every agent
// asked, every acknowledgement in) and one whole migration, on 1, 4, 16 and 32 fronts.
import { type BenchContext, type Figure, type SectionResult, FROM, TO, benchCluster, buildSites, controllerMaxRssMb, figure, migrate, round, stepDurations, median } from './common.js';

const S = 'fanout';
const PARK = 'fronts-park-data';

export async function fanOut(ctx: BenchContext): Promise<SectionResult> {
  const counts = ctx.quick ? [1, 4] : [1, 4, 16, 32];
  const largest = Math.max(...counts);
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {};
  for (const n of counts) {
    ctx.signal.throwIfAborted();
    const t = performance.now();
    const c = await benchCluster(ctx, String(n), n);
    ctx.log(`${n} agent(s) listening after ${Math.round(performance.now() - t)} ms`);
    try {
      const uris = Array.from({ length: ctx.runs + 1 }, (_, i) => `fan${n}-${i}.bench.test`);
      await buildSites(c, uris, { files: 50, privateFiles: 5 });
      const park: number[] = [];
      const push: number[] = [];
      const whole: number[] = [];
      const rss: number[] = [];
      for (const [i, uri] of uris.entries()) {
        ctx.signal.throwIfAborted();
        const run = await migrate(c, uri, FROM, TO, ctx.signal, { QM_LOG_LEVEL: 'info' });
        const steps = stepDurations(run);
        ctx.log(`${n} front(s), ${uri}: ${Math.round(run.durationMs)} ms, park ${Math.round(steps.get(PARK) ?? NaN)} ms, push-site ${Math.round(steps.get('push-site') ?? NaN)} ms${i === 0 ? ' (warm-up)' : ''}`);
        if (i === 0) continue;
        park.push(steps.get(PARK) ?? NaN);
        push.push(steps.get('push-site') ?? NaN);
        whole.push(run.durationMs);
        rss.push(controllerMaxRssMb(run));
      }
      const big = n === largest && n >= 32;
      figures.push(
        figure(S, `park.${n}`, `one front step (park-data) on ${n} front(s)`, 'ms', park, big ? { target: { op: '<', value: 100 } } : {}),
        figure(S, `push.${n}`, `push-site on ${n} front(s)`, 'ms', push, big ? { target: { op: '<', value: 1500 } } : {}),
        figure(S, `whole.${n}`, `whole migration on ${n} front(s)`, 'ms', whole, big ? { target: { op: '<', value: 2500 } } : {}),
      );
      details[`controllerMaxRssMb.${n}`] = round(median(rss));
    } finally {
      await c.stop();
    }
  }
  return { figures, details };
}
