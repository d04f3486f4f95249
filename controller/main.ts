// quick-migrate: the controller CLI on the hostmaster, called by hostmaster tasks and by hand.
// first: no inspector may open in this process (a signal, an --inspect), before anything else loads
import "../shared/noDebugger.js";
import { Command, InvalidArgumentError, Option } from "commander";
// Only what every command needs, and light, is imported here: each command loads its own modules in its
// action (gRPC, execa, zod and the like cost tens of milliseconds each), so that `status` pays for none
// of what `migrate` needs. Types cost nothing at run time.
import { QmError, describeError, errorCode } from "../shared/errors.js";
import { checkMigrationId, checkSiteName } from "../shared/names.js";
import { PACKAGE_VERSION } from "../shared/version.js";
import { exitOnceFlushed } from "../shared/exit.js";
import { PluginUsageError, exitOnPluginUsageError, parseMs, render } from "../shared/monitoringPlugin.js";
import { EXAMPLE_MIGRATION_ID, addExamples, explainUsageErrors, oneLine, usageError, usageLine } from "../shared/cliUsage.js";
import type { ControllerConfig } from "./config.js";
import { DEFAULT_CONTROLLER_CONFIG } from "./configFile.js";
import { OUTCOMES, type Reporter } from "./events.js";
import type { ControllerLog, Notices, OpenLog } from "./logSink.js";
import { HumanReporter, JsonReporter } from "./output.js";
import type { MigrationStatus } from "./status.js";
import { DEFAULT_CONCURRENCY, migrateUsageProblem, parseConcurrency } from "./batch.js";
import { CONTROLLER_EXAMPLES } from "./help.js";

interface CommonOptions {
  config: string;
  json?: boolean;
}

interface MigrateOptions extends CommonOptions {
  all?: boolean;
  concurrency?: number;
  to: string;
  from?: string;
  newUri?: string;
  fetchFrom?: string;
  keepMasterData?: boolean;
  dryRun?: boolean;
}

/** JSON lines (--json), or human lines: with colours and a live line on a terminal. */
function reporterFor(json: boolean | undefined): JsonReporter | HumanReporter {
  if (json) return new JsonReporter(process.stdout);
  // NO_COLOR (no-color.org) turns the colours off, not the live progress line
  const tty = process.stdout.isTTY === true;
  return new HumanReporter(process.stdout, tty && !process.env.NO_COLOR, tty);
}

/** A person watches: the human output is on a terminal. Then the log is not on the screen (logSink.ts). */
function screenOf(output: object): Notices | undefined {
  return process.stdout.isTTY === true && "notice" in output ? (output as Notices) : undefined;
}

/**
 * Opens the controller's log, once pino is loaded (only the commands that log load it): JSON lines on
 * stderr, or, when a person watches (`screen`), controller.log in each migration's journal folder with
 * the warnings that matter on the screen. Closed at the command's end.
 */
async function logOpener(): Promise<OpenLog> {
  const [{ createRootLogger }, { JournalLogSink }] = await Promise.all([import("../shared/logger.js"), import("./logSink.js")]);
  return (config, screen) => {
    const level = process.env.QM_LOG_LEVEL ?? config.logLevel;
    if (!screen) return { log: createRootLogger("quick-migrate", level, 2), close: () => undefined };
    const sink = new JournalLogSink(config.stateDir, screen);
    return { log: createRootLogger("quick-migrate", level, sink), close: () => sink.close() };
  };
}

async function migrate(uri: string, opts: MigrateOptions): Promise<number> {
  const started = Date.now();
  const reporter = reporterFor(opts.json);
  let logged: ControllerLog | undefined;
  try {
    const [{ loadControllerConfig }, { execute, planMigration, refuseLocked }, { checkExecutable, findSourcePlatform, platformArg }, openLog] = await Promise.all([
      import("./config.js"),
      import("./execution.js"),
      import("./platforms.js"),
      logOpener(),
    ]);
    const config = await loadControllerConfig(opts.config);
    logged = openLog(config, screenOf(reporter));
    const log = logged.log;
    const site = checkSiteName(uri, "site");
    const newSite = checkSiteName(opts.newUri ?? uri, "new site");
    // first: an unfinished migration of this site may have moved it already, so nothing else would make sense
    await refuseLocked(config.stateDir, [site, newSite]);
    const to = platformArg(opts.to, config.root, "target platform");
    const from = opts.from ? platformArg(opts.from, config.root, "source platform") : await findSourcePlatform(config.root, site);
    if (opts.fetchFrom && !config.fronts.some((f) => f.name === opts.fetchFrom)) {
      throw new QmError("USAGE", `--fetch-from ${opts.fetchFrom}: no such front in ${opts.config}`, { key: "fetch-from" });
    }
    await checkExecutable(config.rsync);
    const plan = planMigration(config, { site, newSite, from, to, fetchFrom: opts.fetchFrom, keepMasterData: opts.keepMasterData ?? false });
    return await execute(config, log, plan, { kind: "migrate", dryRun: opts.dryRun ?? false }, reporter);
  } catch (err) {
    return refused(reporter, err, started);
  } finally {
    logged?.close();
  }
}

