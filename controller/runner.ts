// Executes a plan: hostmaster steps here, front steps fanned out to every agent in parallel, one
// acknowledgement per host per step, every change journaled before and after. Each completed step
// pushes its compensation; a failure before the point of no return undoes them in reverse order.
import { join } from "node:path";
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { newSiteRel, oldSiteRel } from "../shared/migration.js";
import type { Problem, SiteTree } from "../shared/siteTree.js";
import { PROTOCOL_VERSION } from "../shared/version.js";
import type { FrontAction, FrontLike } from "./agentClient.js";
import { OUTCOMES, type Outcome, type Reporter, type RunEvent } from "./events.js";
import type { HookName, HookRunner, HookValues } from "./hooks.js";
import { Journal, SiteLock } from "./journal.js";
import { type Plan, type PlanStep, POINT_OF_NO_RETURN, STEP_NAMES, type StepName } from "./plan.js";
import { StepTally } from "./tally.js";
import type { RsyncTunnel } from "./tunnel.js";

export interface RunnerDeps {
  readonly plan: Plan;
  readonly root: string;
  readonly stateDir: string;
  readonly fronts: ReadonlyMap<string, FrontLike>;
  readonly master: SiteTree;
  readonly hooks: HookRunner;
  readonly tunnel: RsyncTunnel;
  readonly reporter: Reporter;
  readonly log: Logger;
  readonly dryRun: boolean;
  readonly signal?: AbortSignal;
  /** attempts for steps after the point of no return (roll forward only) */
  readonly forwardAttempts?: number;
  readonly retryDelayMs?: number;
}

export interface RunResult {
  readonly outcome: Outcome;
  readonly exitCode: number;
  readonly message: string;
}

/** What undoes one host's part of a completed step. */
interface Compensation {
  readonly step: StepName;
  readonly host: string;
  readonly action: string;
  readonly run: () => Promise<string>;
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

export class MigrationRunner {
  private journal: Journal | undefined;
  private lock: SiteLock | undefined;
  private readonly pending: object[] = [];
  private readonly compensations: Compensation[] = [];
  private readonly started = Date.now();
  private readonly m;
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
  }

  async run(): Promise<RunResult> {
    const { plan } = this.deps;
    await this.emit({
      event: "plan",
      migrationId: this.m.id,
      site: this.m.site,
      newSite: this.m.newSite,
      from: this.m.from,
      to: this.m.to,
      dryRun: this.deps.dryRun,
      fetchFrom: plan.fetchFrom,
      steps: plan.steps.map((s) => ({ name: s.name, hosts: s.hosts, does: s.does, undo: s.undo, ...(s.skipped ? { skipped: s.skipped } : {}), moves: s.moves })),
    });

    const refusal = await this.preflight();
    if (refusal) return this.finish(refusal.outcome, refusal.message);
    if (this.deps.dryRun) return this.finish("dry-run", "preflight passed on every host; nothing was changed");

    let current: StepName = "lock";
    try {
      for (const step of plan.steps.slice(1)) {
        current = step.name;
        await this.execute(step);
      }
    } catch (err) {
      return this.failed(current, err);
    }
    return this.finish("migrated", `${this.m.site} is on ${this.m.to}${this.m.newSite === this.m.site ? "" : ` as ${this.m.newSite}`}`);
  }

  // ---- step 0 -----------------------------------------------------------------------------------

