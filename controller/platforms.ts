// Turning the CLI's platform arguments into platform paths relative to the hostmaster's root.
import { access, constants, readdir } from "node:fs/promises";
import { delimiter, isAbsolute, join, relative, resolve, sep } from "node:path";
import { QmError } from "../shared/errors.js";
import { lstatOrNull } from "../shared/fsutil.js";
import { PARK_FOLDER } from "../shared/migration.js";
import { checkPlatform } from "../shared/names.js";

/** A platform given relative to the root, or absolute under it. */
export function platformArg(value: string, root: string, what: string): string {
  if (!isAbsolute(value)) return checkPlatform(value.replace(/\/+$/, ""), what);
  const rel = relative(resolve(root), resolve(value));
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) {
    throw new QmError("INVALID_NAME", `${what} ${value} is outside the root ${root}`, { key: what });
  }
  return checkPlatform(rel.split(sep).join("/"), what);
}

/**
 * Finds the platform holding sites/<site> on the hostmaster (platforms one or two levels deep, like
 * `drupal-7.99` or `d10/web`). Exactly one must match.
 */
export async function findSourcePlatform(root: string, site: string): Promise<string> {
  const found: string[] = [];
  const visit = async (rel: string, depth: number): Promise<void> => {
    const st = await lstatOrNull(join(root, rel, "sites", site));
    if (st?.isDirectory()) found.push(rel);
    if (depth === 2) return;
    let names: string[];
    try {
      names = (await readdir(join(root, rel), { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith(".") && e.name !== "sites").map((e) => e.name);
    } catch {
      return;
    }
    await Promise.all(names.map((n) => visit(rel ? `${rel}/${n}` : n, depth + 1)));
  };
  await visit("", 0);
  const platforms = found.filter((p) => p !== "" && !p.startsWith(PARK_FOLDER)).sort();
  if (platforms.length === 0) throw new QmError("PRECONDITION", `unknown site ${site}: no platform under ${root} has sites/${site}`, { key: site });
  if (platforms.length > 1) {
    throw new QmError("PRECONDITION", `site ${site} is on several platforms (${platforms.join(", ")}): pass --from`, { key: site });
  }
  return platforms[0] as string;
}

/** The rsync binary must be on the hostmaster before anything starts. */
export async function checkExecutable(command: string): Promise<void> {
  const candidates = command.includes("/") ? [command] : (process.env.PATH ?? "").split(delimiter).map((d) => join(d, command));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return;
    } catch {
      // next
    }
  }
  throw new QmError("PRECONDITION", `${command} is not installed on the hostmaster: apt-get install -y rsync`, { key: "rsync" });
}
