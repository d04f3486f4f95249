// Validation of the names that cross the wire: site URIs, platform paths, data dirs, migration ids.
// They are validated as names, never resolved as paths. Pure.
import { QmError } from "./errors.js";

const MAX_NAME = 253;
const MAX_PLATFORM = 512;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
const PATH_PART = /^[A-Za-z0-9_][A-Za-z0-9._+@-]{0,254}$/;
const MIGRATION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A site URI is a hostname: dot-separated labels of letters, digits and inner hyphens. */
export function checkSiteName(value: string, what = "site"): string {
  const bad = (why: string) => new QmError("INVALID_NAME", `invalid ${what} ${JSON.stringify(truncate(value))}: ${why}`, { key: what });
  if (value.length === 0) throw bad("empty");
  if (value.length > MAX_NAME) throw bad(`longer than ${MAX_NAME} characters`);
  for (const label of value.split(".")) {
    if (!LABEL.test(label)) throw bad("a site name must be a hostname (letters, digits, inner hyphens, dot-separated)");
  }
  return value;
}

/** A platform is a relative path under the root: no leading slash, no `..`, `.` or empty parts. */
export function checkRelativePath(value: string, what: string, max = MAX_PLATFORM): string {
  const bad = (why: string) => new QmError("INVALID_NAME", `invalid ${what} ${JSON.stringify(truncate(value))}: ${why}`, { key: what });
  if (value.length === 0) throw bad("empty");
  if (value.length > max) throw bad(`longer than ${max} characters`);
  if (value.startsWith("/")) throw bad("must be relative to the root");
  for (const part of value.split("/")) {
    if (part === "") throw bad("empty path part");
    if (part === "." || part === "..") throw bad(`"${part}" is not allowed`);
    if (!PATH_PART.test(part)) throw bad(`part ${JSON.stringify(truncate(part))} has characters outside [A-Za-z0-9._+@-] or starts with one of ".-+@"`);
  }
  return value;
}

export function checkPlatform(value: string, what = "platform"): string {
  return checkRelativePath(value, what);
}

export function checkDataDir(value: string): string {
  return checkRelativePath(value, "data dir", 255);
}

export function checkMigrationId(value: string): string {
  if (!MIGRATION_ID.test(value)) {
    throw new QmError("INVALID_NAME", `invalid migration id ${JSON.stringify(truncate(value))}`, { key: "migrationId" });
  }
  return value;
}

/** The most data dirs a migration, or an agent, may name: each is a rename per step on every front. */
export const MAX_DATA_DIRS = 64;

/** What both configs default to, and what an agent protects unless its config says otherwise. */
export const DEFAULT_DATA_DIRS: readonly string[] = Object.freeze(["files", "private/files"]);

/**
 * Data dirs: at least one, at most MAX_DATA_DIRS (counted before anything else is looked at), distinct,
 * and none inside another (renaming one would move the other). Linear: each dir's parent paths are
 * looked up in a set of the dirs.
 */
export function checkDataDirSet(dirs: readonly string[]): readonly string[] {
  if (dirs.length === 0) throw new QmError("INVALID_NAME", "no data dirs: at least one is needed", { key: "dataDirs" });
  if (dirs.length > MAX_DATA_DIRS) {
    throw new QmError("INVALID_NAME", `${dirs.length} data dirs: at most ${MAX_DATA_DIRS} are allowed`, { key: "dataDirs" });
  }
  dirs.forEach(checkDataDir);
  const all = new Set(dirs);
  for (const d of dirs) {
    for (let slash = d.indexOf("/"); slash !== -1; slash = d.indexOf("/", slash + 1)) {
      const parent = d.slice(0, slash);
      if (all.has(parent)) throw new QmError("INVALID_NAME", `data dir ${d} lies inside data dir ${parent}`, { key: "dataDirs" });
    }
  }
  if (all.size !== dirs.length) throw new QmError("INVALID_NAME", "data dirs listed twice", { key: "dataDirs" });
  return dirs;
}

/** A step name (it keys the agent's operation records): short, lowercase, never a path. */
export function checkStepName(value: string): string {
  if (!/^[a-z][a-z-]{0,39}$/.test(value)) {
    throw new QmError("INVALID_NAME", `invalid step ${JSON.stringify(truncate(value))}`, { key: "step" });
  }
  return value;
}

/** An informational version string (the controller's, sent with Hello). */
export function checkVersionString(value: string): string {
  if (value !== "" && !/^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/.test(value)) {
    throw new QmError("INVALID_NAME", `invalid version ${JSON.stringify(truncate(value))}`, { key: "version" });
  }
  return value;
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
