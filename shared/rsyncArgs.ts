// The one rsync invocation quick-migrate makes, from both ends: the client arguments the controller
// runs, and the check the agent applies to the `rsync --server …` argument list it is asked to run.
import { QmError } from "./errors.js";
import { type MigrationSpec, newSiteRel, oldSiteRel } from "./migration.js";

/** Options of the client side; data dirs are excluded (anchored at the site folder) and never transferred. */
export function rsyncClientArgs(opts: {
  rsh: string;
  source: string;
  destination: string;
  dataDirs: readonly string[];
  /** a local folder rsync may copy unchanged files from (receiver side only: never sent to the agent) */
  copyDest?: string;
}): string[] {
  return [
    "--archive",
    "--delete",
    ...opts.dataDirs.map((d) => `--exclude=/${d}`),
    ...(opts.copyDest ? [`--copy-dest=${opts.copyDest}`] : []),
    "--rsh",
    opts.rsh,
    opts.source,
    opts.destination,
  ];
}

// What `--archive --delete` makes the client ask for: `-logDtpre.<capabilities>` and, for a receiver, `--delete`.
const SHORT_OPTIONS = /^-[logDtpr]+(e\.[A-Za-z]*)?$/;
const LONG_OPTIONS = new Set(["--delete"]);

export interface ServerInvocation {
  readonly args: readonly string[];
  readonly sender: boolean;
  readonly path: string;
}

/**
 * Accepts only `rsync --server [--sender] -<allowed letters> [--delete] . <path>` where the path is the
 * site folder this step may touch: the old one (sender, fetch) or the new one (receiver, push).
 * Returns the arguments to run (without the leading "rsync").
 */
export function checkServerArgs(args: readonly string[], m: MigrationSpec, step: string): ServerInvocation {
  const refuse = (why: string) =>
    new QmError("TUNNEL_REFUSED", `rsync tunnel refused for ${JSON.stringify(step.slice(0, 40))} of ${m.id}: ${why.slice(0, 300)}`, { step });
  if (args[0] !== "rsync" || args[1] !== "--server") throw refuse("not an `rsync --server` invocation");
  const rest = args.slice(2);
  const sender = rest[0] === "--sender";
  if (sender) rest.shift();
  const short = rest.shift();
  if (short === undefined || !SHORT_OPTIONS.test(short)) throw refuse(`option ${JSON.stringify(short ?? "")} not allowed`);
  while (rest[0] !== undefined && rest[0] !== ".") {
    const opt = rest.shift() as string;
    if (!LONG_OPTIONS.has(opt) || sender) throw refuse(`option ${JSON.stringify(opt)} not allowed`);
  }
  if (rest.shift() !== ".") throw refuse("missing `.` before the path");
  if (rest.length !== 1) throw refuse(`expected exactly one path, got ${rest.length}`);
  const path = rest[0] as string;
  if (step === "fetch-site") {
    if (!sender) throw refuse("fetch-site only reads from this front");
    if (path !== `${oldSiteRel(m)}/`) throw refuse(`path ${JSON.stringify(path)} is not ${oldSiteRel(m)}/`);
  } else if (step === "push-site") {
    if (sender) throw refuse("push-site only writes to this front");
    if (path !== `${newSiteRel(m)}/`) throw refuse(`path ${JSON.stringify(path)} is not ${newSiteRel(m)}/`);
  } else {
    throw refuse("rsync is only used by fetch-site and push-site");
  }
  return { args: args.slice(1), sender, path };
}
