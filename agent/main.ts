// quick-migrate-agent: the gRPC service on each web front (run by systemd), and `parked list|restore`,
// which read the agent's own records directly to recover a front without its hostmaster.
// first: no inspector may open in this process (a signal, an --inspect), before anything else loads
import "../shared/noDebugger.js";
import type { FSWatcher } from "chokidar";
import { Command } from "commander";
import { constants } from "node:os";
// Light modules only: each command loads what it needs in its action (the service gRPC, the parked
// commands the records), so that none pays for the others' modules. Types cost nothing at run time.
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { PluginUsageError, exitOnPluginUsageError, parseMs, render } from "../shared/monitoringPlugin.js";
import { EXAMPLE_MIGRATION_ID, addExamples, explainUsageErrors, oneLine, usageError, usageLine } from "../shared/cliUsage.js";
import { checkMigrationId } from "../shared/names.js";
import { PACKAGE_VERSION } from "../shared/version.js";
import { exitOnceFlushed } from "../shared/exit.js";
import type { AgentConfig } from "./config.js";
import { DEFAULT_AGENT_CONFIG } from "./configFile.js";
import { AGENT_EXAMPLES } from "./help.js";
import type { MetricsEndpoint } from "./metricsServer.js";
import type { Registry } from "./registry.js";
import type { AgentGrpcServer } from "./server.js";
import type { ServiceManagerLike } from "./serviceManager.js";

/** Exit codes of `parked …`: 0 done, 1 something refused or missing, 2 usage, config or unknown id. */
const USAGE_CODES = new Set(["CONFIG_INVALID", "USAGE", "INVALID_NAME", "NOT_REGISTERED"]);

async function serve(configFile: string): Promise<void> {
  const [{ loadAgentConfig }, { createRootLogger }, { serviceManagerFromEnv }, { FAULT_ENV, parseFaults }, { ensureRootId }, { AgentGrpcServer }] = await Promise.all([
    import("./config.js"),
    import("../shared/logger.js"),
    import("./serviceManager.js"),
    import("./faults.js"),
    import("../shared/rootId.js"),
    import("./server.js"),
  ]);
  const config = await loadAgentConfig(configFile);
  const log = createRootLogger("quick-migrate-agent", config.logLevel);
  checkUser(configFile, config.allowRoot, log);
  const serviceManager = serviceManagerFromEnv(log);
  const faultSetting = process.env[FAULT_ENV];
  const faults = parseFaults(faultSetting, (fault, fields) => log.warn({ fault, ...fields }, "fault injection fired"));
  if (faultSetting) log.warn({ fault: faultSetting }, "fault injection is on: for tests only");
  if (config.insecure) log.warn({ listen: config.listen }, "insecure plaintext mode: for development only");
  // the root's identity, made at the first start: a root the agent cannot write is refused here, not at preflight
  const rootId = await ensureRootId(config.root);
  const server = await AgentGrpcServer.create(config, log, "rsync", faults);
  const metrics = await serveMetrics(config, server, log);
  const address = await server.listen();
  const configWatch = await watchConfig(configFile, server, log);
  reloadOnSighup(configFile, server, serviceManager, `serving on ${address}`, log);
  const pruning = prunePeriodically(server.ops.registry, config.keepFinished, log.child({ component: "prune" }));
  // graceful stop (server.stop: NOT_SERVING, new calls refused, operations in flight finished within
  // stopTimeout, renames always), exit 0; a second signal exits at once, 128 + its number
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, "second signal: exiting at once");
      process.exit(128 + (constants.signals[signal] ?? 0));
    }
    stopping = true;
    clearInterval(pruning);
    log.info({ signal }, "agent stopping");
    // the metrics stay served while operations drain: a scrape then shows the stop
    void Promise.all([configWatch.close(), server.stop(), serviceManager.stopping()]).then(async () => {
      await metrics?.close();
      log.info({ signal }, "agent stopped");
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  // "agent listening" and READY=1 only once the signals are handled: a stop or a reload may follow at once
  log.info({ address, root: config.root, rootId, stateDir: config.stateDir, tls: config.tls !== undefined, version: PACKAGE_VERSION }, "agent listening");
  await serviceManager.ready(`serving on ${address}`);
}

/**
 * Prometheus metrics on metrics.listen, when the config has it (a change takes effect at the next start);
 * bound before the gRPC port, so that a metrics address that cannot be bound stops the start.
 */
async function serveMetrics(config: AgentConfig, server: AgentGrpcServer, log: Logger): Promise<MetricsEndpoint | undefined> {
  if (!config.metrics || !server.metrics) return undefined;
  const { MetricsEndpoint } = await import("./metricsServer.js");
  const endpoint = await MetricsEndpoint.listen(config.metrics.listen, server.metrics, log.child({ component: "metrics" }));
  log.info({ address: endpoint.address }, "metrics listening");
  return endpoint;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The records of migrations that ended here more than `keepDays` ago go: now, and once a day. An
 * unfinished migration's record is never pruned. A failed round is logged and tried again the next day.
 */
function prunePeriodically(registry: Registry, keepDays: number, log: Logger): NodeJS.Timeout {
  const prune = () =>
    registry.pruneEnded(keepDays * DAY_MS, Date.now()).then(
      (ids) => {
        if (ids.length > 0) log.info({ migrationIds: ids, keepFinished: keepDays }, "records of ended migrations pruned");
      },
      (err: unknown) => log.warn({ err: describeError(err) }, "pruning records of ended migrations failed"),
    );
  void prune();
  const timer = setInterval(() => void prune(), DAY_MS);
  timer.unref();
  return timer;
}

/**
 * The agent runs as the aegir user, like Aegir's own backend: whoever can write a platform folder (the
 * aegir user, a site's PHP code) then gains nothing by racing symlinks under the agent. As root it
 * starts only when its config says so, and says so.
 */
function checkUser(configFile: string, allowRoot: boolean, log: Logger): void {
  if (process.getuid?.() !== 0) return;
  if (!allowRoot) {
    throw new QmError(
      "CONFIG_INVALID",
      `${configFile}: allowRoot: refusing to run as root: run the agent as the aegir user (User= in its systemd unit), or set allowRoot: true (see the README)`,
      { key: "allowRoot" },
    );
  }
  log.warn({ uid: 0 }, "running as root (allowRoot: true): run the agent as the aegir user instead");
}

/**
 * The config file is loaded again: if it is valid, what can change while running does (allowed clients,
 * the concurrency bound); if not, a log line says why and the running config stays. False when rejected.
 */
function reloadConfig(file: string, server: AgentGrpcServer, log: Logger): Promise<boolean> {
  return import("./config.js").then(({ loadAgentConfig }) => loadAgentConfig(file)).then(
    (next) => {
      server.updateConfig(next);
      return true;
    },
    (err: unknown) => {
      log.warn({ file, err: describeError(err) }, "config reload rejected: the running config stays in force");
      return false;
    },
  );
}

/** A changed config file is reloaded (reloadConfig). */
async function watchConfig(file: string, server: AgentGrpcServer, log: Logger): Promise<FSWatcher> {
  const { watch } = await import("chokidar");
  let timer: NodeJS.Timeout | undefined;
  const reload = () => reloadConfig(file, server, log);
  const watcher = watch(file, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 } });
  watcher.on("all", () => {
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), 150);
  });
  return watcher;
}

