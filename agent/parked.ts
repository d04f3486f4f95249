// Recovery on a front without its hostmaster: lists the data dirs that the agent's own records say are
// not back in their old site folder, and puts one migration's back. Reads the state dir directly, so it
// works while the service is stopped; no gRPC.
import { join } from "node:path";
import { Root, isPlaceholder, isRealDirectory } from "../shared/confined.js";
import { QmError, describeError } from "../shared/errors.js";
import { type DataPlace, type MigrationSpec, oldSiteRel, placeRel } from "../shared/migration.js";
import { type LedgerEntry, SiteTree } from "../shared/siteTree.js";
import { withRecordLock } from "./recordLock.js";
import { type MigrationRecord, type Registry, pastPointOfNoReturn, unsettledEntries } from "./registry.js";

/** One data dir that is not back at its original path, as `parked list` shows it. */
export interface ParkedEntry {
  migrationId: string;
  site: string;
  newSite: string;
  from: string;
  to: string;
  dataDir: string;
  kind: "directory" | "symlink";
  linkTarget?: string;
  /** absolute: `<root>/<from>/sites/<site>/<dataDir>` */
  originalPath: string;
  /** where it is now: the ledger's place, checked against the disk when a rename was in flight */
  place: DataPlace;
  /** absolute path of that place */
  path: string;
  /** something is at `path` now (lstat; a symlink counts, dangling or not) */
  exists: boolean;
  /** the ledger's record as written */
  ledgerAt: DataPlace;
  moving?: DataPlace;
}

export interface UnreadableRecord {
  file: string;
  message: string;
}

export interface ParkedList {
  /** how many migration records were read */
  migrations: number;
  entries: ParkedEntry[];
  unreadable: UnreadableRecord[];
}

/** A data dir's place as text, for the listing and the report (what is done there goes through the Root). */
function shown(root: Root, m: MigrationSpec, dataDir: string, place: DataPlace): string {
  return root.shown(placeRel(m, dataDir, place));
}

/** Whether something is at a data dir's place; a place whose folder leads out of the root holds nothing of this migration. */
async function present(root: Root, m: MigrationSpec, dataDir: string, place: DataPlace): Promise<boolean> {
  try {
    return (await root.lstat(placeRel(m, dataDir, place))) !== null;
  } catch (err) {
    if (err instanceof QmError && err.code === "OUTSIDE_ROOT") return false;
    throw err;
  }
}

/**
 * Where a data dir is: the ledger's `at`, unless a rename to `moving` was in flight and the disk shows
 * it happened (nothing at `at`, something at `moving`). When neither holds it, its other places are
 * looked at: a rename the ledger recorded and a crash lost leaves it where it was (its original path,
 * say), and it is reported there rather than missing.
 */
export async function locate(root: string, m: MigrationSpec, entry: LedgerEntry): Promise<{ place: DataPlace; exists: boolean }> {
  const tree = new SiteTree(root);
  if (await present(tree.root, m, entry.dataDir, entry.at)) return { place: entry.at, exists: true };
  if (entry.moving !== undefined && entry.moving !== entry.at && (await present(tree.root, m, entry.dataDir, entry.moving))) {
    return { place: entry.moving, exists: true };
  }
  const found = await tree.whereIs(m, entry).catch(() => undefined);
  return found ? { place: found, exists: true } : { place: entry.at, exists: false };
}

/** Ledger entries in the migration's data-dir order. */
function orderedLedger(record: MigrationRecord): LedgerEntry[] {
  const order = record.migration.dataDirs;
  return [...record.ledger].sort((a, b) => order.indexOf(a.dataDir) - order.indexOf(b.dataDir));
}

export async function listParked(root: string, registry: Registry): Promise<ParkedList> {
  const out: ParkedList = { migrations: 0, entries: [], unreadable: [] };
  for (const id of await registry.ids()) {
    let record: MigrationRecord | undefined;
    try {
      record = await registry.find(id);
    } catch (err) {
      // one damaged record must not hide the others
      out.unreadable.push({ file: join(registry.stateDir, "migrations", `${id}.json`), message: describeError(err) });
      continue;
    }
    if (!record) continue;
    out.migrations++;
    const m = record.migration;
    const confined = new Root(root);
    // back in the old site folder, or live in the new one of a finished migration: nothing of it is parked
    const unsettled = new Set(unsettledEntries(record));
    for (const entry of orderedLedger(record)) {
      if (!unsettled.has(entry)) continue;
      const { place, exists } = await locate(root, m, entry);
      out.entries.push({
        migrationId: m.id,
        site: m.site,
        newSite: m.newSite,
        from: m.from,
        to: m.to,
        dataDir: entry.dataDir,
        kind: entry.kind,
        ...(entry.linkTarget === undefined ? {} : { linkTarget: entry.linkTarget }),
        originalPath: shown(confined, m, entry.dataDir, "old"),
        place,
        path: shown(confined, m, entry.dataDir, place),
        exists,
        ledgerAt: entry.at,
        ...(entry.moving === undefined ? {} : { moving: entry.moving }),
      });
    }
  }
  return out;
}

