// Executes a plan: hostmaster steps here, front steps fanned out to every agent in parallel, one
// acknowledgement per host per step, every change journaled before (intent) and after (ack). What to
// undo is always read back from the journal, so a run that resumes or rolls back after a crash does
// exactly what the uninterrupted run would have done.
import { join } from "node:path";
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { type MigrationSpec, newSiteRel, oldSiteRel, parkRel } from "../shared/migration.js";
import type { Problem, SiteTree } from "../shared/siteTree.js";
import { PROTOCOL_VERSION } from "../shared/version.js";
import type { AgentConnectionLike } from "./agentConnection.js";
import type { FrontAction } from "../shared/wire.js";
import { type IntentEvent, OUTCOMES, type Outcome, type Reporter, type RunEvent } from "./events.js";
import type { FaultPlan } from "./faults.js";
import type { HookName, HookRunner, HookValues } from "./hooks.js";
import { Journal } from "./journal.js";
import { SiteLock } from "./siteLock.js";
import { type JournalEvent, replay } from "./journalState.js";
import { type Plan, type PlanStep, POINT_OF_NO_RETURN, STEP_NAMES, type StepName } from "./plan.js";
import { StepTally } from "./tally.js";
import type { RsyncTunnel } from "./tunnel.js";

export type RunMode =
  | { readonly kind: "migrate"; readonly dryRun: boolean }
  | { readonly kind: "resume"; readonly journal: Journal; readonly events: readonly JournalEvent[] }
  | { readonly kind: "rollback"; readonly journal: Journal; readonly events: readonly JournalEvent[] };

export interface RunnerDeps {
  readonly plan: Plan;
  readonly mode: RunMode;
  readonly root: string;
  readonly stateDir: string;
  readonly fronts: ReadonlyMap<string, AgentConnectionLike>;
  readonly master: SiteTree;
  readonly hooks: HookRunner;
  readonly tunnel: RsyncTunnel;
  readonly reporter: Reporter;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  /** attempts for steps after the point of no return (roll forward only) */
  readonly forwardAttempts?: number;
  readonly retryDelayMs?: number;
  readonly faults?: FaultPlan;
}

export interface RunResult {
  readonly outcome: Outcome;
  readonly exitCode: number;
  readonly message: string;
}

type HostWork = (host: string) => Promise<string>;

class StepFailed extends Error {
  constructor(
    readonly step: StepName,
    readonly tally: StepTally,
  ) {
    const [host, err] = tally.firstFailure() ?? ["?", new Error("failed")];
    super(`${step} failed on ${host}: ${describeError(err)}`);
  }
}

/** The hostmaster's working folders for one migration, inside its park area. */
export function stagingRel(m: MigrationSpec): string {
  return `${parkRel(m.id)}/.site-staging`;
}
export function staleSiteRel(m: MigrationSpec): string {
  return `${parkRel(m.id)}/.stale-site`;
}

export class MigrationRunner {
  private journal: Journal | undefined;
  private lock: SiteLock | undefined;
  /** everything journaled for this migration, including what earlier runs wrote */
  private readonly events: JournalEvent[] = [];
  private readonly pending: object[] = [];
  private readonly started = Date.now();
  private readonly m: MigrationSpec;
  private readonly values: HookValues;
  /** the values as they are again after a rollback: the site on its old platform under its old name */
  private readonly oldValues: HookValues;

  constructor(private readonly deps: RunnerDeps) {
    this.m = deps.plan.migration;
    const fromPath = join(deps.root, oldSiteRel(this.m));
    const toPath = join(deps.root, newSiteRel(this.m));
    this.values = {
      site: this.m.site,
      newSite: this.m.newSite,
      from: this.m.from,
      to: this.m.to,
      fromPath,
      toPath,
      dump: join(Journal.folder(deps.stateDir, this.m.id), "db-dump.sql"),
      migrationId: this.m.id,
    };
    this.oldValues = { ...this.values, newSite: this.m.site, to: this.m.from, toPath: fromPath };
    if (deps.mode.kind !== "migrate") {
      this.journal = deps.mode.journal;
      this.events.push(...deps.mode.events);
    }
  }

  async run(): Promise<RunResult> {
    await this.emitPlan();
    switch (this.deps.mode.kind) {
      case "migrate":
        return this.migrate(this.deps.mode.dryRun);
      case "resume":
        return this.resume();
      case "rollback":
        return this.rollbackCommand();
    }
  }

  private async migrate(dryRun: boolean): Promise<RunResult> {
    const refusal = await this.preflight(dryRun);
    if (refusal) return this.finish(refusal.outcome, refusal.message);
    if (dryRun) return this.finish("dry-run", "preflight passed on every host; nothing was changed");
    return this.forward(this.deps.plan.steps.slice(1));
  }

