// The state and logic behind the agent's RPCs: checks a migration, registers it, and does each step's
// work on this front's root. The gRPC handlers in server.ts are thin wrappers over this class.
import { hostname } from "node:os";
import type { ConfinedPath } from "../shared/confined.js";
import { QmError, describeError } from "../shared/errors.js";
import { type MigrationSpec, checkMigration, newSiteRel, oldSiteRel, placeRel } from "../shared/migration.js";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import { ensureRootId } from "../shared/rootId.js";
import { type ChangeRecord, type PreflightReport, type Problem, SiteTree } from "../shared/siteTree.js";
import { type FrontAction, RENAMING_ACTIONS } from "../shared/wire.js";
import { type AgentFaults, NO_FAULTS } from "./faults.js";
import { withRecordLock } from "./recordLock.js";
import { type MigrationRecord, type Registry, frontStateOf, pastPointOfNoReturn } from "./registry.js";
import { type Decision, type FrontRequest, INITIAL_STATE, begin, decide, settle } from "./stepOrder.js";
import { unfinishedProblems } from "./unfinished.js";
import { freeBytes } from "./healthMonitor.js";
import { FRONT_STEPS } from "../shared/frontSteps.js";

/** What this agent's own config says, whatever a client asks: the data dirs it protects. */
export interface FrontPolicy {
  readonly dataDirs: readonly string[];
}

type Run = Extract<Decision, { verdict: "run" }>;

export class SiteOperations {
  readonly tree: SiteTree;
  /** one action at a time per migration: repeats after a lost reply may overlap the original */
  private readonly queues = new Map<string, Promise<unknown>>();
  /** Applies renaming data dirs now (from their state written as begun to their result recorded), who waits for none, whether more may start */
  private renaming = 0;
  private renamesWaiters: Array<() => void> = [];
  private renamesClosed = false;

  constructor(
    root: string,
    readonly registry: Registry,
    readonly policy: FrontPolicy,
    private readonly faults: AgentFaults = NO_FAULTS,
  ) {
    this.tree = new SiteTree(root);
  }

  /**
   * Versions, and the root's identity read from its file now (made again only if it was deleted since
   * the start): an id cached at start would miss a root mounted, or shared, after it.
   */
  async hello(): Promise<{ protocolVersion: number; agentVersion: string; hostname: string; rootId: string; root: string; rootFreeBytes?: number; stateDirFreeBytes?: number }> {
    const root = this.tree.root.path;
    const [rootId, rootFreeBytes, stateDirFreeBytes] = await Promise.all([ensureRootId(root), freeOrUnknown(root), freeOrUnknown(this.registry.stateDir)]);
    return {
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: PACKAGE_VERSION,
      hostname: hostname(),
      rootId,
      root,
      ...(rootFreeBytes === undefined ? {} : { rootFreeBytes }),
      ...(stateDirFreeBytes === undefined ? {} : { stateDirFreeBytes }),
    };
  }

  /**
   * The tree's checks, and this agent's own policy and records: a migration that lists other data dirs
   * than this agent protects is refused, and so is one of a site that an unfinished one still holds
   * here, whatever the hostmaster remembers of it.
   */
  async preflight(input: MigrationSpec, opts: { register: boolean; local: boolean }): Promise<PreflightReport> {
    const m = checkMigration(input);
    const report = await this.tree.preflight(m, { targetMustBeAbsent: !opts.local, restoresHere: true });
    report.problems.unshift(...dataDirsProblems(m, this.policy));
    report.problems.push(...(await unfinishedProblems(this.registry, this.tree.root.path, m)));
    if (opts.register && report.problems.length === 0) {
      const record = await this.registry.register(m, opts.local);
      if (frontStateOf(record).ended?.as === "rolled-back") await this.takeUpAgain(m.id);
    }
    return report;
  }

  /**
   * A migration rolled back on this front, registered again by a preflight that passed (the hostmaster's
   * `resume` after a rollback that stopped part-way goes forward from the start here): its state starts
   * over; its operation results stay, for audit. A replayed action never does this: only a new preflight,
   * which checks the tree as for a new migration.
   */
  private async takeUpAgain(migrationId: string): Promise<void> {
    await this.oneAtATime(migrationId, () =>
      withRecordLock(this.registry.stateDir, migrationId, { what: "the agent service" }, async () => {
        const record = await this.registry.get(migrationId);
        if (frontStateOf(record).ended?.as !== "rolled-back") return;
        record.state = INITIAL_STATE;
        await this.registry.save(record);
      }),
    );
  }

