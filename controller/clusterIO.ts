// The runner's edge to the hosts of one migration: the hostmaster's own tree, its hooks and lock, each
// front's agent and the rsync tunnel, behind the StepIO that the step table is written against. Every
// part of a step that the undo needs to know about is journaled (intent) before it happens.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { QmError, isErrorCode } from "../shared/errors.js";
import { rsyncStep } from "../shared/frontSteps.js";
import { type MigrationSpec, newSiteRel, oldSiteRel, sitesOf } from "../shared/migration.js";
import { readRootId } from "../shared/rootId.js";
import { rsyncRemote } from "../shared/rsyncArgs.js";
import type { ChangeRecord, ChangeResult, Ledger, SiteTree } from "../shared/siteTree.js";
import { PROTOCOL_VERSION } from "../shared/version.js";
import { type FrontAction, kindFromWire } from "../shared/wire.js";
import type { AgentConnectionLike } from "./agentConnection.js";
import type { HookGroupEvent } from "./events.js";
import { hookOutputName } from "./hookOutput.js";
import type { HookName, HookResult, HookRunOptions, HookValues } from "./hooks.js";
import { Journal } from "./journal.js";
import { replay } from "./journalState.js";
import type { Plan } from "./plan.js";
import type { ProgressMeter } from "./progress.js";
import type { HookGroup } from "./processGroup.js";
import type { Recorder } from "./recorder.js";
import { type FrontRoot, type MasterRoot, rootProblems } from "./roots.js";
import { SiteLock } from "./siteLock.js";
import type { StepIO, StepName } from "./steps.js";
import type { RsyncRun } from "./tunnel.js";

/** The hostmaster's hooks (drush and the like). */
export interface HooksLike {
  has(name: HookName): boolean;
  run(name: HookName, values: HookValues, opts?: HookRunOptions): Promise<HookResult>;
}

/** Real rsync through the agent channel. */
export interface TunnelLike {
  run(run: RsyncRun): Promise<void>;
}

export interface ClusterDeps {
  readonly plan: Plan;
  readonly root: string;
  readonly stateDir: string;
  readonly fronts: ReadonlyMap<string, AgentConnectionLike>;
  readonly master: SiteTree;
  readonly hooks: HooksLike;
  readonly tunnel: TunnelLike;
  /** cancels the forward run: its hooks and rsync */
  readonly signal?: AbortSignal;
  /**
   * cancels a rollback's undo hooks; apart from `signal`, so that the rollback after a cancelled
   * forward run still runs them (each bounded by timeouts.hook all the same)
   */
  readonly undoSignal?: AbortSignal;
}

type Hello = Awaited<ReturnType<AgentConnectionLike["hello"]>>;

interface RootsSeen {
  readonly master: MasterRoot;
  /** the hostmaster's identity file could not be read: its own preflight says why */
  readonly masterError?: unknown;
  /** the fronts that answered Hello, in config order */
  readonly fronts: readonly FrontRoot[];
}

export class ClusterIO {
  private siteLock: SiteLock | undefined;
  private readonly hellos = new Map<string, Promise<Hello>>();
  private roots: Promise<RootsSeen> | undefined;
  private readonly m: MigrationSpec;
  private readonly values: HookValues;
  /** the values as they are again after a rollback: the site on its old platform under its old name */
  private readonly oldValues: HookValues;