  private async resume(): Promise<RunResult> {
    const r = replay(this.events);
    const taken = await this.takeOverLock();
    if (taken) return taken;
    const from = r.resumeFrom;
    if (!from) {
      // killed after its last step and before its result: only the lock taken over just now is left
      await this.lock?.release();
      return this.finish("migrated", `${this.m.site} is on ${this.m.to}; nothing was left to do`);
    }
    await this.journalOnly({ event: "resume", migrationId: this.m.id, step: from });
    const steps = this.deps.plan.steps.filter((s) => STEP_NAMES.indexOf(s.name) >= STEP_NAMES.indexOf(from));
    return this.forward(steps);
  }

  private async rollbackCommand(): Promise<RunResult> {
    const r = replay(this.events);
    if (r.pastPointOfNoReturn) {
      return this.finish("refused", `migration ${this.m.id} is past the point of no return (${POINT_OF_NO_RETURN}): only \`quick-migrate resume ${this.m.id}\` can finish it`);
    }
    const taken = await this.takeOverLock();
    if (taken) return taken;
    await this.journalOnly({ event: "rollback", migrationId: this.m.id });
    const stuck = await this.rollback();
    if (stuck) return this.finish("needs-attention", `rollback stopped: ${stuck}; when it is fixed run \`quick-migrate rollback ${this.m.id}\` again`);
    return this.finish("rolled-back", `${this.m.site} is back on ${this.m.from}`, 0);
  }

  private async takeOverLock(): Promise<RunResult | undefined> {
    try {
      this.lock = await SiteLock.takeOver(this.deps.stateDir, [this.m.site, this.m.newSite], this.m.id);
      return undefined;
    } catch (err) {
      if (err instanceof QmError && err.code === "LOCKED") return this.finish("locked", err.message);
      throw err;
    }
  }

  private async forward(steps: readonly PlanStep[]): Promise<RunResult> {
    let current: StepName = steps[0]?.name ?? "lock";
    try {
      for (const step of steps) {
        current = step.name;
        this.deps.faults?.beforeStep(step.name);
        await this.execute(step);
      }
    } catch (err) {
      return this.failed(current, err);
    }
    return this.finish("migrated", `${this.m.site} is on ${this.m.to}${this.m.newSite === this.m.site ? "" : ` as ${this.m.newSite}`}`);
  }

  private async emitPlan(): Promise<void> {
    const { plan } = this.deps;
    await this.emit({
      event: "plan",
      migrationId: this.m.id,
      site: this.m.site,
      newSite: this.m.newSite,
      from: this.m.from,
      to: this.m.to,
      dryRun: this.deps.mode.kind === "migrate" && this.deps.mode.dryRun,
      fetchFrom: plan.fetchFrom,
      steps: plan.steps.map((s) => ({ name: s.name, hosts: s.hosts, does: s.does, undo: s.undo, ...(s.skipped ? { skipped: s.skipped } : {}), moves: s.moves })),
    });
  }

  // ---- step 0 -----------------------------------------------------------------------------------

  /** Read-only checks on every host. Returns the refusal, if any; registers the migration with every agent otherwise. */
  private async preflight(dryRun: boolean): Promise<{ outcome: Outcome; message: string } | undefined> {
    const { plan, master } = this.deps;
    const problems: string[] = [];
    const describe = (host: string, ps: readonly Problem[]) => ps.map((p) => `${host}: ${p.message}`).join("; ");

    const tally = await this.fanOut("preflight", plan.steps[0]?.hosts ?? [], async (host) => {
      // (a held lock was refused before the plan was made: see main.ts; the lock step takes it atomically)
      if (host === plan.master) {
        const report = await master.preflight(this.m, { targetMustBeAbsent: true, restoresHere: false });
        if (report.problems.length > 0) throw new QmError("PRECONDITION", describe(host, report.problems), { host });
        return "checks passed";
      }
      const front = this.front(host);
      const hello = await front.hello();
      if (hello.protocolVersion !== PROTOCOL_VERSION) {
        throw new QmError("INCOMPATIBLE", `${host}: agent ${hello.agentVersion} speaks protocol ${hello.protocolVersion}, this controller ${PROTOCOL_VERSION}`, { host });
      }
      const report = await front.preflight(this.m, { register: !dryRun, local: front.local });
      if (report.problems.length > 0) throw new QmError("PRECONDITION", describe(host, report.problems), { host });
      const kinds = report.dataDirs.map((d) => `${d.dataDir}: ${d.kind === 3 ? `symlink → ${d.linkTarget}` : d.kind === 2 ? "directory" : "absent"}`);
      return `agent ${hello.agentVersion}; ${kinds.join(", ")}`;
    });
    for (const [host, err] of tally.failed) {
      problems.push(err instanceof QmError && err.message.startsWith(`${host}:`) ? err.message : `${host}: ${describeError(err)}`);
    }
    if (problems.length > 0) return { outcome: "refused", message: `preflight refused: ${problems.join("; ")}` };
    return undefined;
  }