export type RestoreOutcome = "restored" | "already-done" | "refused" | "missing" | "failed";

export interface RestoreResult {
  dataDir: string;
  outcome: RestoreOutcome;
  /** absolute original path (in the old site folder) */
  originalPath: string;
  /** where the data dir was found (absent when it was found nowhere) */
  place?: DataPlace;
  path?: string;
  /** an empty placeholder directory at the original path was removed to make room */
  placeholderRemoved?: boolean;
  /** why, for refused, missing and failed */
  reason?: string;
}

export interface RestoreReport {
  migration: MigrationSpec;
  oldSitePath: string;
  results: RestoreResult[];
}

/**
 * Puts one migration's data dirs back in the old site folder, under the record's lock (the service may
 * be running). Refused past the point of no return on this front: the hostmaster's `resume` finishes
 * such a migration, and a restore would split the site's data between two platforms. Once anything was
 * put back, the record says so and the migration only goes back from then on (the hostmaster's
 * `resume` rolls it back instead). Throws NOT_REGISTERED for an id this agent has no record of
 * (INVALID_NAME for a malformed one).
 */
export async function restoreParked(root: string, registry: Registry, migrationId: string): Promise<RestoreReport> {
  if (!(await registry.find(migrationId))) {
    throw new QmError("NOT_REGISTERED", `no record of migration ${migrationId} in ${registry.stateDir}/migrations`, { key: "migrationId" });
  }
  return withRecordLock(registry.stateDir, migrationId, { what: "quick-migrate-agent parked restore" }, async () => {
    const record = await registry.get(migrationId);
    if (pastPointOfNoReturn(record)) {
      throw new QmError(
        "PAST_POINT_OF_NO_RETURN",
        `migration ${migrationId} is past the point of no return on this front (it was asked to remove the old site folder): run \`quick-migrate resume ${migrationId}\` on the hostmaster; putting the data back here would split the site between two platforms`,
        { key: "migrationId" },
      );
    }
    const report = await restoreLocked(root, registry, record);
    if (report.results.some((r) => r.outcome === "restored")) await registry.markRestoredOnFront(record);
    return report;
  });
}

