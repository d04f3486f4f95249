// The failure policy of a migration: migrate, resume and rollback, and what happens when a step fails.
// What each step does and undoes is the step table's (steps.ts); running it on every host is FanOut's;
// journaling and events are the Recorder's. What to undo is always read back from the journal, so a
// run that resumes or rolls back after a crash does exactly what the uninterrupted run would have done.
import { QmError, describeError, errorCode } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { type Clock, systemClock } from "./clock.js";
import { type ClusterDeps, ClusterIO, PreflightRefused } from "./clusterIO.js";
import { type HookGroupEvent, OUTCOMES, type Outcome, type JournaledEvent, type Reporter } from "./events.js";
import { FanOut } from "./fanOut.js";
import type { FaultPlan } from "./faults.js";
import { Journal } from "./journal.js";
import { type JournalEvent, replay } from "./journalState.js";
import type { Plan, PlanStep } from "./plan.js";
import { type EndedBy, type ProcessGroupsLike, processGroups } from "./processGroup.js";
import { type Every, ProgressMeter } from "./progress.js";
import { Recorder } from "./recorder.js";
import { POINT_OF_NO_RETURN, STEP_NAMES, type StepName, isPastPointOfNoReturn, stepDef } from "./steps.js";
import type { StepTally } from "./tally.js";

export type RunMode =
  | { readonly kind: "migrate"; readonly dryRun: boolean }
  | { readonly kind: "resume"; readonly journal: Journal; readonly events: readonly JournalEvent[] }
  | { readonly kind: "rollback"; readonly journal: Journal; readonly events: readonly JournalEvent[] };

export interface RunnerDeps extends ClusterDeps {
  readonly mode: RunMode;
  readonly reporter: Reporter;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  /** attempts for steps after the point of no return (roll forward only) */
  readonly forwardAttempts?: number;
  readonly retryDelayMs?: number;
  readonly faults?: FaultPlan;
  readonly clock?: Clock;
  /** the progress timer (default: a real interval) */
  readonly every?: Every;
  /** where resume and rollback end the hooks a killed controller left running (default: the real ones) */
  readonly groups?: ProcessGroupsLike;
}

export interface RunResult {
  readonly outcome: Outcome;
  readonly exitCode: number;
  readonly message: string;
}

/** A step that did not get every host's acknowledgement. */
class StepFailed extends Error {
  override readonly cause: unknown;

  constructor(
    readonly step: StepName,
    tally: StepTally,
  ) {
    const [host, err] = tally.firstFailure() ?? ["?", new Error("failed")];
    super(`${step} failed on ${host}: ${describeError(err)}`);
    this.cause = err;
  }
}

export class MigrationRunner {
  private readonly rec: Recorder;
  private readonly io: ClusterIO;
  private readonly fan: FanOut;
  private readonly clock: Clock;
  private readonly started: number;
  private readonly plan: Plan;

  constructor(private readonly deps: RunnerDeps) {
    const { mode, plan } = deps;
    this.plan = plan;
    this.clock = deps.clock ?? systemClock;
    this.started = this.clock.now();
    this.rec = new Recorder(deps.reporter, plan.migration.id, mode.kind === "migrate" ? undefined : mode);
    const progress = new ProgressMeter(plan.migration.id, (e) => this.rec.show(e), this.clock, deps.every);
    this.io = new ClusterIO(deps, this.rec, mode.kind === "migrate" && mode.dryRun, progress);
    this.fan = new FanOut(this.rec, this.clock, deps.log, (step, host, undo) => deps.faults?.afterAck(step, host, undo), progress);
  }

  private get id(): string {
    return this.plan.migration.id;
  }

  async run(): Promise<RunResult> {
    try {
      return await this.runMode();
    } finally {
      // a batch runs many migrations in one process: each one's event log is closed when it is over
      await this.rec.journal?.close().catch(() => undefined);
    }
  }

