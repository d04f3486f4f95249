// The state and logic behind the agent's RPCs: checks a migration, registers it, and does each step's
// work on this front's root. The gRPC handlers in server.ts are thin wrappers over this class.
import { hostname } from "node:os";
import type { ConfinedPath } from "../shared/confined.js";
import { QmError, describeError } from "../shared/errors.js";
import { type MigrationSpec, checkMigration, newSiteRel, oldSiteRel, placeRel } from "../shared/migration.js";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import { ensureRootId } from "../shared/rootId.js";
import { type ChangeRecord, type PreflightReport, SiteTree } from "../shared/siteTree.js";
import type { FrontAction } from "../shared/wire.js";
import { type AgentFaults, NO_FAULTS } from "./faults.js";
import { withRecordLock } from "./recordLock.js";
import { type MigrationRecord, type Registry, pastPointOfNoReturn } from "./registry.js";
import { unfinishedProblems } from "./unfinished.js";

export class SiteOperations {
  readonly tree: SiteTree;
  /** one action at a time per migration: repeats after a lost reply may overlap the original */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    root: string,
    readonly registry: Registry,
    private readonly faults: AgentFaults = NO_FAULTS,
  ) {
    this.tree = new SiteTree(root);
  }

  /**
   * Versions, and the root's identity read from its file now (made again only if it was deleted since
   * the start): an id cached at start would miss a root mounted, or shared, after it.
   */
  async hello(): Promise<{ protocolVersion: number; agentVersion: string; hostname: string; rootId: string }> {
    return { protocolVersion: PROTOCOL_VERSION, agentVersion: PACKAGE_VERSION, hostname: hostname(), rootId: await ensureRootId(this.tree.root.path) };
  }

  /**
   * The tree's checks, and this agent's own records: a migration of a site that an unfinished one
   * still holds here is refused, whatever the hostmaster remembers of it.
   */
  async preflight(input: MigrationSpec, opts: { register: boolean; local: boolean }): Promise<PreflightReport> {
    const m = checkMigration(input);
    const report = await this.tree.preflight(m, { targetMustBeAbsent: !opts.local, restoresHere: true });
    report.problems.push(...(await unfinishedProblems(this.registry, this.tree.root.path, m)));
    if (opts.register && report.problems.length === 0) await this.registry.register(m, opts.local);
    return report;
  }

  /**
   * Runs one action of one step for a registered migration. Every action is safe to repeat, and a
   * repeat always does the work again (checked against the disk): a rollback may have undone it since.
   * The result is kept in the migration's record under `"<step>/<action>"`, for audit only.
   */
  async apply(migrationId: string, step: string, action: FrontAction): Promise<ChangeRecord[]> {
    const previous = this.queues.get(migrationId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.applyNow(migrationId, step, action));
    this.queues.set(migrationId, run);
    try {
      return await run;
    } finally {
      if (this.queues.get(migrationId) === run) this.queues.delete(migrationId);
    }
  }

  private async applyNow(migrationId: string, step: string, action: FrontAction): Promise<ChangeRecord[]> {
    // the record is read and changed under its lock: `parked restore` may be run on this front meanwhile
    await this.registry.get(migrationId);
    return withRecordLock(this.registry.stateDir, migrationId, { what: "the agent service" }, () => this.applyLocked(migrationId, step, action));
  }

  private async applyLocked(migrationId: string, step: string, action: FrontAction): Promise<ChangeRecord[]> {
    const record = await this.registry.get(migrationId);
    const key = `${step || "-"}/${action}`;
    let changes: ChangeRecord[];
    try {
      changes = await this.act(record, action);
    } catch (err) {
      const error = err instanceof QmError ? { code: err.code, message: err.message } : { code: "INTERNAL", message: describeError(err) };
      // the failure is what the caller must see, even if it cannot be kept
      await this.registry.recordOperation(record, key, { error }).catch(() => undefined);
      throw err;
    }
    await this.registry.recordOperation(record, key, { changes });
    return changes;
  }

  private async act(record: MigrationRecord, action: FrontAction): Promise<ChangeRecord[]> {
    const m = record.migration;
    const ledger = this.registry.ledger(record);
    const afterRename = (dataDir: string) => this.faults.afterRename(action, m.id, dataDir);
    if (FORWARD.has(action)) refuseIfRestoredOnFront(record);
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
        return this.tree.removeSiteFolder(oldSiteRel(m), m.dataDirs);
      }
      case "remove-new-site": {
        if (record.local) {
          throw new QmError("PRECONDITION", `refusing to remove ${newSiteRel(m)} on the hostmaster's own front`, { path: newSiteRel(m) });
        }
        return this.tree.removeSiteFolder(newSiteRel(m), m.dataDirs);
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

  /** A migration an rsync (a forward step) may serve: refused once `parked restore` put its data back here. */
  async forwardMigration(migrationId: string): Promise<MigrationSpec> {
    const record = await this.registry.get(migrationId);
    refuseIfRestoredOnFront(record);
    return record.migration;
  }

  /** What this front's record says of a migration, for `resume` (changes nothing). */
  async inspect(migrationId: string): Promise<{ registered: boolean; restoredOnFrontAt: string; pastPointOfNoReturn: boolean }> {
    const record = await this.registry.find(migrationId);
    if (!record) return { registered: false, restoredOnFrontAt: "", pastPointOfNoReturn: false };
    return { registered: true, restoredOnFrontAt: record.restoredOnFrontAt ?? "", pastPointOfNoReturn: pastPointOfNoReturn(record) };
  }
}

/** The actions that take a migration forward; after `parked restore` on this front only the undos are allowed. */
const FORWARD: ReadonlySet<FrontAction> = new Set(["park-data", "restore-data", "remove-old-site"]);

function refuseIfRestoredOnFront(record: MigrationRecord): void {
  if (!record.restoredOnFrontAt) return;
  const id = record.migration.id;
  throw new QmError(
    "RESTORED_ON_FRONT",
    `migration ${id} was put back by \`quick-migrate-agent parked restore\` on this front at ${record.restoredOnFrontAt}: it can only be rolled back (\`quick-migrate rollback ${id}\`)`,
    { key: "migrationId" },
  );
}
