// `migrate --all --from <platform>`: every site of the platform, each its own migration (journal, lock,
// outcome, exit code), at most --concurrency at a time, on one channel per front and one rsync tunnel
// for the whole batch. A site that fails does not stop the others; a signal cancels the running sites
// (each rolls back as `migrate` would) and starts no new one. What is pure is batch.ts's.
import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import pLimit from "p-limit";
import { QmError, describeError, errorCode } from "../shared/errors.js";
import {
  DEFAULT_CONCURRENCY,
  NOT_STARTED,
  type SiteResult,
  type SitesEntry,
  batchExitCode,
  batchMessage,
  batchOutcome,
  selectSites,
  siteExitCode,
} from "./batch.js";
import { type BatchOutput, HumanBatchOutput, JsonBatchOutput } from "./batchOutput.js";
import { type ControllerConfig, loadControllerConfig } from "./config.js";
import { OUTCOMES } from "./events.js";
import { AgentChannels, Cancellation, onSignals, planMigration, refuseLocked } from "./execution.js";
import type { ControllerLog } from "./logSink.js";
import { checkExecutable, platformArg } from "./platforms.js";

export interface BatchOptions {
  readonly config: string;
  readonly from: string;
  readonly to: string;
  readonly concurrency?: number;
  readonly fetchFrom?: string;
  readonly keepMasterData?: boolean;
  readonly dryRun?: boolean;
  readonly json?: boolean;
}

function outputFor(json: boolean | undefined): BatchOutput {
  if (json) return new JsonBatchOutput(process.stdout);
  const tty = process.stdout.isTTY === true;
  return new HumanBatchOutput(process.stdout, tty && !process.env.NO_COLOR, tty);
}

/** The entries of `<root>/<from>/sites/` on the hostmaster. */
async function sitesFolder(root: string, from: string): Promise<SitesEntry[]> {
  const dir = join(root, from, "sites");
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new QmError("PRECONDITION", `source platform ${from} has no sites folder on the hostmaster (${dir}: ${code ?? describeError(err)})`, { key: "from", path: dir });
  }
  return entries.map((e) => ({ name: e.name, kind: e.isDirectory() ? "dir" : e.isSymbolicLink() ? "symlink" : e.isFile() ? "file" : "other" }));
}