  private async runMode(): Promise<RunResult> {
    const { mode } = this.deps;
    if (mode.kind === "migrate") {
      await this.emitPlan(mode.dryRun);
      return this.migrate(mode.dryRun);
    }
    try {
      const refused = await this.claim(mode.kind);
      if (refused) return refused;
      await this.emitPlan(false);
      const orphans = await this.endUnendedHooks(mode.kind);
      if (orphans) return orphans;
      return mode.kind === "resume" ? await this.resume() : await this.rollbackCommand();
    } catch (err) {
      // not a host's failure: the lock or the journal could not be written (a full state dir), say. The
      // migration was part-way before this run, so this is never "nothing was changed"
      const message = `${mode.kind} stopped: ${describeError(err)}; when it is fixed run \`quick-migrate ${mode.kind} ${this.id}\` again`;
      // without the lock, the journal is not this run's to write
      if (!this.io.holdsLock) return this.report("needs-attention", message, err);
      return this.finish("needs-attention", message, undefined, err);
    }
  }

  /**
   * resume and rollback: takes over the lock, then reads the journal again under it (another run may
   * have ended since it was read). Nothing is journaled until the lock is held, so a run that loses
   * the race for it leaves the journal as it was.
   */
  private async claim(kind: "resume" | "rollback"): Promise<RunResult | undefined> {
    const pastPointOfNoReturn = (): RunResult | undefined =>
      kind === "rollback" && replay(this.rec.events).pastPointOfNoReturn
        ? this.refuse("PAST_POINT_OF_NO_RETURN", `migration ${this.id} is past the point of no return (${POINT_OF_NO_RETURN}): only \`quick-migrate resume ${this.id}\` can finish it`)
        : undefined;
    const early = pastPointOfNoReturn();
    if (early) return early;
    try {
      await this.io.takeOverLock();
    } catch (err) {
      if (err instanceof QmError && err.code === "LOCKED") return this.report("locked", err.message, err);
      throw err;
    }
    const { events } = await Journal.load(this.deps.stateDir, this.id);
    this.rec.reload(events);
    const outcome = replay(events).result?.outcome;
    if (outcome === "migrated" || outcome === "rolled-back") {
      await this.io.releaseLock();
      return this.refuse("MIGRATION_FINISHED", `migration ${this.id} is finished (${outcome}): nothing to ${kind}`);
    }
    const late = pastPointOfNoReturn();
    if (late) await this.io.handBackLock();
    return late;
  }

  private async migrate(dryRun: boolean): Promise<RunResult> {
    const [preflight, ...rest] = this.plan.steps;
    const tally = await this.fan.run("preflight", preflight?.hosts ?? [], (host) => this.work(preflight as PlanStep, false)(host));
    if (!tally.ok) {
      // one "host: problem" each, so that every problem names its host once
      const problems = [...tally.failed].flatMap(([host, err]) =>
        err instanceof PreflightRefused ? err.problems.map((p) => `${host}: ${p.message}`) : [`${host}: ${describeError(err)}`],
      );
      return this.finish("refused", `preflight refused: ${problems.join("; ")}`, undefined, tally.firstFailure()?.[1]);
    }
    if (dryRun) return this.finish("dry-run", "preflight passed on every host; nothing was changed");
    return this.forward(rest);
  }