  /**
   * Runs one action of one step for a registered migration, where the step order allows it (see
   * stepOrder.ts). Every action is safe to repeat, and a repeat does the work again (checked against
   * the disk): a rollback may have undone it since. The one exception is the action that ended the
   * migration here, repeated: it is answered from the record and nothing is done (what it removed or put
   * back may be another migration's live site by now). The state is written before the action changes
   * anything, and its result after, in the migration's record (results under `"<step>/<action>"`).
   */
  async apply(migrationId: string, step: string, action: FrontAction, run = 0): Promise<ChangeRecord[]> {
    return this.oneAtATime(migrationId, async () => {
      // the record is read and changed under its lock: `parked restore` may be run on this front meanwhile
      await this.registry.get(migrationId);
      return withRecordLock(this.registry.stateDir, migrationId, { what: "the agent service" }, () =>
        RENAMING.has(action) ? this.whileRenaming(() => this.applyLocked(migrationId, step, action, run)) : this.applyLocked(migrationId, step, action, run),
      );
    });
  }

  /**
   * Lets no Apply start renaming data dirs from now on (STOPPING), and resolves once none is. A stopping
   * agent waits for this whatever its bound: renames and their ledger entries are never left half-done
   * by a stop (a second signal or SIGKILL can still do it; recovery then reads the ledger's `moving`).
   */
  closeRenames(): Promise<void> {
    this.renamesClosed = true;
    if (this.renaming === 0) return Promise.resolve();
    return new Promise((resolve) => this.renamesWaiters.push(resolve));
  }

  private async whileRenaming<T>(fn: () => Promise<T>): Promise<T> {
    if (this.renamesClosed) throw new QmError("STOPPING", "agent stopping: it starts no rename now");
    this.renaming++;
    try {
      return await fn();
    } finally {
      if (--this.renaming === 0) for (const resolve of this.renamesWaiters.splice(0)) resolve();
    }
  }

