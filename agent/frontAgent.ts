// The state and logic behind the agent's RPCs: checks a migration, registers it, and does each step's
// work on this front's root. The gRPC handlers in server.ts are thin wrappers over this class.
import { hostname } from "node:os";
import { QmError } from "../shared/errors.js";
import { type MigrationSpec, checkMigration, newSiteRel, oldSiteRel } from "../shared/migration.js";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import { type ChangeRecord, type PreflightReport, SiteTree } from "../shared/siteTree.js";
import type { Registry } from "./registry.js";

export type AgentAction = "park-data" | "unpark-data" | "restore-data" | "unrestore-data" | "remove-old-site" | "remove-new-site";

export class FrontAgent {
  readonly tree: SiteTree;
  /** one action at a time per migration: repeats after a lost reply may overlap the original */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    root: string,
    readonly registry: Registry,
  ) {
    this.tree = new SiteTree(root);
  }

  hello(): { protocolVersion: number; agentVersion: string; hostname: string } {
    return { protocolVersion: PROTOCOL_VERSION, agentVersion: PACKAGE_VERSION, hostname: hostname() };
  }

  async preflight(input: MigrationSpec, opts: { register: boolean; local: boolean }): Promise<PreflightReport> {
    const m = checkMigration(input);
    const report = await this.tree.preflight(m, { targetMustBeAbsent: !opts.local, restoresHere: true });
    if (opts.register && report.problems.length === 0) await this.registry.register(m, opts.local);
    return report;
  }

  /** Runs one action for a registered migration. Every action is safe to repeat. */
  async apply(migrationId: string, action: AgentAction): Promise<ChangeRecord[]> {
    const previous = this.queues.get(migrationId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.applyNow(migrationId, action));
    this.queues.set(migrationId, run);
    try {
      return await run;
    } finally {
      if (this.queues.get(migrationId) === run) this.queues.delete(migrationId);
    }
  }

  private async applyNow(migrationId: string, action: AgentAction): Promise<ChangeRecord[]> {
    const record = await this.registry.get(migrationId);
    const m = record.migration;
    const ledger = this.registry.ledger(record);
    switch (action) {
      case "park-data":
        return this.tree.moveData(m, ledger, "old", "park");
      case "unpark-data":
        return this.tree.moveData(m, ledger, "park", "old");
      case "restore-data":
        return this.tree.moveData(m, ledger, "park", "new");
      case "unrestore-data":
        return this.tree.moveData(m, ledger, "new", "park");
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

  async migration(migrationId: string): Promise<MigrationSpec> {
    return (await this.registry.get(migrationId)).migration;
  }
}