  private async resume(): Promise<RunResult> {
    const from = replay(this.rec.events).resumeFrom;
    if (!from) {
      // killed after its last step and before its result: only the lock taken over just now is left
      await this.io.releaseLock();
      return this.finish("migrated", `${this.plan.migration.site} is on ${this.plan.migration.to}; nothing was left to do`);
    }
    // a front's operator may have put the data back meanwhile (`parked restore`): then only back
    const fronts = await this.io.frontsRecords();
    if (fronts.unanswered.length > 0) {
      const who = fronts.unanswered.map(({ host, err }) => `${host}: ${describeError(err)}`).join("; ");
      return this.finish("needs-attention", `resume needs every front to answer before it goes on, and ${who}; when it is back run \`quick-migrate resume ${this.id}\` again`, undefined, fronts.unanswered[0]?.err);
    }
    if (fronts.restored.length > 0) return this.rollBackRestored(fronts.restored);
    await this.rec.note({ event: "resume", migrationId: this.id, step: from });
    if (fronts.rolledBack.length > 0) {
      // a rollback that stopped part-way put these fronts all the way back, and their agents accept the
      // migration again only after a new preflight (registering it) passes there; if one does not, it goes back
      const tally = await this.fan.run("preflight", fronts.rolledBack, this.work({ name: "preflight" }, false));
      if (!tally.ok) {
        const failure = new StepFailed("preflight", tally);
        return this.failed("preflight", failure.cause, `${failure.message} (a new preflight of the fronts the rollback had put back)`);
      }
    }
    return this.forward(this.plan.steps.filter((s) => STEP_NAMES.indexOf(s.name) >= STEP_NAMES.indexOf(from)));
  }

  /** resume found data put back by `parked restore` on a front: the migration goes back on every host. */
  private async rollBackRestored(restored: ReadonlyArray<{ host: string; at: string }>): Promise<RunResult> {
    const why = `${restored.map((r) => `${r.host}'s data was put back in the old site folder by \`quick-migrate-agent parked restore\` (${r.at})`).join("; ")}, so the migration can only go back`;
    const cause = new QmError("RESTORED_ON_FRONT", why, { host: restored[0]?.host ?? "" });
    if (replay(this.rec.events).pastPointOfNoReturn) {
      return this.finish("needs-attention", `${why}, but it is past the point of no return on other fronts: put the data of ${restored.map((r) => r.host).join(", ")} back into the new site folder by hand, then run \`quick-migrate resume ${this.id}\``, undefined, cause);
    }
    await this.rec.note({ event: "rollback", migrationId: this.id, reason: "restored-on-front" });
    const stuck = await this.rollback();
    if (stuck) return this.finish("needs-attention", `${why}; rollback stopped: ${describeError(stuck)}; when it is fixed run \`quick-migrate rollback ${this.id}\``, undefined, stuck.cause);
    return this.finish("rolled-back", `${why}: rolled back instead of resumed: ${this.plan.migration.site} is on ${this.plan.migration.from}`, undefined, cause);
  }

  private async rollbackCommand(): Promise<RunResult> {
    await this.rec.note({ event: "rollback", migrationId: this.id });
    const stuck = await this.rollback();
    if (stuck) return this.finish("needs-attention", `rollback stopped: ${describeError(stuck)}; when it is fixed run \`quick-migrate rollback ${this.id}\` again`, undefined, stuck.cause);
    return this.finish("rolled-back", `${this.plan.migration.site} is back on ${this.plan.migration.from}`, 0);
  }

  /**
   * resume and rollback, once the lock is theirs (so the controller that ran the migration is gone): a
   * hook it started may still run — an orphaned updatedb would change the database behind the rollback's
   * back. Each hook the journal does not see end is ended (its whole process group) before anything is
   * done, and said so. When one cannot be ended, nothing is done.
   */
  private async endUnendedHooks(kind: "resume" | "rollback"): Promise<RunResult | undefined> {
    const groups = this.deps.groups ?? processGroups;
    for (const h of replay(this.rec.events).unendedHooks) {
      const about = { migrationId: this.id, step: h.step, hook: h.hook, pgid: h.pgid, ...(h.undo ? { undo: true as const } : {}) };
      let endedBy: EndedBy | "gone" = "gone";
      if (groups.running(h)) {
        this.deps.log.warn({ ...about, shownBy: "orphaned-hook" }, "a hook of the interrupted run is still running: ending it");
        try {
          endedBy = await groups.end(h);
        } catch (err) {
          const why = `hook ${h.hook} of the interrupted run (process group ${h.pgid}) is still running and could not be ended: ${describeError(err)}`;
          return this.finish("needs-attention", `${why}; nothing was done: end it, then run \`quick-migrate ${kind} ${this.id}\` again`, undefined, err);
        }
        await this.rec.emit({ event: "orphaned-hook", ...about, endedBy });
      }
      await this.rec.note({ event: "hook-ended", ...about, endedBy } satisfies HookGroupEvent);
    }
    return undefined;
  }