  // ---- steps 1–12 -------------------------------------------------------------------------------

  private async execute(step: PlanStep): Promise<void> {
    const { plan, master, tunnel } = this.deps;
    if (step.skipped) {
      await this.emit({ event: "step-start", migrationId: this.m.id, step: step.name });
      await this.emit({ event: "step-end", migrationId: this.m.id, step: step.name, ok: true, acked: 0, expected: 0, skipped: step.skipped, durationMs: 0 });
      return;
    }
    const m = this.m;
    switch (step.name) {
      case "lock":
        if (this.deps.mode.kind !== "migrate") return this.runHosts(step, async () => "lock taken over");
        return this.runHosts(step, async () => {
          // the journal first: a crash between the two leaves a journal that resume or rollback can finish
          this.journal = await Journal.create(this.deps.stateDir, m.id, { plan, createdAt: new Date().toISOString() });
          for (const e of this.pending.splice(0)) await this.journal.append(e);
          this.lock = await SiteLock.acquire(this.deps.stateDir, [m.site, m.newSite], m.id);
          return `locked ${[...new Set([m.site, m.newSite])].join(", ")}; journal ${this.journal.dir}`;
        });
      case "maintenance-on":
        return this.runHosts(step, () => this.hook(step.name, "maintenanceOn"));
      case "db-dump":
        return this.runHosts(step, () => this.hook(step.name, "dbDump"));
      case "master-park-data":
        return this.runHosts(step, async () => summarize(await master.moveData(m, this.requireJournal().ledger(), "old", "park")));
      case "fronts-park-data":
        return this.runFronts(step, "park-data");
      case "fetch-site":
        // into a staging folder: the hostmaster's own copy stays as it was until master-move-site
        return this.runHosts(step, async (host) => {
          await tunnel.run({
            front: this.front(host),
            migrationId: m.id,
            step: "fetch-site",
            source: `${host}:${oldSiteRel(m)}/`,
            destination: `${await master.resolve(stagingRel(m))}/`,
            copyDest: join(this.deps.root, oldSiteRel(m)),
            dataDirs: m.dataDirs,
            ...(this.deps.signal ? { signal: this.deps.signal } : {}),
          });
          return `site folder fetched from ${host}`;
        });
      case "master-move-site":
        return this.runHosts(step, () => this.moveSite());
      case "push-site":
        return this.runHosts(step, async (host) => {
          await tunnel.run({
            front: this.front(host),
            migrationId: m.id,
            step: "push-site",
            source: `${join(this.deps.root, newSiteRel(m))}/`,
            destination: `${host}:${newSiteRel(m)}/`,
            dataDirs: m.dataDirs,
            ...(this.deps.signal ? { signal: this.deps.signal } : {}),
          });
          return `site folder pushed to ${host}`;
        });
      case "fronts-restore-data":
        return this.runFronts(step, "restore-data");
      case "fronts-remove-old":
        return this.runFronts(step, "remove-old-site");
      case "maintenance-off":
        return this.runHosts(step, () => this.hook(step.name, "maintenanceOff"));
      case "finish":
        return this.runHosts(step, async () => {
          let what = "";
          if (!plan.masterIsFront) {
            // the stale site folder holds no data dirs (they were parked): a guarded removal
            await master.removeSiteFolder(staleSiteRel(m), m.dataDirs);
            if (plan.keepMasterData) what = `hostmaster's stale data kept in ${parkRel(m.id)}; `;
            else what = `${(await master.discardParked(m, this.requireJournal().ledger())).length} stale data dir(s) deleted on the hostmaster; `;
          }
          await this.lock?.release();
          return `${what}lock released`;
        });
      case "preflight":
        return;
    }
  }