/** what the person is told of an error that is no QmError of the catalogue */
const BUG = "internal error (a bug in quick-migrate; please report it)";

/** Exit 4 for a held lock, exit 2 for everything else that stops a command before it starts. */
function refused(reporter: Reporter, err: unknown, started: number, migrationId: string | null = null): number {
  const message = err instanceof QmError ? err.message : `${BUG}: ${describeError(err)} (its stack trace is on stderr)`;
  // a bug, before any journal: its stack is what a report needs, and there is no journal to keep it
  if (!(err instanceof QmError)) process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  const outcome = err instanceof QmError && err.code === "LOCKED" ? "locked" : "refused";
  reporter.event({ event: "result", migrationId, outcome, exitCode: OUTCOMES[outcome], message, code: errorCode(err), durationMs: Date.now() - started });
  return OUTCOMES[outcome];
}

/** resume and rollback: the plan and the events come from the journal. */
async function continueMigration(kind: "resume" | "rollback", id: string, opts: CommonOptions): Promise<number> {
  const started = Date.now();
  const reporter = reporterFor(opts.json);
  let logged: ControllerLog | undefined;
  try {
    checkMigrationId(id);
    const [{ loadControllerConfig }, { execute }, { Journal }, { planFromDocument, readStatus }, { checkExecutable }, openLog] = await Promise.all([
      import("./config.js"),
      import("./execution.js"),
      import("./journal.js"),
      import("./status.js"),
      import("./platforms.js"),
      logOpener(),
    ]);
    const config = await loadControllerConfig(opts.config);
    logged = openLog(config, screenOf(reporter));
    const log = logged.log;
    const { journal, document, events } = await Journal.load(config.stateDir, id);
    const { plan } = planFromDocument(document, journal.dir);
    const status = await readStatus(config.stateDir, id);
    if (status.state === "migrated" || status.state === "rolled-back") {
      // the same refusal, and code, as the runner's when it finds the migration finished once it holds the lock
      throw new QmError("MIGRATION_FINISHED", `migration ${id} is finished (${status.state}): nothing to ${kind}`, { key: id });
    }
    if (status.state === "running") throw new QmError("LOCKED", `migration ${id} is running: wait for it, or stop its controller first`, { key: id });
    await checkExecutable(config.rsync);
    return await execute(config, log, plan, { kind, journal, events }, reporter);
  } catch (err) {
    return refused(reporter, err, started, err instanceof QmError && (err.code === "LOCKED" || err.code === "MIGRATION_FINISHED") ? id : null);
  } finally {
    logged?.close();
  }
}

