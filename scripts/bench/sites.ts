// Many sites: 100 sites of one platform on 4 fronts, moved by `quick-migrate migrate --all --from P
// --to P --concurrency N --json` at concurrency 1, 4 and 8: the batch's wall time and each site's own
// time (its `result` event's durationMs, as the batch-result lists them). The batches alternate
// direction; before each, the hostmaster's copies are reset to small stale ones.
import fs from 'node:fs';
import { runController, type ControllerEvent } from '../lib/cluster.js';
import { makeSite, sitePath } from '../lib/fixtures.js';
import { type BenchContext, type Figure, type SectionResult, CONTROLLER_BIN, FROM, MigrationFailed, TO, benchCluster, bounce, figure, median, round, syncDisk } from './common.js';

const S = 'sites';

interface SiteTime {
  site: string;
  outcome: string;
  durationMs: number;
}

/** Each site's outcome and time: from the batch-result event, else from the per-site result events. */
function siteTimes(events: readonly ControllerEvent[]): SiteTime[] {
  const summary = events.findLast((e) => e.event === 'batch-result' && Array.isArray(e.sites));
  const rows = (summary?.sites as unknown[] | undefined) ?? events.filter((e) => e.event === 'result' && typeof e.site === 'string');
  return rows.map((r) => {
    const o = r as Record<string, unknown>;
    return { site: String(o.site ?? o.uri), outcome: String(o.outcome), durationMs: Number(o.durationMs ?? o.timeMs ?? o.ms) };
  });
}

/** The messages of the failed sites' result events, for the log. */
function lastErrors(stdout: string): string {
  return stdout
    .split('\n')
    .filter((l) => l.includes('"event":"result"') && !l.includes('"outcome":"migrated"'))
    .map((l) => {
      try {
        const e = JSON.parse(l) as { site?: string; outcome?: string; message?: string };
        return `  ${e.site}: ${e.outcome}: ${String(e.message).slice(0, 300)}`;
      } catch {
        return '';
      }
    })
    .join('\n');
}

export async function manySites(ctx: BenchContext): Promise<SectionResult> {
  const nSites = ctx.quick ? 6 : 100;
  const nFronts = ctx.quick ? 2 : 4;
  const levels = ctx.quick ? [1, 4] : [1, 4, 8];
  const c = await benchCluster(ctx, 'cluster', nFronts);
  try {
    const uris = Array.from({ length: nSites }, (_, i) => `site${String(i).padStart(3, '0')}.bench.test`);
    const stale = (platform: string): void => {
      for (const uri of uris) {
        fs.rmSync(sitePath(c.masterRoot, FROM, uri), { recursive: true, force: true });
        fs.rmSync(sitePath(c.masterRoot, TO, uri), { recursive: true, force: true });
        makeSite(c.masterRoot, platform, uri, { files: 10, privateFiles: 0, seed: 'stale' });
      }
    };
    for (const uri of uris) for (const f of c.fronts) makeSite(f.root, FROM, uri, { files: 50, privateFiles: 5, seed: f.name });
    stale(FROM);
    c.handOver();
    await syncDisk();

    const total = new Map<number, number[]>();
    const perSite = new Map<number, number[]>();
    const failures: string[] = [];
    let batch = 0;
    for (let r = 0; r < ctx.runs && failures.length === 0; r++) {
      for (const conc of levels) {
        ctx.signal.throwIfAborted();
        const { from, to } = bounce(batch++);
        stale(from);
        await syncDisk();
        const run = await runController(c.controllerConfig, ['migrate', '--all', '--from', from, '--to', to, '--concurrency', String(conc), '--json'], {
          signal: ctx.signal,
          timeoutMs: 3_600_000,
          controllerBin: CONTROLLER_BIN,
        });
        const times = siteTimes(run.events);
        const failed = times.filter((t) => t.outcome !== 'migrated');
        if (run.exitCode !== 0 || times.length !== nSites || failed.length > 0) {
          // a site left behind would fail every later batch: report what was measured, and this
          const why = `migrate --all --concurrency ${conc}: exit ${run.exitCode}, ${times.length} site result(s), ${failed.length} not migrated (${failed.slice(0, 5).map((f) => `${f.site}: ${f.outcome}`).join(', ')})`;
          ctx.log(`${why}\n${lastErrors(run.stdout)}`);
          failures.push(why);
          break;
        }
        const ms = times.map((t) => t.durationMs);
        ctx.log(`${nSites} sites x ${nFronts} fronts, concurrency ${conc}: ${(run.durationMs / 1000).toFixed(1)} s; per site median ${Math.round(median(ms))} ms, max ${Math.round(Math.max(...ms))} ms`);
        total.set(conc, [...(total.get(conc) ?? []), run.durationMs]);
        perSite.set(conc, [...(perSite.get(conc) ?? []), ...ms]);
      }
    }
    const figures: Figure[] = [];
    for (const conc of levels) {
      if (!total.has(conc)) continue;
      const target = !ctx.quick && conc === 8 ? { target: { op: '<' as const, value: 45_000 } } : {};
      figures.push(
        figure(S, `batch.${conc}`, `${nSites} sites x ${nFronts} fronts, --concurrency ${conc}: whole batch`, 'ms', total.get(conc) ?? [], target),
        figure(S, `site.${conc}`, `  each site's time at --concurrency ${conc}`, 'ms', perSite.get(conc) ?? [], {
          note: `median of ${(perSite.get(conc) ?? []).length}, max ${round(Math.max(...(perSite.get(conc) ?? [NaN])))} ms`,
        }),
      );
    }
    return { figures, ...(failures.length > 0 ? { failures } : {}), details: { sites: nSites, fronts: nFronts, concurrency: levels } };
  } finally {
    await c.stop();
  }
}