  private async forward(steps: readonly PlanStep[]): Promise<RunResult> {
    for (const step of steps) {
      this.deps.faults?.beforeStep(step.name);
      // cancelled (SIGINT/SIGTERM) during a step that could not be cut short: no further step starts
      const cancelled = this.deps.signal?.aborted ? this.deps.signal.reason : undefined;
      if (cancelled !== undefined) return this.failed(step.name, cancelled, `${describeError(cancelled)} before ${step.name}`);
      let failure: StepFailed | undefined;
      try {
        failure = await this.execute(step);
      } catch (err) {
        // not a host's failure (those are in the tally): the journal could not be written, say
        return this.failed(step.name, err, `${step.name} failed: ${describeError(err)}`);
      }
      if (failure) return this.failed(step.name, failure.cause, failure.message);
    }
    const m = this.plan.migration;
    return this.finish("migrated", `${m.site} is on ${m.to}${m.newSite === m.site ? "" : ` as ${m.newSite}`}`);
  }

  /** Runs one step on its hosts; from the point of no return on, the hosts that failed are tried again. */
  private async execute(step: PlanStep): Promise<StepFailed | undefined> {
    if (step.skipped) {
      // nothing is sent to any host between the two: given together, they go out with one fsync
      await Promise.all([
        this.rec.emit({ event: "step-start", migrationId: this.id, step: step.name }),
        this.rec.emit({ event: "step-end", migrationId: this.id, step: step.name, ok: true, acked: 0, expected: 0, skipped: step.skipped, durationMs: 0 }),
      ]);
      return undefined;
    }
    const attempts = isPastPointOfNoReturn(step.name) ? (this.deps.forwardAttempts ?? 3) : 1;
    const tally = await this.fan.run(step.name, step.hosts, this.work(step, false), { attempts, retryDelayMs: this.deps.retryDelayMs ?? 1000 });
    return tally.ok ? undefined : new StepFailed(step.name, tally);
  }

  /** A step's part on one host, forward or undoing, as the step table says. */
  private work(step: Pick<PlanStep, "name">, undo: boolean): (host: string) => Promise<string> {
    const def = stepDef(step.name);
    const run = undo ? def?.undo?.run : def?.run;
    if (!run) throw new QmError("INTERNAL", `${step.name} has no ${undo ? "undo" : "run"}`, { step: step.name });
    const io = this.io.bind(step.name, undo);
    return (host) => run(io, host);
  }

  // ---- failure and undo -------------------------------------------------------------------------

  private async failed(step: StepName, cause: unknown, why: string): Promise<RunResult> {
    this.deps.log.error({ step, err: cause, shownBy: "result" }, "step failed");
    if (step === "lock" && cause instanceof QmError && cause.code === "LOCKED") {
      // nothing was done: the journal of this attempt goes, and the other migration's lock stays
      await this.rec.discard();
      return this.finish("locked", cause.message, undefined, cause);
    }
    // past the point of no return once any host was sent a step from there on (not merely about to be)
    if (replay(this.rec.events).pastPointOfNoReturn) {
      return this.finish("needs-attention", `${why}; past the point of no return: fix the cause, then run \`quick-migrate resume ${this.id}\``, undefined, cause);
    }
    const stuck = await this.rollback();
    if (stuck) {
      return this.finish(
        "needs-attention",
        `${why}; rollback stopped: ${describeError(stuck)}; when it is fixed run \`quick-migrate rollback ${this.id}\` (or \`resume\` to go forward)`,
        undefined,
        stuck.cause,
      );
    }
    return this.finish("rolled-back", `${why}; rolled back: ${this.plan.migration.site} is on ${this.plan.migration.from}`, undefined, cause);
  }