  /**
   * master-move-site. With a separate hostmaster: its stale site folder is set aside and the fetched
   * copy takes the new place. When the hostmaster is a front its live folder is renamed. Then deploy
   * and updatedb; each part journals its intent so that the undo knows what ran.
   */
  private async moveSite(): Promise<string> {
    const { master, plan } = this.deps;
    const m = this.m;
    const parts: string[] = [];
    await this.intent("master-move-site", plan.master, "rename-site");
    if (plan.masterIsFront) {
      await master.moveSiteFolder(oldSiteRel(m), newSiteRel(m));
    } else {
      await master.moveSiteFolder(oldSiteRel(m), staleSiteRel(m));
      await master.moveSiteFolder(stagingRel(m), newSiteRel(m));
    }
    parts.push(`${oldSiteRel(m)} → ${newSiteRel(m)}`);
    parts.push(await this.hook("master-move-site", "deploy"));
    parts.push(await this.hook("master-move-site", "updatedb"));
    return parts.join("; ");
  }

  private async hook(step: StepName, name: HookName, values = this.values, undo = false): Promise<string> {
    if (this.deps.hooks.has(name)) await this.intent(step, this.deps.plan.master, `hook:${name}`, undo);
    return (await this.deps.hooks.run(name, values, this.deps.signal)).detail;
  }

  private runFronts(step: PlanStep, action: FrontAction): Promise<void> {
    return this.runHosts(step, async (host) => summarize((await this.front(host).apply(this.m.id, step.name, action)).changes));
  }

  /**
   * Runs one step on its hosts in parallel. From the point of no return on, the only way is forward:
   * the hosts that failed are tried again (a hook or a host may come back) before giving up.
   */
  private async runHosts(step: PlanStep, work: HostWork): Promise<void> {
    const forward = STEP_NAMES.indexOf(step.name) >= STEP_NAMES.indexOf(POINT_OF_NO_RETURN);
    const attempts = forward ? (this.deps.forwardAttempts ?? 3) : 1;
    let tally = await this.fanOut(step.name, step.hosts, work);
    for (let attempt = 2; attempt <= attempts && !tally.ok; attempt++) {
      await new Promise((r) => setTimeout(r, (this.deps.retryDelayMs ?? 1000) * (attempt - 1)));
      tally = await this.fanOut(step.name, [...tally.failed.keys()], work, { previous: tally });
    }
    if (!tally.ok) throw new StepFailed(step.name, tally);
  }

  private async fanOut(step: StepName, hosts: readonly string[], work: HostWork, opts: { previous?: StepTally; undo?: true } = {}): Promise<StepTally> {
    const { undo } = opts;
    const tally = opts.previous ?? new StepTally(hosts);
    for (const h of hosts) tally.failed.delete(h);
    const t0 = Date.now();
    await this.emit({ event: "step-start", migrationId: this.m.id, step, ...(undo ? { undo } : {}) });
    await Promise.all(
      hosts.map(async (host) => {
        await this.intent(step, host, step, undo);
        try {
          const detail = await work(host);
          tally.ack(host, detail);
          await this.emit({ event: "ack", migrationId: this.m.id, step, host, ok: true, detail, ...(undo ? { undo } : {}) });
          this.deps.faults?.afterAck(step, host, undo === true);
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          tally.fail(host, e);
          this.deps.log.warn({ migrationId: this.m.id, step, host, undo, err: e }, "host failed step");
          await this.emit({ event: "ack", migrationId: this.m.id, step, host, ok: false, detail: describeError(e), ...(undo ? { undo } : {}) });
        }
      }),
    );
    await this.emit({
      event: "step-end",
      migrationId: this.m.id,
      step,
      ok: tally.ok,
      acked: tally.acked.size,
      expected: tally.expected.length,
      durationMs: Date.now() - t0,
      ...(undo ? { undo } : {}),
    });
    return tally;
  }

  // ---- failure and undo -------------------------------------------------------------------------

  private async failed(step: StepName, err: unknown): Promise<RunResult> {
    const why = describeError(err);
    this.deps.log.error({ migrationId: this.m.id, step, err }, "step failed");
    if (step === "lock" && err instanceof StepFailed) {
      const cause = err.tally.firstFailure()?.[1];
      if (cause instanceof QmError && cause.code === "LOCKED") {
        // nothing was done: the journal of this attempt goes, and the other migration's lock stays
        await this.journal?.remove();
        this.journal = undefined;
        return this.finish("locked", cause.message);
      }
    }
    if (STEP_NAMES.indexOf(step) >= STEP_NAMES.indexOf(POINT_OF_NO_RETURN)) {
      return this.finish("needs-attention", `${why}; past the point of no return: fix the cause, then run \`quick-migrate resume ${this.m.id}\``);
    }
    const stuck = await this.rollback();
    if (stuck) {
      return this.finish(
        "needs-attention",
        `${why}; rollback stopped: ${stuck}; when it is fixed run \`quick-migrate rollback ${this.m.id}\` (or \`resume\` to go forward)`,
      );
    }
    return this.finish("rolled-back", `${why}; rolled back: ${this.m.site} is on ${this.m.from}`);
  }