  /** Read-only checks on every host. Returns the refusal, if any; registers the migration with every agent otherwise. */
  private async preflight(): Promise<{ outcome: Outcome; message: string } | undefined> {
    const { plan, fronts, master } = this.deps;
    const problems: string[] = [];
    let locked: string | undefined;
    const describe = (host: string, ps: readonly Problem[]) => ps.map((p) => `${host}: ${p.message}`).join("; ");

    const tally = await this.fanOut("preflight", plan.steps[0]?.hosts ?? [], async (host) => {
      if (host === plan.master) {
        for (const site of new Set([this.m.site, this.m.newSite])) {
          const holder = await SiteLock.holder(this.deps.stateDir, site);
          if (holder) locked = `site ${site} is locked by migration ${holder}`;
        }
        if (locked) throw new QmError("LOCKED", locked);
        const report = await master.preflight(this.m, { targetMustBeAbsent: true, restoresHere: false });
        if (report.problems.length > 0) throw new QmError("PRECONDITION", describe(host, report.problems), { host });
        return "checks passed";
      }
      const front = this.front(host);
      const hello = await front.hello();
      if (hello.protocolVersion !== PROTOCOL_VERSION) {
        throw new QmError("INCOMPATIBLE", `${host}: agent ${hello.agentVersion} speaks protocol ${hello.protocolVersion}, this controller ${PROTOCOL_VERSION}`, { host });
      }
      const report = await front.preflight(this.m, { register: !this.deps.dryRun, local: front.local });
      if (report.problems.length > 0) throw new QmError("PRECONDITION", describe(host, report.problems), { host });
      const kinds = report.dataDirs.map((d) => `${d.dataDir}: ${d.kind === 3 ? `symlink → ${d.linkTarget}` : d.kind === 2 ? "directory" : "absent"}`);
      return `agent ${hello.agentVersion}; ${kinds.join(", ")}`;
    });
    for (const [host, err] of tally.failed) {
      problems.push(err instanceof QmError && err.message.startsWith(`${host}:`) ? err.message : `${host}: ${describeError(err)}`);
    }
    if (locked) return { outcome: "locked", message: locked };
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
        return this.run1(step, async () => {
          this.lock = await SiteLock.acquire(this.deps.stateDir, [m.site, m.newSite], m.id);
          this.journal = await Journal.create(this.deps.stateDir, m.id, { plan, values: this.values, createdAt: new Date().toISOString() });
          for (const e of this.pending.splice(0)) await this.journal.append(e);
          return `locked ${[...new Set([m.site, m.newSite])].join(", ")}; journal ${this.journal.dir}`;
        }, async () => {
          await this.lock?.release();
          return "lock released";
        });
      case "maintenance-on":
        return this.run1(step, () => this.hook("maintenanceOn"), () => this.hook("maintenanceOff", this.oldValues));
      case "db-dump":
        return this.run1(step, () => this.hook("dbDump"));
      case "master-park-data": {
        const ledger = this.requireJournal().ledger();
        return this.run1(
          step,
          async () => summarize(await master.moveData(m, ledger, "old", "park")),
          async () => summarize(await master.moveData(m, ledger, "park", "old")),
        );
      }
      case "fronts-park-data":
        return this.runFronts(step, "park-data", "unpark-data");
      case "fetch-site":
        return this.runHosts(step, async (host) => {
          await tunnel.run({
            front: this.front(host),
            migrationId: m.id,
            step: "fetch-site",
            source: `${host}:${oldSiteRel(m)}/`,
            destination: `${join(this.deps.root, oldSiteRel(m))}/`,
            dataDirs: m.dataDirs,
            ...(this.deps.signal ? { signal: this.deps.signal } : {}),
          });
          return `site folder fetched from ${host}`;
        });
      case "master-move-site":
        return this.moveSite(step);
      case "push-site":
        return this.runHosts(
          step,
          async (host) => {
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
          },
          (host) => async () => summarize((await this.front(host).apply(m.id, "push-site", "remove-new-site")).changes),
          "remove-new-site",
        );
      case "fronts-restore-data":
        return this.runFronts(step, "restore-data", "unrestore-data");
      case "fronts-remove-old":
        return this.runFronts(step, "remove-old-site");
      case "maintenance-off":
        return this.run1(step, () => this.hook("maintenanceOff"));
      case "finish":
        return this.run1(step, async () => {
          const discarded = plan.masterIsFront || plan.keepMasterData ? [] : await master.discardParked(m, this.requireJournal().ledger());
          await this.lock?.release();
          const what = plan.masterIsFront ? "" : plan.keepMasterData ? "hostmaster's parked data kept; " : `${discarded.length} stale data dir(s) deleted on the hostmaster; `;
          return `${what}lock released`;
        });
      case "preflight":
        return;
    }
  }

  /** master-move-site: rename, then deploy and updatedb; each part that ran adds its own undo. */
  private async moveSite(step: PlanStep): Promise<void> {
    const { master } = this.deps;
    const m = this.m;
    const undone = { moved: false, updatedb: false };
    return this.run1(
      step,
      async () => {
        const parts: string[] = [];
        await master.moveSiteFolder(oldSiteRel(m), newSiteRel(m));
        undone.moved = true;
        parts.push(`${oldSiteRel(m)} → ${newSiteRel(m)}`);
        parts.push(await this.hook("deploy"));
        undone.updatedb = this.deps.hooks.has("updatedb");
        parts.push(await this.hook("updatedb"));
        return parts.join("; ");
      },
      async () => {
        const parts: string[] = [];
        if (undone.updatedb) parts.push(await this.hook("dbRestore", this.oldValues));
        if (undone.moved) {
          await master.moveSiteFolder(newSiteRel(m), oldSiteRel(m));
          parts.push(`${newSiteRel(m)} → ${oldSiteRel(m)}`);
          parts.push(await this.hook("deploy", this.oldValues));
        }
        return parts.join("; ");
      },
    );
  }

  private async hook(name: HookName, values = this.values): Promise<string> {
    return (await this.deps.hooks.run(name, values, this.deps.signal)).detail;
  }

  /** A hostmaster step; its undo also runs when the work failed part-way (say, in updatedb after the rename). */
  private run1(step: PlanStep, work: () => Promise<string>, undo?: () => Promise<string>): Promise<void> {
    return this.runHosts(step, () => work(), undo ? () => undo : undefined, step.undo ?? "undo");
  }

  private runFronts(step: PlanStep, action: FrontAction, undo?: FrontAction): Promise<void> {
    return this.runHosts(
      step,
      async (host) => summarize((await this.front(host).apply(this.m.id, step.name, action)).changes),
      undo ? (host) => async () => summarize((await this.front(host).apply(this.m.id, step.name, undo)).changes) : undefined,
      undo,
    );
  }

  /**
   * Runs one step on its hosts in parallel and records their acknowledgements. Compensations are
   * registered for every host the step was sent to: the undo actions are idempotent, so on a host
   * that failed part-way they put back what was done, and on one where nothing happened they do nothing.
   */
  private async runHosts(
    step: PlanStep,
    work: HostWork,
    undo?: (host: string) => () => Promise<string>,
    undoName = "undo",
  ): Promise<void> {
    const forward = STEP_NAMES.indexOf(step.name) >= STEP_NAMES.indexOf(POINT_OF_NO_RETURN);
    const attempts = forward ? (this.deps.forwardAttempts ?? 3) : 1;
    let tally = await this.fanOut(step.name, step.hosts, work);
    for (let attempt = 2; attempt <= attempts && !tally.ok && tally.failed.size > 0; attempt++) {
      const retryable = [...tally.failed.values()].every((e) => !(e instanceof QmError) || e.retryable);
      if (!retryable) break;
      await new Promise((r) => setTimeout(r, (this.deps.retryDelayMs ?? 1000) * (attempt - 1)));
      tally = await this.fanOut(step.name, [...tally.failed.keys()], work, { previous: tally });
    }
    if (undo) {
      for (const host of step.hosts) this.compensations.push({ step: step.name, host, action: undoName, run: undo(host) });
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
        await this.journalOnly({ event: "intent", migrationId: this.m.id, step, host, action: step, ...(undo ? { undo } : {}) });
        try {
          const detail = await work(host);
          tally.ack(host, detail);
          await this.emit({ event: "ack", migrationId: this.m.id, step, host, ok: true, detail, ...(undo ? { undo } : {}) });
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          tally.fail(host, e);
          this.deps.log.warn({ migrationId: this.m.id, step, host, err: e }, "host failed step");
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

  // ---- failure ----------------------------------------------------------------------------------

  private async failed(step: StepName, err: unknown): Promise<RunResult> {
    const why = describeError(err);
    this.deps.log.error({ migrationId: this.m.id, step, err }, "step failed");
    if (STEP_NAMES.indexOf(step) >= STEP_NAMES.indexOf(POINT_OF_NO_RETURN)) {
      return this.finish("needs-attention", `${why}; past the point of no return: fix the cause, then finish the migration (journal ${this.journal?.dir ?? "-"})`);
    }
    if (step === "lock" && err instanceof StepFailed) {
      const cause = err.tally.firstFailure()?.[1];
      if (cause instanceof QmError && cause.code === "LOCKED") return this.finish("locked", cause.message);
    }
    const stuck = await this.rollback();
    if (stuck) {
      return this.finish("needs-attention", `${why}; rollback stopped: ${stuck} (journal ${this.journal?.dir ?? "-"})`);
    }
    return this.finish("rolled-back", `${why}; rolled back: ${this.m.site} is on ${this.m.from}`);
  }

  /** Undoes the completed steps in reverse order. Returns why it stopped, or undefined when everything is back. */
  private async rollback(): Promise<string | undefined> {
    const byStep = new Map<StepName, Compensation[]>();
    for (const c of this.compensations) byStep.set(c.step, [...(byStep.get(c.step) ?? []), c]);
    for (const step of [...byStep.keys()].reverse()) {
      const list = byStep.get(step) ?? [];
      const runs = new Map(list.map((c) => [c.host, c.run]));
      const tally = await this.fanOut(step, list.map((c) => c.host), (host) => (runs.get(host) as () => Promise<string>)(), { undo: true });
      if (!tally.ok) {
        const [host, e] = tally.firstFailure() ?? ["?", new Error("?")];
        return `undo of ${step} failed on ${host}: ${describeError(e)}`;
      }
    }
    return undefined;
  }

  // ---- plumbing ---------------------------------------------------------------------------------

  private front(host: string): FrontLike {
    const f = this.deps.fronts.get(host);
    if (!f) throw new QmError("INTERNAL", `no front named ${host}`, { host });
    return f;
  }

  private requireJournal(): Journal {
    if (!this.journal) throw new QmError("INTERNAL", "journal not open");
    return this.journal;
  }

  private async emit(e: RunEvent): Promise<void> {
    this.deps.reporter.event(e);
    await this.journalOnly(e);
  }

  private async journalOnly(e: object): Promise<void> {
    if (this.journal) await this.journal.append(e);
    else this.pending.push(e);
  }

  private async finish(outcome: Outcome, message: string): Promise<RunResult> {
    const exitCode = OUTCOMES[outcome];
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
