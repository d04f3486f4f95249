// Which migrations this agent's own records say are unfinished, and the preflight problem that a new
// migration of the same site meets while one is: its data is parked, or half moved, on this front, and
// only that migration's resume/rollback or `parked restore` can put it where a new one would find it.
import { join } from "node:path";
import { describeError } from "../shared/errors.js";
import { type DataPlace, type MigrationSpec, oldSiteRel, placeRel, sitesOf } from "../shared/migration.js";
import type { Problem } from "../shared/siteTree.js";
import { locate } from "./parked.js";
import { type Registry, isUnfinished, unsettledEntries } from "./registry.js";

/** Two migrations touch the same site when their site names (old or new) meet, on any platform. Pure. */
export function sharesSite(a: MigrationSpec, b: MigrationSpec): boolean {
  const mine = sitesOf(a);
  return sitesOf(b).some((s) => mine.includes(s));
}

/** Where one unsettled data dir is, as the problem names it: a place and a path relative to the root. */
export interface DataWhereabouts {
  readonly dataDir: string;
  readonly place: DataPlace;
  readonly path: string;
  readonly exists: boolean;
  /** a rename to this place was in flight and the disk does not show it done */
  readonly moving?: DataPlace;
}

const PLACE_WORDS: Readonly<Record<DataPlace, string>> = { old: "in the old site folder at", park: "parked at", new: "in the new site folder at" };

/** The problem a new migration meets on this front while `unfinished` holds its data here. Pure. */
export function unfinishedProblem(unfinished: MigrationSpec, where: readonly DataWhereabouts[]): Problem {
  const u = unfinished;
  const rename = u.newSite === u.site ? u.site : `${u.site} → ${u.newSite}`;
  const data = where
    .map((w) => `${w.dataDir} ${PLACE_WORDS[w.place]} ${w.path}${w.exists ? "" : " (MISSING)"}${w.moving ? ` (a rename to ${w.moving} was in flight)` : ""}`)
    .join(", ");
  return {
    code: "UNFINISHED_MIGRATION",
    path: where[0]?.path ?? oldSiteRel(u),
    message:
      `migration ${u.id} of ${rename} (${u.from} → ${u.to}) is unfinished on this front: ${data}; ` +
      `finish it first: \`quick-migrate resume ${u.id}\` or \`quick-migrate rollback ${u.id}\` on the hostmaster that has its journal, ` +
      `or, if that journal is lost, \`quick-migrate-agent parked restore ${u.id}\` on this front`,
  };
}

/**
 * The problems a new migration `m` meets on this front: one for each other recorded migration of the
 * same site that is unfinished, and one for each record that cannot be read (it may be one). The
 * migration's own record (a repeated preflight of the same id) never counts.
 */
export async function unfinishedProblems(registry: Registry, root: string, m: MigrationSpec): Promise<Problem[]> {
  const problems: Problem[] = [];
  const ids = (await registry.ids()).filter((id) => id !== m.id);
  // read together: a front keeps every migration of the last keepFinished days
  const reads = await Promise.all(ids.map((id) => registry.find(id).then((record) => ({ id, record }), (err: unknown) => ({ id, err }))));
  for (const read of reads) {
    if ("err" in read) {
      const file = join(registry.stateDir, "migrations", `${read.id}.json`);
      problems.push({
        code: "RECORD_UNREADABLE",
        path: "",
        message: `cannot read this agent's record ${file} (${describeError(read.err)}): it may be an unfinished migration of this site; repair it, or move it out of ${join(registry.stateDir, "migrations")} once its data is known to be in place`,
      });
      continue;
    }
    const { record } = read;
    if (!record || !sharesSite(record.migration, m) || !isUnfinished(record)) continue;
    const u = record.migration;
    const where: DataWhereabouts[] = [];
    for (const entry of unsettledEntries(record)) {
      const found = await locate(root, u, entry);
      where.push({
        dataDir: entry.dataDir,
        place: found.place,
        path: placeRel(u, entry.dataDir, found.place),
        exists: found.exists,
        ...(entry.moving !== undefined && found.place !== entry.moving ? { moving: entry.moving } : {}),
      });
    }
    problems.push(unfinishedProblem(u, where));
  }
  return problems;
}