  /**
   * Undoes, latest step first, what the journal says was sent to each host and not yet undone. Every
   * undo is idempotent: on a host that failed part-way it puts back what was done, where nothing
   * happened it does nothing. Returns why it stopped, or undefined when everything is back.
   */
  private async rollback(): Promise<string | undefined> {
    for (;;) {
      const next = replay(this.events).undoPlan[0];
      if (!next) return undefined;
      this.deps.faults?.beforeStep(`undo:${next.step}`);
      const tally = await this.fanOut(next.step, next.hosts, (host) => this.undo(next.step, host), { undo: true });
      if (!tally.ok) {
        const [host, e] = tally.firstFailure() ?? ["?", new Error("?")];
        return `undo of ${next.step} failed on ${host}: ${describeError(e)}`;
      }
    }
  }

  private async undo(step: StepName, host: string): Promise<string> {
    const { master, plan } = this.deps;
    const m = this.m;
    const ran = replay(this.events).ran;
    switch (step) {
      case "lock":
        await this.lock?.release();
        return "lock released";
      case "maintenance-on":
        return this.hook(step, "maintenanceOff", this.oldValues, true);
      case "master-park-data":
        return summarize(await master.moveData(m, this.requireJournal().ledger(), "park", "old"));
      case "fronts-park-data":
        return summarize((await this.front(host).apply(m.id, step, "unpark-data")).changes);
      case "fetch-site":
        return summarize(await master.removeSiteFolder(stagingRel(m), m.dataDirs));
      case "master-move-site": {
        const parts: string[] = [];
        if (ran.has(`${step}/hook:updatedb`)) parts.push(await this.hook(step, "dbRestore", this.oldValues, true));
        if (plan.masterIsFront) {
          await master.moveSiteFolder(newSiteRel(m), oldSiteRel(m));
        } else {
          await master.moveSiteFolder(newSiteRel(m), stagingRel(m));
          await master.moveSiteFolder(staleSiteRel(m), oldSiteRel(m));
        }
        parts.push(`${newSiteRel(m)} → ${oldSiteRel(m)}`);
        if (ran.has(`${step}/rename-site`)) parts.push(await this.hook(step, "deploy", this.oldValues, true));
        return parts.join("; ");
      }
      case "push-site":
        return summarize((await this.front(host).apply(m.id, step, "remove-new-site")).changes);
      case "fronts-restore-data":
        return summarize((await this.front(host).apply(m.id, step, "unrestore-data")).changes);
      default:
        throw new QmError("INTERNAL", `${step} has no undo`, { step });
    }
  }

  // ---- plumbing ---------------------------------------------------------------------------------

  private front(host: string): AgentConnectionLike {
    const f = this.deps.fronts.get(host);
    if (!f) throw new QmError("USAGE", `front ${host} of migration ${this.m.id} is not in the config`, { host });
    return f;
  }

  private requireJournal(): Journal {
    if (!this.journal) throw new QmError("INTERNAL", "journal not open");
    return this.journal;
  }

  private async intent(step: StepName, host: string, action: string, undo?: boolean): Promise<void> {
    const e: IntentEvent = { event: "intent", migrationId: this.m.id, step, host, action, ...(undo ? { undo: true } : {}) };
    await this.journalOnly(e);
  }

  private async emit(e: RunEvent): Promise<void> {
    this.deps.reporter.event(e);
    await this.journalOnly(e);
  }

  private async journalOnly(e: object): Promise<void> {
    this.events.push(e as JournalEvent);
    if (this.journal) await this.journal.append(e);
    else this.pending.push(e);
  }

  private async finish(outcome: Outcome, message: string, exitCode: number = OUTCOMES[outcome]): Promise<RunResult> {
    await this.emit({
      event: "result",
      migrationId: this.m.id,
      outcome,
      exitCode,
      message,
      durationMs: Date.now() - this.started,
      ...(this.journal ? { journal: this.journal.dir } : {}),
    });
    return { outcome, exitCode, message };
  }
}

/** One line on what an action did, for the acknowledgement. */
export function summarize(changes: ReadonlyArray<{ dataDir: string; result: string; from: string; linkTarget?: string }>): string {
  if (changes.length === 0) return "nothing to do";
  return changes
    .map((c) => {
      const what = c.dataDir || c.from;
      const link = c.linkTarget ? ` (symlink → ${c.linkTarget})` : "";
      return `${what}: ${c.result}${link}`;
    })
    .join(", ");
}