  private async oneAtATime<T>(migrationId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(migrationId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(fn);
    this.queues.set(migrationId, run);
    try {
      return await run;
    } finally {
      if (this.queues.get(migrationId) === run) this.queues.delete(migrationId);
    }
  }

  private async applyLocked(migrationId: string, step: string, action: FrontAction, run: number): Promise<ChangeRecord[]> {
    const record = await this.registry.get(migrationId);
    const key = `${step || "-"}/${action}`;
    const decision = this.admit(record, { kind: "apply", step, action }, run);
    if (decision.verdict === "repeat-of-end") {
      const changes = answeredFromRecord(record, key);
      await this.registry.recordOperation(record, key, { changes });
      return changes;
    }
    record.state = begin(frontStateOf(record), record.local, decision);
    // a renaming action's state goes to disk with its first intent (applyLedger), before anything
    // changes (SiteTree.moveData); an action that changes nothing has it written with its result
    if (!RENAMING.has(action)) await this.registry.save(record);
    let changes: ChangeRecord[];
    try {
      changes = await this.act(record, action);
    } catch (err) {
      const error = err instanceof QmError ? { code: err.code, message: err.message } : { code: "INTERNAL", message: describeError(err) };
      record.state = settle(record.state, record.local, decision, false, new Date().toISOString());
      // the failure is what the caller must see, even if it cannot be kept
      await this.registry.recordOperation(record, key, { error }).catch(() => undefined);
      throw err;
    }
    record.state = settle(record.state, record.local, decision, true, new Date().toISOString());
    await this.registry.recordOperation(record, key, { changes });
    return changes;
  }

  /**
   * Whether the record's migration may take this request now: not from an earlier controller run than
   * one accepted here (`run`: see ApplyRequest.run; the record keeps the latest, saved with the state),
   * not forward once `parked restore` put its data back here, only in the step order, and forward only
   * while its data dirs are this agent's own.
   */
  private admit(record: MigrationRecord, req: FrontRequest, run: number): Run | Extract<Decision, { verdict: "repeat-of-end" }> {
    if (run > 0 && run < (record.run ?? 0)) {
      throw new QmError(
        "STALE_REQUEST",
        `migration ${record.migration.id}: ${req.kind === "apply" ? req.action : "rsync"} of step ${req.step} comes from run ${run} of its controller, and run ${record.run} has been here since: a request held up in the network is not carried out`,
        { step: req.step },
      );
    }
    if (isForward(req)) refuseIfRestoredOnFront(record);
    const decision = decide(frontStateOf(record), record.local, req);
    if (decision.verdict === "refuse") throw new QmError(decision.code, `migration ${record.migration.id}: ${decision.message}`, { step: req.step });
    if (decision.verdict === "run" && decision.direction === "forward") {
      const [problem] = dataDirsProblems(record.migration, this.policy);
      if (problem) throw new QmError(problem.code, `migration ${record.migration.id}: ${problem.message}`, { step: req.step });
    }
    if (run > (record.run ?? 0)) record.run = run;
    return decision;
  }

  private async act(record: MigrationRecord, action: FrontAction): Promise<ChangeRecord[]> {
    const m = record.migration;
    const ledger = this.registry.applyLedger(record);
    const afterRename = (dataDir: string) => this.faults.afterRename(action, m.id, dataDir);
    switch (action) {
      case "park-data":
        return this.tree.moveData(m, ledger, "old", "park", { afterRename });
      case "unpark-data":
        return this.tree.moveData(m, ledger, "park", "old", { afterRename });
      case "restore-data":
        return this.tree.moveData(m, ledger, "park", "new", { afterRename });
      case "unrestore-data": {
        // a data dir `parked restore` already put back in the old site folder is where the rollback
        // takes it anyway: it stays there
        const back = record.ledger.filter((e) => e.at === "old" && e.moving === undefined).map((e) => e.dataDir);
        const rest = await this.tree.moveData({ ...m, dataDirs: m.dataDirs.filter((d) => !back.includes(d)) }, ledger, "new", "park", { afterRename });
        const stayed = back.map((dataDir): ChangeRecord => ({ dataDir, from: placeRel(m, dataDir, "new"), to: placeRel(m, dataDir, "old"), kind: "directory", result: "already-done" }));
        return [...stayed, ...rest];
      }
      case "remove-old-site": {
        const notRestored = record.ledger.filter((e) => e.at !== "new" || e.moving !== undefined);
        if (notRestored.length > 0) {
          throw new QmError("PRECONDITION", `refusing to remove ${oldSiteRel(m)}: data dir ${notRestored.map((e) => e.dataDir).join(", ")} not yet restored into ${newSiteRel(m)}`, {
            path: oldSiteRel(m),
          });
        }
        return this.tree.removeSiteFolder(oldSiteRel(m), this.protectedDataDirs(m));
      }
      case "remove-new-site": {
        if (record.local) {
          throw new QmError("PRECONDITION", `refusing to remove ${newSiteRel(m)} on the hostmaster's own front`, { path: newSiteRel(m) });
        }
        return this.tree.removeSiteFolder(newSiteRel(m), this.protectedDataDirs(m));
      }
    }
  }

  /** The folder an rsync server will read (sender) or write: a real directory under the root, never a symlink. */
  checkRsyncFolder(rel: string, mustExist: boolean): Promise<ConfinedPath> {
    return this.tree.root.requireRealDirectory(rel, { mustExist, purpose: "rsync" });
  }

  async migration(migrationId: string): Promise<MigrationSpec> {
    return (await this.registry.get(migrationId)).migration;
  }

  /**
   * The migration an rsync of `step` may serve, once its arguments and folder were checked: refused
   * unless the step order allows that step now (and never once `parked restore` put the data back here,
   * or while the migration lists other data dirs than this agent's). A push is written down as begun
   * before the rsync server starts; a fetch only reads, and changes nothing.
   */
  async forwardMigration(migrationId: string, step: string, run = 0): Promise<MigrationSpec> {
    const req: FrontRequest = { kind: "rsync", step };
    const look = await this.registry.get(migrationId);
    const decision = this.admit(look, req, run);
    if (decision.verdict !== "run") throw new QmError("OUT_OF_ORDER", `migration ${migrationId}: rsync of step ${step} is not a repeat of an Apply`, { step });
    if (decision.readOnly) return look.migration;
    return this.oneAtATime(migrationId, () =>
      withRecordLock(this.registry.stateDir, migrationId, { what: "the agent service" }, async () => {
        const record = await this.registry.get(migrationId);
        const again = this.admit(record, req, run);
        if (again.verdict !== "run") throw new QmError("OUT_OF_ORDER", `migration ${migrationId}: rsync of step ${step} is not a repeat of an Apply`, { step });
        record.state = settle(begin(frontStateOf(record), record.local, again), record.local, again, true, new Date().toISOString());
        await this.registry.save(record);
        return record.migration;
      }),
    );
  }

  /** A site folder holding any of these (non-empty, or a symlink) is never removed: the agent's own, and the migration's. */
  private protectedDataDirs(m: MigrationSpec): string[] {
    return [...new Set([...this.policy.dataDirs, ...m.dataDirs])];
  }

  /** What this front's record says of a migration, for `resume` (changes nothing). */
  async inspect(migrationId: string): Promise<{ registered: boolean; restoredOnFrontAt: string; pastPointOfNoReturn: boolean; endedAs: string }> {
    const record = await this.registry.find(migrationId);
    if (!record) return { registered: false, restoredOnFrontAt: "", pastPointOfNoReturn: false, endedAs: "" };
    return { registered: true, restoredOnFrontAt: record.restoredOnFrontAt ?? "", pastPointOfNoReturn: pastPointOfNoReturn(record), endedAs: frontStateOf(record).ended?.as ?? "" };
  }
}

const RENAMING: ReadonlySet<FrontAction> = new Set(RENAMING_ACTIONS);

/** Hello's free-space figures (for the inventory): undefined when they cannot be read, for a Hello never fails for them. */
const freeOrUnknown = (path: string): Promise<number | undefined> => freeBytes(path).catch(() => undefined);

/** The actions that take a migration forward (the table's, not its undos); after `parked restore` on this front only the undos are allowed. */
const FORWARD: ReadonlySet<FrontAction | "rsync"> = new Set(FRONT_STEPS.map((s) => s.forward));

const isForward = (req: FrontRequest): boolean => req.kind === "rsync" || FORWARD.has(req.action);

/**
 * The preflight problem of a migration whose data dirs are not the ones this agent protects (compared
 * as sets: the order is not policy). Pure.
 */
export function dataDirsProblems(m: MigrationSpec, policy: FrontPolicy): Problem[] {
  const mine = [...new Set(policy.dataDirs)].sort();
  const theirs = [...new Set(m.dataDirs)].sort();
  if (mine.length === theirs.length && mine.every((d, i) => d === theirs[i])) return [];
  const list = (dirs: readonly string[]) => `[${dirs.join(", ")}]`;
  return [
    {
      code: "DATA_DIRS_MISMATCH",
      path: "",
      message: `this front protects the data dirs ${list(policy.dataDirs)} (dataDirs in its agent config) and the migration lists ${list(m.dataDirs)}: every agent's dataDirs and the controller's must be the same list`,
    },
  ];
}

/**
 * The answer to a repeat of the action that ended a migration here: what it did, as done already.
 * Nothing is looked at on the disk.
 */
function answeredFromRecord(record: MigrationRecord, key: string): ChangeRecord[] {
  const action = key.slice(key.lastIndexOf("/") + 1);
  const ops = record.operations ?? {};
  const op = ops[key]?.changes ? ops[key] : Object.entries(ops).find(([k, o]) => k.endsWith(`/${action}`) && o.changes)?.[1];
  return (op?.changes ?? []).map((c) => ({ ...c, result: c.result === "absent" ? "absent" : "already-done" }));
}

function refuseIfRestoredOnFront(record: MigrationRecord): void {
  if (!record.restoredOnFrontAt) return;
  const id = record.migration.id;
  throw new QmError(
    "RESTORED_ON_FRONT",
    `migration ${id} was put back by \`quick-migrate-agent parked restore\` on this front at ${record.restoredOnFrontAt}: it can only be rolled back (\`quick-migrate rollback ${id}\`)`,
    { key: "migrationId" },
  );
}