  constructor(
    private readonly deps: ClusterDeps,
    private readonly rec: Recorder,
    /** dry run: preflight registers nothing with the agents */
    private readonly dryRun: boolean,
    /** where the rsync steps' bytes go while they run */
    private readonly progress?: ProgressMeter,
  ) {
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

  /** The sites this migration locks: its own and, when renamed, the new name. */
  private get sites(): string[] {
    return sitesOf(this.m);
  }

  /** resume and rollback: the interrupted run's lock becomes this process's (refused while it runs). */
  async takeOverLock(): Promise<void> {
    this.siteLock = await SiteLock.takeOver(this.deps.stateDir, this.sites, this.m.id);
  }

  /** whether this process holds the migration's lock (took it, or took it over) */
  get holdsLock(): boolean {
    return this.siteLock !== undefined;
  }

  async releaseLock(): Promise<void> {
    await this.siteLock?.release();
    this.siteLock = undefined;
  }

  /** A run that ends needing attention: the site stays locked for the migration, by no process. */
  async handBackLock(): Promise<void> {
    await this.siteLock?.handBack();
    this.siteLock = undefined;
  }

  front(host: string): AgentConnectionLike {
    const f = this.deps.fronts.get(host);
    if (!f) throw new QmError("USAGE", `front ${host} of migration ${this.m.id} is not in the config`, { host });
    return f;
  }

  /**
   * What every front's own record says of this migration: those whose operator put the data back with
   * `parked restore` (the migration can then only go back), those where a rollback that stopped
   * part-way got all the way back (they accept the migration again only after a new preflight), and
   * those that did not answer.
   */
  async frontsRecords(): Promise<{ restored: Array<{ host: string; at: string }>; rolledBack: string[]; unanswered: Array<{ host: string; err: unknown }> }> {
    const restored: Array<{ host: string; at: string }> = [];
    const rolledBack: string[] = [];
    const unanswered: Array<{ host: string; err: unknown }> = [];
    await Promise.all(
      this.deps.plan.fronts.map(async ({ name }) => {
        try {
          const r = await this.front(name).inspect(this.m.id);
          if (r.restoredOnFrontAt) restored.push({ host: name, at: r.restoredOnFrontAt });
          if (r.endedAs === "rolled-back") rolledBack.push(name);
        } catch (err) {
          unanswered.push({ host: name, err });
        }
      }),
    );
    // in config order, as every step's hosts are
    const order = this.deps.plan.fronts.map((f) => f.name);
    rolledBack.sort((a, b) => order.indexOf(a) - order.indexOf(b));
    return { restored, rolledBack, unanswered };
  }

  /** The StepIO of one step, forward or undoing. */
  bind(step: StepName, undo: boolean): StepIO {
    const { plan, master, hooks, tunnel, root } = this.deps;
    const signal = undo ? this.deps.undoSignal : this.deps.signal;
    const m = this.m;
    return {
      plan,
      master,
      masterLedger: () => this.ledger(),
      preflight: (host) => this.preflight(host),
      lock: async () => {
        if (this.siteLock) return "lock taken over";
        // the journal first: a crash between the two leaves a journal that resume or rollback can finish
        const journal = await Journal.create(this.deps.stateDir, m.id, { plan, createdAt: new Date().toISOString() });
        try {
          await this.rec.open(journal);
          this.siteLock = await SiteLock.acquire(this.deps.stateDir, this.sites, m.id);
        } catch (err) {
          // nothing was changed on any host: a journal that could not be written whole (a full state
          // dir), or that lost the race for the lock, is not left behind
          await this.rec.discard().catch(() => undefined);
          throw err;
        }
        return `locked ${this.sites.join(", ")}; journal ${journal.dir}`;
      },
      unlock: async () => {
        await this.releaseLock();
        return "lock released";
      },
      apply: async (host, action: FrontAction) => {
        const res = await this.front(host).apply(m.id, step, action, this.rec.run, signal);
        return res.changes.map(
          (c): ChangeRecord => ({
            dataDir: c.dataDir,
            from: c.from,
            to: c.to,
            kind: kindFromWire(c.kind),
            ...(c.linkTarget ? { linkTarget: c.linkTarget } : {}),
            result: c.result as ChangeResult,
          }),
        );
      },
      hook: async (name) => {
        if (!hooks.has(name)) return (await hooks.run(name, this.values)).detail;
        // a controller killed after the dump and before db-dump's end: resume keeps the first dump
        if (name === "dbDump" && !undo && replay(this.rec.events).dumped && existsSync(this.values.dump)) {
          return `hook dbDump not run again: the dump of an earlier run is kept (${this.values.dump})`;
        }
        await this.rec.intent(step, plan.master, `hook:${name}`, undo);
        // its process group is journaled while it runs, so that a controller killed meanwhile leaves
        // resume and rollback a group to end before they act (hook-ended: the group is gone)
        let group: HookGroup | undefined;
        const u = undo ? { undo: true as const } : {};
        const ended = (ok: boolean) => group && this.rec.note({ event: "hook-ended", migrationId: m.id, step, hook: name, pgid: group.pgid, ok, ...u } satisfies HookGroupEvent);
        const output = this.hookOutput(name, undo);
        try {
          const result = await hooks.run(name, undo ? this.oldValues : this.values, {
            ...(signal ? { signal } : {}),
            ...(output ? { outputFile: output.path } : {}),
            started: async (g) => {
              group = g;
              await this.rec.note({
                event: "hook-started",
                migrationId: m.id,
                step,
                hook: name,
                pgid: g.pgid,
                startTime: g.startTime,
                ...(output ? { output: output.name } : {}),
                ...u,
              } satisfies HookGroupEvent);
            },
          });
          await ended(true);
          return result.detail;
        } catch (err) {
          await ended(false);
          throw err;
        }
      },
      intent: (part) => this.rec.intent(step, plan.master, part, undo),
      began: (part) => replay(this.rec.events).ran.has(`${step}/${part}`),
      rsync: async (host, direction, remoteRel, localRel, copyDestRel) => {
        // rsync makes only the last folder of its destination: the staging folder's parent, this
        // migration's park folder, exists only if master-park-data had something to park
        if (direction === "fetch") await master.makeParkFolder(m.id);
        const localPath = await master.resolve(localRel);
        const local = `${localPath}/`;
        // the front's agent serves the folder of (migration, step) itself: remoteRel, as registered there
        const remote = rsyncRemote(host);
        const progress = this.progress;
        await tunnel.run({
          front: this.front(host),
          migrationId: m.id,
          run: this.rec.run,
          step: rsyncStep(direction),
          remoteFolder: remoteRel,
          source: direction === "fetch" ? remote : local,
          destination: direction === "fetch" ? local : remote,
          dataDirs: m.dataDirs,
          ...(copyDestRel ? { copyDest: join(root, copyDestRel) } : {}),
          ...(signal ? { signal } : {}),
          ...(progress ? { onBytes: (sent: number, received: number) => progress.bytes(step, undo, host, sent, received) } : {}),
        });
      },
    };
  }

  /**
   * Where a hook run's output goes: its own file in the journal folder, numbered after every hook run
   * journaled so far (earlier runs' included); its name relative to the folder, for the journal, which
   * may be moved. None without a journal (it is open at every hook of a real run).
   */
  private hookOutput(hook: HookName, undo: boolean): { name: string; path: string } | undefined {
    const dir = this.rec.journal?.dir;
    if (dir === undefined) return undefined;
    const name = hookOutputName(1 + this.rec.events.filter((e) => e.event === "hook-started").length, hook, undo);
    return { name, path: join(dir, name) };
  }

  private ledger(): Ledger {
    const journal = this.rec.journal;
    if (!journal) throw new QmError("INTERNAL", "journal not open");
    return journal.ledger();
  }

  /** A front's Hello, asked once per run: each host's checks and the comparison of roots share it. */
  private hello(host: string): Promise<Hello> {
    let answer = this.hellos.get(host);
    if (!answer) {
      answer = this.front(host).hello();
      this.hellos.set(host, answer);
    }
    return answer;
  }

  /**
   * Every front's root identity, and the hostmaster's, read once all fronts have answered Hello (the
   * agent of a front on the hostmaster makes the hostmaster root's file, if it has none yet).
   */
  private rootsSeen(): Promise<RootsSeen> {
    this.roots ??= (async () => {
      const fronts = this.deps.plan.fronts;
      const answers = await Promise.allSettled(fronts.map((f) => this.hello(f.name)));
      const seen = fronts.flatMap((f, i): FrontRoot[] => {
        const answer = answers[i];
        return answer?.status === "fulfilled" ? [{ name: f.name, local: f.local, rootId: answer.value.rootId }] : [];
      });
      try {
        return { master: { path: this.deps.root, rootId: await readRootId(this.deps.root) }, fronts: seen };
      } catch (err) {
        return { master: { path: this.deps.root, rootId: undefined }, masterError: err, fronts: seen };
      }
    })();
    return this.roots;
  }

  /** Read-only checks on one host; on a front, the migration is registered with its agent unless dry-running. */
  private async preflight(host: string): Promise<string> {
    const { plan, master } = this.deps;
    // (a held lock was refused before the plan was made: see main.ts; the lock step takes it atomically)
    if (host === plan.master) {
      const { masterError } = await this.rootsSeen();
      if (masterError) throw masterError;
      refuseOn(host, (await master.preflight(this.m, { targetMustBeAbsent: true, restoresHere: false })).problems);
      return "checks passed";
    }
    const front = this.front(host);
    const hello = await this.hello(host);
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      throw new QmError("INCOMPATIBLE", `agent ${hello.agentVersion} speaks protocol ${hello.protocolVersion}, this controller ${PROTOCOL_VERSION}`, { host });
    }
    // before the agent registers anything: hosts that share a root never start a migration
    const roots = await this.rootsSeen();
    if (!roots.masterError) refuseOn(host, rootProblems(host, roots.master, roots.fronts));
    const report = await front.preflight(this.m, { register: !this.dryRun, local: front.local }, this.deps.signal);
    refuseOn(host, report.problems);
    const kinds = report.dataDirs.map((d) => {
      const kind = kindFromWire(d.kind);
      return `${d.dataDir}: ${kind === "symlink" ? `symlink → ${d.linkTarget}` : kind}`;
    });
    return `agent ${hello.agentVersion}; ${kinds.join(", ")}`;
  }
}

/** A host's preflight problems, each with its own message; the error's code is the first one's. */
export class PreflightRefused extends QmError {
  constructor(
    host: string,
    readonly problems: ReadonlyArray<{ readonly code: string; readonly message: string }>,
  ) {
    const first = problems[0]?.code ?? "";
    super(isErrorCode(first) ? first : "PRECONDITION", problems.map((p) => p.message).join("; "), { host });
  }
}

/** Problems received from an agent may carry a code this version does not know: they count all the same. */
function refuseOn(host: string, problems: ReadonlyArray<{ readonly code: string; readonly message: string }>): void {
  if (problems.length > 0) throw new PreflightRefused(host, problems);
}
