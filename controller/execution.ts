// Running migrations with the real edges: one channel per front's agent and one rsync tunnel for the
// whole process (one migration, or every site of `migrate --all`), the hooks, the metrics textfile,
// and the cancellation a signal brings. main.ts and batchRun.ts both run their migrations here.
import { randomBytes } from "node:crypto";
import pLimit from "p-limit";
import { QmError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { checkMigration } from "../shared/migration.js";
import { adaptReceiveWindows } from "../shared/receiveWindow.js";
import { SiteTree } from "../shared/siteTree.js";
import { AgentConnection, type AgentConnectionLike, channelCredentials, deadlinesFrom, keepaliveMs } from "./agentConnection.js";
import { type ControllerConfig, MASTER } from "./config.js";
import type { Reporter } from "./events.js";
import { FaultPlan } from "./faults.js";
import { HOOK_NAMES, type HookName, HookRunner } from "./hooks.js";
import { RunFigures } from "./metricsTextfile.js";
import { type Plan, buildPlan } from "./plan.js";
import { MigrationRunner, type RunMode, type RunResult } from "./runner.js";
import { SiteLock } from "./siteLock.js";
import { describeLockHolder } from "./status.js";
import { RsyncTunnel } from "./tunnel.js";

export function newMigrationId(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

/** LOCKED when an unfinished migration holds one of these sites: it may have moved the site already. */
export async function refuseLocked(stateDir: string, sites: Iterable<string>): Promise<void> {
  for (const name of new Set(sites)) {
    const holder = await SiteLock.holder(stateDir, name);
    if (holder) throw new QmError("LOCKED", `site ${name} is locked by ${await describeLockHolder(stateDir, holder)}`, { key: name });
  }
}

export interface MigrationRequest {
  readonly site: string;
  readonly newSite: string;
  readonly from: string;
  readonly to: string;
  readonly fetchFrom?: string | undefined;
  readonly keepMasterData: boolean;
}

/** A new migration's plan, under a new id. */
export function planMigration(config: ControllerConfig, r: MigrationRequest): Plan {
  const migration = checkMigration({ id: newMigrationId(), from: r.from, site: r.site, to: r.to, newSite: r.newSite, dataDirs: config.dataDirs });
  return buildPlan({
    migration,
    master: MASTER,
    fronts: config.fronts.map((f) => ({ name: f.name, local: f.local })),
    ...(r.fetchFrom ? { fetchFrom: r.fetchFrom } : {}),
    hooks: new Set(HOOK_NAMES.filter((h: HookName) => config.hooks[h] !== undefined)),
    keepMasterData: r.keepMasterData,
  });
}

/**
 * One connection per front's agent and one rsync tunnel, made once and shared by every migration the
 * process runs (each gRPC channel multiplexes the calls of all of them); closed once at the end.
 */
export class AgentChannels {
  readonly fronts: ReadonlyMap<string, AgentConnectionLike>;
  readonly tunnel: RsyncTunnel;
  /** the metrics textfile is read, added to and written again by each run: one at a time */
  private textfileWrites: Promise<void> = Promise.resolve();

  constructor(
    readonly config: ControllerConfig,
    readonly log: Logger,
  ) {
    const credentials = channelCredentials(config);
    const deadlines = deadlinesFrom(config);
    // the fan-out bounds (fanOut.calls, fanOut.rsync) hold over every front and every migration of the process
    const calls = pLimit(config.fanOut.calls);
    // before the first connection is made: each one's receive window then follows its link
    adaptReceiveWindows(keepaliveMs(deadlines), log.child({ component: "window" }));
    this.fronts = new Map<string, AgentConnectionLike>(config.fronts.map((f) => [f.name, new AgentConnection(f, credentials, deadlines, calls)]));
    this.tunnel = new RsyncTunnel(config.rsync, log.child({ component: "tunnel" }), deadlines.unresponsiveMs, pLimit(config.fanOut.rsync), deadlines.rsyncMs);
  }

  close(): void {
    for (const f of this.fronts.values()) f.close();
  }

  /**
   * Runs a plan. `cancel` cancels the forward run (its running hook or rsync: the step fails and the
   * failure policy applies); `cancelUndo` cancels the undo work of a rollback too.
   */
  async run(plan: Plan, mode: RunMode, reporter: Reporter, cancel: Cancellation): Promise<RunResult> {
    const { config, log } = this;
    const m = plan.migration;
    for (const f of plan.fronts) {
      if (!config.fronts.some((c) => c.name === f.name)) {
        throw new QmError("USAGE", `front ${f.name} of migration ${m.id} is not in the config any more`, { host: f.name });
      }
    }
    // the run's figures for metrics.textfile: its events pass through on their way to the reporter
    const figures = new RunFigures(reporter);
    const faults = FaultPlan.fromEnv(process.env);
    const runner = new MigrationRunner({
      plan,
      mode,
      root: config.root,
      stateDir: config.stateDir,
      fronts: this.fronts,
      master: new SiteTree(config.root),
      hooks: new HookRunner(config.hooks, log.child({ component: "hooks", migrationId: m.id }), { timeoutMs: config.timeouts.hook * 1000 }),
      tunnel: this.tunnel,
      reporter: figures,
      log: log.child({ component: "runner", migrationId: m.id }),
      signal: cancel.forward,
      undoSignal: cancel.undo,
      ...(faults ? { faults } : {}),
    });
    const result = await runner.run();
    const write = this.textfileWrites.then(() => figures.writeTo(config.metrics?.textfile, mode.kind, m, log.child({ component: "metrics", migrationId: m.id })));
    this.textfileWrites = write;
    await write;
    // peak memory: the rsync tunnel streams with backpressure, so this must not grow with what is pushed
    log.info({ migrationId: m.id, outcome: result.outcome, maxRssKb: process.resourceUsage().maxRSS }, "controller finished");
    return result;
  }
}

/**
 * What a signal does to one migration: the first cancels the forward run, and the rollback that
 * follows still runs its undo hooks; a second (the first, for `rollback`) cancels the undo work too,
 * and the rollback stops, resumable.
 */
export class Cancellation {
  private readonly forwardCtl = new AbortController();
  private readonly undoCtl = new AbortController();

  constructor(private readonly rollbackMode = false) {}

  get forward(): AbortSignal {
    return this.forwardCtl.signal;
  }

  get undo(): AbortSignal {
    return this.undoCtl.signal;
  }

  /** Returns whether this signal cancelled the undo work too. */
  interrupt(signal: string): boolean {
    const reason = new QmError("CANCELLED", `interrupted by ${signal}`);
    const undoToo = this.rollbackMode || this.forwardCtl.signal.aborted;
    if (undoToo) this.undoCtl.abort(reason);
    this.forwardCtl.abort(reason);
    return undoToo;
  }
}

/** Calls `onSignal` on each SIGINT and SIGTERM until the returned function is called. */
export function onSignals(onSignal: (signal: string) => void): () => void {
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/** One migration, resume or rollback, with its own channels; signals cancel it (see Cancellation). */
export async function execute(config: ControllerConfig, log: Logger, plan: Plan, mode: RunMode, reporter: Reporter): Promise<number> {
  const channels = new AgentChannels(config, log);
  const cancel = new Cancellation(mode.kind === "rollback");
  const off = onSignals((signal) => {
    if (cancel.interrupt(signal)) log.warn({ signal }, "interrupted: cancelling the rollback");
    else log.warn({ signal }, "interrupted: cancelling the running step; the rollback still runs (a second signal cancels it)");
  });
  try {
    return (await channels.run(plan, mode, reporter, cancel)).exitCode;
  } finally {
    off();
    channels.close();
  }
}