async function status(id: string | undefined, opts: CommonOptions): Promise<number> {
  try {
    const [{ loadControllerConfig }, { listStatuses, readStatus }] = await Promise.all([import("./config.js"), import("./status.js")]);
    const config = await loadControllerConfig(opts.config);
    const list: MigrationStatus[] = id ? [await readStatus(config.stateDir, checkMigrationId(id))] : await listStatuses(config.stateDir);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(list)}\n`);
      return 0;
    }
    if (list.length === 0) process.stdout.write("no migrations\n");
    for (const s of list) {
      const rename = s.site === s.newSite ? s.site : `${s.site} → ${s.newSite}`;
      process.stdout.write(`${s.id}  ${s.state.padEnd(15)} ${rename}: ${s.from} → ${s.to}  (last step: ${s.lastStep ?? "-"})\n`);
      for (const [host, pos] of Object.entries(s.hosts)) process.stdout.write(`    ${host.padEnd(12)} ${pos}\n`);
      if (s.state === "migrated") continue;
      if (s.message) process.stdout.write(`    ${s.message}\n`);
      for (const f of s.failures) {
        const [first, ...more] = f.detail.split("\n");
        process.stdout.write(`    ${f.host}: ${f.step} failed: ${first}\n`);
        // a hook's last lines only for the one migration asked about: a list of every migration stays short
        if (id) for (const l of more) process.stdout.write(`      │ ${l}\n`);
      }
    }
    return 0;
  } catch (err) {
    process.stderr.write(`quick-migrate: ${describeError(err)}\n`);
    return OUTCOMES.refused;
  }
}

/** `agents`: every front at once, each within its own bound; exit 0 when every agent answered, 1 when one did not, 2 for a bad config. */
async function agents(opts: CommonOptions): Promise<number> {
  try {
    const [{ loadControllerConfig }, { channelCredentials, deadlinesFrom }, { formatInventory, inventoryExitCode, inventoryOf, realProbe }] = await Promise.all([
      import("./config.js"),
      import("./agentConnection.js"),
      import("./inventory.js"),
    ]);
    const config = await loadControllerConfig(opts.config);
    const credentials = channelCredentials(config);
    const deadlines = deadlinesFrom(config);
    const list = await Promise.all(config.fronts.map((f) => inventoryOf(f, realProbe(f, config, credentials, deadlines))));
    process.stdout.write(opts.json ? `${JSON.stringify(list)}\n` : `${formatInventory(list).join("\n")}\n`);
    return inventoryExitCode(list);
  } catch (err) {
    process.stderr.write(`quick-migrate: ${describeError(err)}\n`);
    return OUTCOMES.refused;
  }
}

// Output is for whoever reads it, not something a migration depends on: a reader that went away (a
// hostmaster task that was ended, `| head`) must not stop the controller in the middle of a step. What
// is not printed is in the journal (`quick-migrate status <id>`).
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
  });
}

const program = new Command("quick-migrate")
  .description("quick-migrate: migrate an Aegir site to another platform by renaming its data dirs in place on every web front")
  .version(PACKAGE_VERSION)
  .exitOverride();

/** A site name or migration id that is not one, as a usage error's text; undefined when all are. */
function nameProblem(check: () => unknown): string | undefined {
  try {
    check();
    return undefined;
  } catch (err) {
    if (err instanceof QmError && err.code === "INVALID_NAME") return err.message;
    throw err;
  }
}

/** status, resume, rollback: the id, when given, is one (checked before anything is loaded or read). */
function checkIdArgument(cmd: Command): void {
  const [id] = cmd.processedArgs as [string | undefined];
  const problem = id === undefined ? undefined : nameProblem(() => checkMigrationId(id));
  if (problem !== undefined) usageError(cmd, `${problem}: an id as \`quick-migrate status\` lists it, e.g. ${EXAMPLE_MIGRATION_ID}`);
}

const configOption = () => new Option("-c, --config <file>", "controller config").default(DEFAULT_CONTROLLER_CONFIG);

