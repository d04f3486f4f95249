// What one migration is, as both sides see it, and where its paths lie relative to a host's root. Pure.
import { QmError } from "./errors.js";
import { checkDataDirSet, checkMigrationId, checkPlatform, checkSiteName } from "./names.js";

export interface MigrationSpec {
  readonly id: string;
  readonly from: string;
  readonly site: string;
  readonly to: string;
  readonly newSite: string;
  readonly dataDirs: readonly string[];
}

/**
 * Validates every field; throws INVALID_NAME naming the first bad one. `storedRecord`: an agent's record
 * written before empty data-dir lists were refused may have one; it is read (it can only be rolled back:
 * its list differs from every agent's), never accepted from the wire.
 */
export function checkMigration(m: MigrationSpec, opts: { storedRecord?: boolean } = {}): MigrationSpec {
  checkMigrationId(m.id);
  checkPlatform(m.from, "source platform");
  checkPlatform(m.to, "target platform");
  checkSiteName(m.site, "site");
  checkSiteName(m.newSite, "new site");
  if (!(opts.storedRecord && m.dataDirs.length === 0)) checkDataDirSet(m.dataDirs);
  if (m.from === m.to && m.site === m.newSite) {
    throw new QmError("INVALID_NAME", `source and target are the same: ${m.from}/sites/${m.site}`, { key: "to" });
  }
  return Object.freeze({ ...m, dataDirs: Object.freeze([...m.dataDirs]) });
}

/** The site names a migration holds (locks, and on the fronts keeps to itself while unfinished): the old and the new. */
export function sitesOf(m: Pick<MigrationSpec, "site" | "newSite">): string[] {
  return [...new Set([m.site, m.newSite])];
}

export const PARK_FOLDER = ".quick-migrate-park";

export function siteRel(platform: string, site: string): string {
  return `${platform}/sites/${site}`;
}

export function oldSiteRel(m: MigrationSpec): string {
  return siteRel(m.from, m.site);
}

export function newSiteRel(m: MigrationSpec): string {
  return siteRel(m.to, m.newSite);
}

export function parkRel(migrationId: string): string {
  return `${PARK_FOLDER}/${migrationId}`;
}

export function parkedRel(migrationId: string, dataDir: string): string {
  return `${parkRel(migrationId)}/${encodeURIComponent(dataDir)}`;
}

/** The hostmaster's copy of the site fetched from a front, until master-move-site puts it in place. */
export function stagingRel(m: MigrationSpec): string {
  return `${parkRel(m.id)}/.site-staging`;
}

/** The hostmaster's stale site folder, set aside by master-move-site and deleted at finish. */
export function staleSiteRel(m: MigrationSpec): string {
  return `${parkRel(m.id)}/.stale-site`;
}

/** Where a data dir can be during a migration. */
export type DataPlace = "old" | "park" | "new";

export function placeRel(m: MigrationSpec, dataDir: string, place: DataPlace): string {
  switch (place) {
    case "old":
      return `${oldSiteRel(m)}/${dataDir}`;
    case "park":
      return parkedRel(m.id, dataDir);
    case "new":
      return `${newSiteRel(m)}/${dataDir}`;
  }
}