/**
 * SIGHUP (`systemctl reload`) reloads the config file and the TLS files at once, as their watchers do on
 * a change: for what a watcher cannot see (a symlinked directory above the files switched to another
 * release of them) and for an operator who wants it now. One reload at a time.
 */
function reloadOnSighup(file: string, server: AgentGrpcServer, serviceManager: ServiceManagerLike, status: string, log: Logger): void {
  let reloads = Promise.resolve();
  process.on("SIGHUP", () => {
    reloads = reloads.then(async () => {
      log.info({ signal: "SIGHUP" }, "reloading config and tls material");
      await serviceManager.reloading();
      const [config, tls] = await Promise.all([reloadConfig(file, server, log), server.reloadTls()]);
      log.info({ signal: "SIGHUP", config: config ? "applied" : "rejected", tls: tls ? "applied" : "rejected" }, "reload done");
      await serviceManager.ready(status);
    });
  });
}

async function parkedList(configFile: string, json: boolean): Promise<number> {
  const [{ loadAgentConfig }, { Registry }, { formatParkedList, listParked }] = await Promise.all([import("./config.js"), import("./registry.js"), import("./parked.js")]);
  const config = await loadAgentConfig(configFile);
  const list = await listParked(config.root, new Registry(config.stateDir));
  for (const u of list.unreadable) process.stderr.write(`quick-migrate-agent: cannot read ${u.file}: ${u.message}\n`);
  const out = json ? [JSON.stringify(list.entries, null, 2)] : formatParkedList(list);
  process.stdout.write(`${out.join("\n")}\n`);
  return list.unreadable.length > 0 ? 1 : 0;
}