program
  .command("migrate")
  .description("migrate <uri>, or every site of a platform (--all --from), to another platform")
  .argument("[uri]", "the site's URI (its folder name under sites/)")
  .option("--all", "every site of the --from platform, each its own migration, journal, lock and exit code")
  .option("--concurrency <n>", `with --all: sites migrated at once (default ${DEFAULT_CONCURRENCY})`, (v: string) => {
    try {
      return parseConcurrency(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  })
  .requiredOption("--to <platform>", "target platform, relative to the root or absolute under it")
  .option("--from <platform>", "source platform (default: the one platform on the hostmaster holding the site)")
  .option("--new-uri <uri>", "rename the site on the way")
  .option("--fetch-from <front>", "front whose site folder is fetched (default: the hostmaster's own front, else the first front)")
  .option("--keep-master-data", "keep the hostmaster's parked stale copy of the data dirs instead of deleting it")
  .addOption(configOption())
  .option("--dry-run", "run preflight and print the plan per host; change nothing")
  .option("--json", "one JSON object per line on stdout")
  .exitOverride()
  .hook("preAction", (cmd) => {
    const [uri] = cmd.processedArgs as [string | undefined];
    const opts = cmd.opts<MigrateOptions>();
    const problem = migrateUsageProblem(uri, opts) ?? nameProblem(() => [uri !== undefined && checkSiteName(uri, "site"), opts.newUri !== undefined && checkSiteName(opts.newUri, "new site")]);
    if (problem !== undefined) usageError(cmd, problem);
  })
  .action(async (uri: string | undefined, opts: MigrateOptions) => {
    if (!opts.all) {
      process.exitCode = await migrate(uri as string, opts);
      return;
    }
    const [{ migrateAll }, openLog] = await Promise.all([import("./batchRun.js"), logOpener()]);
    process.exitCode = await migrateAll({ ...opts, from: opts.from as string }, (config, output) => openLog(config, screenOf(output)));
  });

program
  .command("status")
  .description("every migration (or one): state, last step, each host's position")
  .argument("[id]", "a migration id")
  .addOption(configOption())
  .option("--json", "one JSON array on stdout")
  .exitOverride()
  .hook("preAction", checkIdArgument)
  .action(async (id: string | undefined, opts: CommonOptions) => {
    process.exitCode = await status(id, opts);
  });

program
  .command("agents")
  .description("every front's agent: reachable, versions, root and free space, health, certificate expiry (exit 1 when one does not answer)")
  .addOption(configOption())
  .option("--json", "one JSON array on stdout")
  .exitOverride()
  .action(async (opts: CommonOptions) => {
    process.exitCode = await agents(opts);
  });

for (const kind of ["resume", "rollback"] as const) {
  program
    .command(kind)
    .description(kind === "resume" ? "continue an interrupted migration from its journal" : "undo an interrupted migration (refused after the point of no return)")
    .argument("<id>", "the migration id (see status)")
    .addOption(configOption())
    .option("--json", "one JSON object per line on stdout")
    .exitOverride()
    .hook("preAction", checkIdArgument)
    .action(async (id: string, opts: CommonOptions) => {
      process.exitCode = await continueMigration(kind, id, opts);
    });
}

const health = program
  .command("health")
  .description("check every front's agent as a Nagios/Icinga plugin: one status line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
  .addOption(configOption())
  .option("--warn-ms <ms>", "WARNING when an agent answers slower than this", parseMs, 500)
  .option("--crit-ms <ms>", "CRITICAL when an agent has not answered within this (the deadline of each check)", parseMs, 2000)
  .option("--json", "one JSON object on stdout instead of the plugin lines")
  // a monitoring system calls it: a usage error is UNKNOWN (exit 3) on stdout, as the guidelines want
  .configureOutput({ outputError: () => undefined })
  .exitOverride((err) => {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.help") throw err;
    throw new PluginUsageError(oneLine(err.message));
  })
  .action(async (opts: CommonOptions & { warnMs: number; critMs: number }) => {
    const { checkFronts } = await import("./healthCheck.js");
    const report = await checkFronts(opts.config, { warnMs: opts.warnMs, critMs: opts.critMs });
    process.stdout.write(render(report, opts.json === true));
    process.exitCode = report.exitCode;
  });

addExamples(program, CONTROLLER_EXAMPLES);
// a monitoring system reads health's usage errors: they are its UNKNOWN (below)
explainUsageErrors(program, [health]);

/**
 * Runs the command. Not top-level awaits: the bundle bin/ runs is a CommonJS script (controller/start.ts
 * keeps a V8 code cache of it), which has none.
 */
async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
    // the command has done its work and said so (see shared/exit.ts)
    await exitOnceFlushed();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "commander.helpDisplayed" || code === "commander.version" || code === "commander.help") process.exit(0);
    if (err instanceof PluginUsageError) exitOnPluginUsageError((await import("./healthCheck.js")).HEALTH_SERVICE, err, usageLine(health));
    const message = oneLine(describeError(err));
    if (process.argv.includes("--json")) {
      // hostmaster tasks parse stdout: a usage error ends with a result event like any refusal
      new JsonReporter(process.stdout).event({ event: "result", migrationId: null, outcome: "refused", exitCode: OUTCOMES.refused, message, code: "USAGE", durationMs: 0 });
    } else if (typeof code !== "string" || !code.startsWith("commander.")) {
      process.stderr.write(`quick-migrate: ${message}\n`);
    }
    process.exit(OUTCOMES.refused);
  }
}

void main();