/** `openLog`: the batch's log, for its config and its output (on a terminal the log goes to the journals, see logSink.ts). */
export async function migrateAll(opts: BatchOptions, openLog: (config: ControllerConfig, output: BatchOutput) => ControllerLog): Promise<number> {
  const started = Date.now();
  const output = outputFor(opts.json);
  let config: ControllerConfig;
  let from: string;
  let to: string;
  let sites: string[];
  try {
    config = await loadControllerConfig(opts.config);
    from = platformArg(opts.from, config.root, "source platform");
    to = platformArg(opts.to, config.root, "target platform");
    // else every site would be refused for it, one by one
    if (from === to) throw new QmError("USAGE", `--from and --to are the same platform (${from}): nothing to migrate`, { key: "to" });
    if (opts.fetchFrom && !config.fronts.some((f) => f.name === opts.fetchFrom)) {
      throw new QmError("USAGE", `--fetch-from ${opts.fetchFrom}: no such front in ${opts.config}`, { key: "fetch-from" });
    }
    await checkExecutable(config.rsync);
    const found = selectSites(await sitesFolder(config.root, from));
    sites = found.sites;
    const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
    output.event({ event: "batch", site: null, from, to, sites, skipped: found.skipped, concurrency, dryRun: opts.dryRun ?? false });
  } catch (err) {
    const message = err instanceof QmError ? err.message : describeError(err);
    output.event({ event: "batch-result", site: null, outcome: "refused", exitCode: OUTCOMES.refused, message, code: errorCode(err), durationMs: Date.now() - started, sites: [] });
    return OUTCOMES.refused;
  }

  const logged = openLog(config, output);
  try {
    const { log } = logged;
    const channels = new AgentChannels(config, log);
    const running = new Map<string, Cancellation>();
    let interrupted: string | undefined;
    const off = onSignals((signal) => {
      interrupted ??= signal;
      log.warn({ signal, running: [...running.keys()] }, "interrupted: no new site starts; cancelling the running ones (each rolls back; a second signal cancels the rollbacks)");
      for (const c of running.values()) c.interrupt(signal);
    });

    /** One site's migration, exactly as `migrate <site>` runs it; never throws. */
    const migrateSite = async (site: string): Promise<SiteResult> => {
      const t0 = Date.now();
      const cancel = new Cancellation();
      running.set(site, cancel);
      output.siteStarted(site);
      const reporter = output.siteReporter(site);
      let migrationId: string | null = null;
      let ran = false;
      try {
        await refuseLocked(config.stateDir, [site]);
        const plan = planMigration(config, { site, newSite: site, from, to, fetchFrom: opts.fetchFrom, keepMasterData: opts.keepMasterData ?? false });
        migrationId = plan.migration.id;
        ran = true;
        const r = await channels.run(plan, { kind: "migrate", dryRun: opts.dryRun ?? false }, reporter, cancel);
        return { site, outcome: r.outcome, migrationId, exitCode: r.exitCode, durationMs: Date.now() - t0, message: r.message };
      } catch (err) {
        // before its run: refused (or locked) as `migrate` refuses; from its run, not expected (the runner
        // reports every failure itself), and then it may have changed something
        const outcome = !ran ? (err instanceof QmError && err.code === "LOCKED" ? "locked" : "refused") : "needs-attention";
        const message = ran ? `${describeError(err)}; see \`quick-migrate status ${migrationId}\`` : err instanceof QmError ? err.message : describeError(err);
        const durationMs = Date.now() - t0;
        reporter.event({ event: "result", migrationId, outcome, exitCode: OUTCOMES[outcome], message, code: errorCode(err), durationMs });
        return { site, outcome, migrationId, exitCode: OUTCOMES[outcome], durationMs, message };
      } finally {
        running.delete(site);
      }
    };

    const results = new Map<string, SiteResult>();
    // at most --concurrency sites at a time, in the order listed; once a signal came, none starts
    const limit = pLimit(Math.max(1, opts.concurrency ?? DEFAULT_CONCURRENCY));
    try {
      await Promise.all(
        sites.map((site) =>
          limit(async () => {
            if (interrupted !== undefined) return;
            const r = await migrateSite(site);
            results.set(site, r);
            output.siteEnded(r);
          }),
        ),
      );
    } finally {
      off();
      channels.close();
    }
    // every site without a result was not started
    for (const site of sites) {
      if (results.has(site)) continue;
      const r: SiteResult = { site, outcome: NOT_STARTED, migrationId: null, exitCode: siteExitCode(NOT_STARTED), durationMs: 0, message: `not started: the batch was interrupted by ${interrupted ?? "a signal"}` };
      results.set(site, r);
      output.event({ event: "result", site, migrationId: null, outcome: NOT_STARTED, exitCode: r.exitCode, message: r.message, durationMs: 0 });
      output.siteEnded(r);
    }
    const list = sites.map((s) => results.get(s) as SiteResult);
    const exitCode = batchExitCode(list);
    output.event({
      event: "batch-result",
      site: null,
      outcome: batchOutcome(list, { dryRun: opts.dryRun ?? false, interrupted: interrupted !== undefined }),
      exitCode,
      message: batchMessage(list, { from, to, ...(interrupted ? { interrupted } : {}) }),
      durationMs: Date.now() - started,
      sites: list,
    });
    log.info({ sites: list.length, exitCode, maxRssKb: process.resourceUsage().maxRSS }, "batch finished");
    return exitCode;
  } finally {
    logged.close();
  }
}