async function parkedRestore(configFile: string, migrationId: string): Promise<number> {
  const [{ loadAgentConfig }, { Registry }, { formatRestoreReport, restoreExitCode, restoreParked }] = await Promise.all([
    import("./config.js"),
    import("./registry.js"),
    import("./parked.js"),
  ]);
  const config = await loadAgentConfig(configFile);
  // as root it would race a platform folder's symlinks with root's reach, and leave root-owned
  // records and folders that the service (the aegir user) can no longer change
  if (process.getuid?.() === 0 && !config.allowRoot) {
    throw new QmError("USAGE", `refusing to run as root: run it as the agent's user, e.g. sudo -u aegir quick-migrate-agent parked restore ${migrationId} (or set allowRoot: true in ${configFile})`, {
      key: "allowRoot",
    });
  }
  const report = await restoreParked(config.root, new Registry(config.stateDir), migrationId);
  process.stdout.write(`${formatRestoreReport(report).join("\n")}\n`);
  return restoreExitCode(report);
}

const program = new Command("quick-migrate-agent")
  .description("quick-migrate agent: renames, removes and rsyncs site folders on this web front, on the controller's command")
  .version(PACKAGE_VERSION)
  .option("-c, --config <file>", "agent config file", DEFAULT_AGENT_CONFIG)
  .configureHelp({ showGlobalOptions: true })
  .exitOverride()
  .action(async (opts: { config: string }) => serve(opts.config));

// `--config` is the program's option; commander also recognises it after the subcommand.
const globalConfig = (): string => (program.opts() as { config: string }).config;
let exitCode: number | undefined;

const parked = program
  .command("parked")
  .description("data dirs this agent's records say are not back in their old site folder; works while the service is stopped");
parked
  .command("list")
  .description("one line per data dir of every recorded migration that is parked or in the new site folder")
  .option("--json", "print one JSON array")
  .action(async (opts: { json?: boolean }) => {
    exitCode = await parkedList(globalConfig(), opts.json === true);
  });
parked
  .command("restore")
  .description("put every data dir of one migration back at its original path in the old site folder")
  .argument("<migration-id>", "the migration whose data dirs go back (see parked list)")
  .hook("preAction", (cmd) => {
    const [id] = cmd.processedArgs as [string];
    try {
      checkMigrationId(id);
    } catch (err) {
      usageError(cmd, `${(err as Error).message}: an id as \`quick-migrate-agent parked list\` shows it, e.g. ${EXAMPLE_MIGRATION_ID}`);
    }
  })
  .action(async (migrationId: string) => {
    exitCode = await parkedRestore(globalConfig(), migrationId);
  });

const health = program
  .command("health")
  .description("check this front's running agent as a Nagios/Icinga plugin: one status line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
  .option("--warn-ms <ms>", "WARNING when the agent answers slower than this", parseMs, 500)
  .option("--crit-ms <ms>", "CRITICAL when the agent has not answered within this (the deadline of the check)", parseMs, 2000)
  .option("--json", "one JSON object on stdout instead of the plugin lines")
  // a monitoring system calls it: a usage error is UNKNOWN (exit 3) on stdout, as the guidelines want
  .configureOutput({ outputError: () => undefined })
  .exitOverride((err) => {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.help") throw err;
    throw new PluginUsageError(oneLine(err.message));
  })
  .action(async (opts: { warnMs: number; critMs: number; json?: boolean }) => {
    const { checkLocalAgent } = await import("./healthCheck.js");
    const report = await checkLocalAgent(globalConfig(), { warnMs: opts.warnMs, critMs: opts.critMs });
    process.stdout.write(render(report, opts.json === true));
    exitCode = report.exitCode;
  });

addExamples(program, AGENT_EXAMPLES);
// a monitoring system reads health's usage errors: they are its UNKNOWN (below)
explainUsageErrors(program, [health]);

try {
  await program.parseAsync(process.argv);
  // a subcommand ends with its own code, once it has said what it found (see shared/exit.ts); the
  // service (no subcommand) keeps running
  if (exitCode !== undefined) {
    process.exitCode = exitCode;
    await exitOnceFlushed();
  }
} catch (err) {
  const code = (err as { code?: string }).code;
  if (code === "commander.helpDisplayed" || code === "commander.version") process.exit(0);
  if (err instanceof PluginUsageError) exitOnPluginUsageError((await import("./healthCheck.js")).AGENT_HEALTH_SERVICE, err, usageLine(health));
  if (typeof code === "string" && code.startsWith("commander.")) process.exit(2);
  process.stderr.write(`quick-migrate-agent: ${err instanceof QmError ? err.message : describeError(err)}\n`);
  process.exit(err instanceof QmError && USAGE_CODES.has(err.code) ? 2 : 1);
}
