// quick-migrate: the controller CLI on the hostmaster, called by hostmaster tasks and by hand.
import { randomBytes } from "node:crypto";
import { Command, Option } from "commander";
import { pino } from "pino";
import { QmError, describeError } from "../shared/errors.js";
import { createRootLogger } from "../shared/logger.js";
import { checkMigration } from "../shared/migration.js";
import { checkSiteName } from "../shared/names.js";
import { SiteTree } from "../shared/siteTree.js";
import { PACKAGE_VERSION } from "../shared/version.js";
import { AgentFront, type FrontLike, channelCredentials } from "./agentClient.js";
import { DEFAULT_CONTROLLER_CONFIG, MASTER, loadControllerConfig } from "./config.js";
import { OUTCOMES, type Reporter } from "./events.js";
import { HOOK_NAMES, type HookName, HookRunner } from "./hooks.js";
import { HumanReporter, JsonReporter } from "./output.js";
import { buildPlan } from "./plan.js";
import { checkExecutable, findSourcePlatform, platformArg } from "./platforms.js";
import { MigrationRunner } from "./runner.js";
import { RsyncTunnel } from "./tunnel.js";

interface MigrateOptions {
  to: string;
  from?: string;
  newUri?: string;
  fetchFrom?: string;
  keepMasterData?: boolean;
  config: string;
  dryRun?: boolean;
  json?: boolean;
}

function reporterFor(json: boolean | undefined): Reporter {
  return json ? new JsonReporter(process.stdout) : new HumanReporter(process.stdout, process.stdout.isTTY === true);
}

function newMigrationId(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

async function migrate(uri: string, opts: MigrateOptions): Promise<number> {
  const started = Date.now();
  const reporter = reporterFor(opts.json);
  let cleanup: Array<() => unknown> = [];
  try {
    const config = await loadControllerConfig(opts.config);
    const log = createRootLogger("quick-migrate", process.env.QM_LOG_LEVEL ?? config.logLevel, pino.destination(2));
    const site = checkSiteName(uri, "site");
    const newSite = checkSiteName(opts.newUri ?? uri, "new site");
    const to = platformArg(opts.to, config.root, "target platform");
    const from = opts.from ? platformArg(opts.from, config.root, "source platform") : await findSourcePlatform(config.root, site);
    if (opts.fetchFrom && !config.fronts.some((f) => f.name === opts.fetchFrom)) {
      throw new QmError("USAGE", `--fetch-from ${opts.fetchFrom}: no such front in ${opts.config}`, { key: "fetch-from" });
    }
    const migration = checkMigration({ id: newMigrationId(), from, site, to, newSite, dataDirs: config.dataDirs });
    await checkExecutable(config.rsync);

    const plan = buildPlan({
      migration,
      master: MASTER,
      fronts: config.fronts.map((f) => ({ name: f.name, local: f.local })),
      ...(opts.fetchFrom ? { fetchFrom: opts.fetchFrom } : {}),
      hooks: new Set(HOOK_NAMES.filter((h: HookName) => config.hooks[h] !== undefined)),
      keepMasterData: opts.keepMasterData ?? false,
    });
    const credentials = channelCredentials(config);
    const fronts = new Map<string, FrontLike>(config.fronts.map((f) => [f.name, new AgentFront(f, credentials)]));
    cleanup.push(() => fronts.forEach((f) => f.close()));
    const tunnel = await RsyncTunnel.open(config.rsync, log.child({ component: "tunnel" }));
    cleanup.push(() => tunnel.close());

    // a signal cancels running hooks and rsync; the step fails and is rolled back like any failure
    const abort = new AbortController();
    const onSignal = (signal: string) => {
      log.warn({ signal }, "interrupted: cancelling the running step");
      abort.abort(new QmError("INTERNAL", `interrupted by ${signal}`));
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    cleanup.push(() => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    });
    const runner = new MigrationRunner({
      plan,
      root: config.root,
      stateDir: config.stateDir,
      fronts,
      master: new SiteTree(config.root),
      hooks: new HookRunner(config.hooks, log.child({ component: "hooks", migrationId: migration.id })),
      tunnel,
      reporter,
      log: log.child({ component: "runner", migrationId: migration.id }),
      dryRun: opts.dryRun ?? false,
      signal: abort.signal,
    });
    const result = await runner.run();
    // peak memory: the rsync tunnel streams with backpressure, so this must not grow with what is pushed
    log.info({ migrationId: migration.id, outcome: result.outcome, maxRssKb: process.resourceUsage().maxRSS }, "controller finished");
    return result.exitCode;
  } catch (err) {
    const message = describeError(err);
    reporter.event({ event: "result", migrationId: null, outcome: "refused", exitCode: OUTCOMES.refused, message: err instanceof QmError ? err.message : message, durationMs: Date.now() - started });
    return OUTCOMES.refused;
  } finally {
    for (const c of cleanup.reverse()) await c();
    cleanup = [];
  }
}

const program = new Command("quick-migrate")
  .description("quick-migrate: migrate an Aegir site to another platform by renaming its data dirs in place on every web front")
  .version(PACKAGE_VERSION)
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(`quick-migrate: ${s.replace(/^error: /, "")}`) });

program
  .command("migrate")
  .description("migrate <uri> to another platform")
  .argument("<uri>", "the site's URI (its folder name under sites/)")
  .requiredOption("--to <platform>", "target platform, relative to the root or absolute under it")
  .option("--from <platform>", "source platform (default: the one platform on the hostmaster holding the site)")
  .option("--new-uri <uri>", "rename the site on the way")
  .option("--fetch-from <front>", "front whose site folder is fetched (default: the hostmaster's own front, else the first front)")
  .option("--keep-master-data", "keep the hostmaster's parked stale copy of the data dirs instead of deleting it")
  .addOption(new Option("-c, --config <file>", "controller config").default(DEFAULT_CONTROLLER_CONFIG))
  .option("--dry-run", "run preflight and print the plan per host; change nothing")
  .option("--json", "one JSON object per line on stdout")
  .exitOverride()
  .action(async (uri: string, opts: MigrateOptions) => {
    process.exitCode = await migrate(uri, opts);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const code = (err as { code?: string }).code;
  if (code === "commander.helpDisplayed" || code === "commander.version" || code === "commander.help") process.exit(0);
  const message = describeError(err).replace(/^error: /, "");
  if (process.argv.includes("--json")) {
    // hostmaster tasks parse stdout: a usage error ends with a result event like any refusal
    new JsonReporter(process.stdout).event({ event: "result", migrationId: null, outcome: "refused", exitCode: OUTCOMES.refused, message, durationMs: 0 });
  } else if (typeof code !== "string" || !code.startsWith("commander.")) {
    process.stderr.write(`quick-migrate: ${message}\n`);
  }
  process.exit(OUTCOMES.refused);
}