async function restoreLocked(root: string, registry: Registry, record: MigrationRecord): Promise<RestoreReport> {
  const m = record.migration;
  const tree = new SiteTree(root);
  const ledger = registry.ledger(record);
  const oldSitePath = tree.root.shown(oldSiteRel(m));
  const site = await tree.root.lstat(oldSiteRel(m)).catch((err: unknown) => (err instanceof QmError && err.code === "OUTSIDE_ROOT" ? err : Promise.reject(err)));
  const siteMissing =
    site instanceof QmError
      ? `the old site folder ${oldSitePath} leads out of the root (${site.message})`
      : !site
        ? `the old site folder ${oldSitePath} is gone`
        : !isRealDirectory(site)
          ? `the old site folder ${oldSitePath} is not a real directory`
          : undefined;

  const results: RestoreResult[] = [];
  for (const recorded of orderedLedger(record)) {
    const { dataDir } = recorded;
    const originalPath = shown(tree.root, m, dataDir, "old");
    const where = await locate(root, m, recorded);
    const path = shown(tree.root, m, dataDir, where.place);
    const found = { place: where.place, path };
    if (!where.exists) {
      const looked = [recorded.at, recorded.moving].filter((p): p is DataPlace => p !== undefined).map((p) => shown(tree.root, m, dataDir, p));
      results.push({ dataDir, outcome: "missing", originalPath, reason: `not found at ${[...new Set(looked)].join(" nor at ")}` });
      continue;
    }
    try {
      if (recorded.moving !== undefined || where.place !== recorded.at) {
        // a rename was in flight when the agent stopped, or one recorded was lost: record where the disk shows the data dir is
        const entries = await ledger.entries();
        const entry = entries.find((e) => e.dataDir === dataDir);
        if (entry) {
          entry.at = where.place;
          delete entry.moving;
          await ledger.save(entries);
        }
      }
      if (where.place === "old") {
        results.push({ dataDir, outcome: "already-done", originalPath, ...found });
        continue;
      }
      if (siteMissing) {
        results.push({ dataDir, outcome: "refused", originalPath, ...found, reason: siteMissing });
        continue;
      }
      const occupant = await tree.root.lstat(placeRel(m, dataDir, "old"));
      if (occupant) {
        // an empty placeholder there is removed by the move; anything else stays and the restore is refused
        if (!(await isPlaceholder(await tree.resolve(placeRel(m, dataDir, "old")), occupant))) {
          const what = occupant.isSymbolicLink() ? "a symlink" : occupant.isDirectory() ? "a non-empty directory" : "a file";
          results.push({ dataDir, outcome: "refused", originalPath, ...found, reason: `${originalPath} is occupied by ${what}` });
          continue;
        }
      }
      const [change] = await tree.moveData({ ...m, dataDirs: [dataDir] }, ledger, where.place, "old", { placeholderOk: true });
      results.push({
        dataDir,
        outcome: "restored",
        originalPath,
        ...found,
        ...(change?.result === "rmdir-placeholder" ? { placeholderRemoved: true } : {}),
      });
    } catch (err) {
      results.push({ dataDir, outcome: "failed", originalPath, ...found, reason: describeError(err) });
    }
  }
  // a data dir put back from the new site folder leaves this migration's park folder as it was, empty
  // when every data dir is back: nothing of the migration is left in the park area
  if (results.every((r) => r.outcome === "restored" || r.outcome === "already-done")) await tree.removeEmptyParkFolders(m.id);
  return { migration: m, oldSitePath, results };
}

/** 0 when every data dir is back at its original path, 1 otherwise. */
export function restoreExitCode(report: RestoreReport): number {
  return report.results.every((r) => r.outcome === "restored" || r.outcome === "already-done") ? 0 : 1;
}

// ---- output --------------------------------------------------------------------------------------

export function formatParkedList(list: ParkedList): string[] {
  if (list.entries.length === 0) {
    return [
      list.migrations === 0
        ? "nothing parked: no migration is recorded on this agent"
        : `nothing parked: every data dir of the ${list.migrations} recorded migration(s) is at its original path`,
    ];
  }
  return list.entries.map((e) => {
    const kind = e.kind === "symlink" ? `symlink → ${e.linkTarget ?? "?"}` : "directory";
    const inFlight =
      e.moving !== undefined
        ? ` (ledger: at ${e.ledgerAt}, moving to ${e.moving})`
        : e.exists && e.place !== e.ledgerAt
          ? ` (ledger: at ${e.ledgerAt}; found at ${e.place === "old" ? "its original path" : e.place}: a rename recorded before a crash was lost)`
          : "";
    return `${e.migrationId} ${e.site} ${e.dataDir}: at ${e.place} ${e.path}${inFlight} [${kind}, ${e.exists ? "present" : "MISSING"}]; original ${e.originalPath}`;
  });
}

export function formatRestoreReport(report: RestoreReport): string[] {
  const m = report.migration;
  if (report.results.length === 0) return [`migration ${m.id} (${m.site}): nothing to restore: no data dir of it was ever moved on this front`];
  const lines = report.results.map((r) => {
    switch (r.outcome) {
      case "restored":
        return `${r.dataDir}: restored to ${r.originalPath} from ${r.place} ${r.path}${r.placeholderRemoved ? " (an empty placeholder directory there was removed)" : ""}`;
      case "already-done":
        return `${r.dataDir}: already at ${r.originalPath}`;
      case "refused":
        return `${r.dataDir}: refused: ${r.reason}; it stays at ${r.place} ${r.path}`;
      case "missing":
        return `${r.dataDir}: missing: ${r.reason}`;
      case "failed":
        return `${r.dataDir}: failed: ${r.reason}; it stays at ${r.place} ${r.path}`;
    }
  });
  const back = report.results.filter((r) => r.outcome === "restored" || r.outcome === "already-done").length;
  const total = report.results.length;
  lines.push(
    back === total
      ? `migration ${m.id} (${m.site}): all ${total} data dir(s) are back in ${report.oldSitePath}`
      : `migration ${m.id} (${m.site}): ${back} of ${total} data dir(s) back in ${report.oldSitePath}; fix what is named above and run restore again`,
  );
  return lines;
}