  /**
   * Undoes, latest step first, what the journal says was sent to each host and not yet undone. Every
   * undo is idempotent: on a host that failed part-way it puts back what was done, where nothing
   * happened it does nothing. Returns why it stopped, or undefined when everything is back.
   */
  private async rollback(): Promise<Error | undefined> {
    for (;;) {
      const next = replay(this.rec.events).undoPlan[0];
      if (!next) return undefined;
      this.deps.faults?.beforeStep(`undo:${next.step}`);
      let tally: StepTally;
      try {
        tally = await this.fan.run(next.step, next.hosts, this.work({ name: next.step }, true), { undo: true });
      } catch (err) {
        // the journal could not be written: no undo goes on unrecorded
        return new Error(`undo of ${next.step} stopped: ${describeError(err)}`, { cause: err });
      }
      if (!tally.ok) {
        const failure = new StepFailed(next.step, tally);
        return Object.assign(failure, { message: `undo of ${failure.message}` });
      }
    }
  }

  // ---- events -----------------------------------------------------------------------------------

  private async emitPlan(dryRun: boolean): Promise<void> {
    const { plan } = this;
    const m = plan.migration;
    await this.rec.emit({
      event: "plan",
      migrationId: m.id,
      site: m.site,
      newSite: m.newSite,
      from: m.from,
      to: m.to,
      dryRun,
      fetchFrom: plan.fetchFrom,
      steps: plan.steps.map((s) => ({ name: s.name, hosts: s.hosts, does: s.does, undo: s.undo, ...(s.skipped ? { skipped: s.skipped } : {}), moves: s.moves })),
    });
  }

  /**
   * The end of a run that held the lock: a finished migration's lock is removed; one that needs
   * attention stays the migration's, held by no process. Then the result is printed and journaled; a
   * result that cannot be journaled (a full state dir) is printed all the same.
   */
  private async finish(outcome: Outcome, message: string, exitCode: number = OUTCOMES[outcome], cause?: unknown): Promise<RunResult> {
    try {
      if (outcome === "migrated" || outcome === "rolled-back") await this.io.releaseLock();
      if (outcome === "needs-attention") await this.io.handBackLock();
    } catch (err) {
      this.deps.log.error({ err }, "lock not released");
    }
    const e = this.resultEvent(outcome, message, exitCode, cause);
    try {
      await this.rec.emit(e);
    } catch (err) {
      this.deps.log.error({ err }, "result not journaled");
    }
    return { outcome, exitCode, message };
  }

  /** A run that did nothing and held no lock (refused, locked by another run, or the lock could not be written): its result is printed, not journaled. */
  private report(outcome: "refused" | "locked" | "needs-attention", message: string, cause?: unknown): RunResult {
    this.deps.reporter.event(this.resultEvent(outcome, message, OUTCOMES[outcome], cause));
    return { outcome, exitCode: OUTCOMES[outcome], message };
  }

  /** A refusal of this run's own (no host's failure is its cause): its result carries the catalogue code. */
  private refuse(code: "PAST_POINT_OF_NO_RETURN" | "MIGRATION_FINISHED", message: string): RunResult {
    return this.report("refused", message, new QmError(code, message));
  }

  private resultEvent(outcome: Outcome, message: string, exitCode: number, cause: unknown): JournaledEvent {
    const code = exitCode === 0 || cause === undefined ? undefined : errorCode(cause);
    const journal = this.rec.journal;
    return {
      event: "result",
      migrationId: this.id,
      outcome,
      exitCode,
      message,
      ...(code ? { code } : {}),
      durationMs: this.clock.now() - this.started,
      ...(journal ? { journal: journal.dir } : {}),
    };
  }
}
