// The rsyncd.conf the agent writes for one tunnelled rsync: rsync's own daemon confines the client to
// the one site folder of the step (the way rsync daemons and rrsync confine clients). Pure.

/** Both ends of one step: the front sends its old site folder (fetch-site) or receives the new one (push-site). */
export type RsyncDirection = "send" | "receive";

export interface RsyncdConfOptions {
  readonly module: string;
  /** the module's path: the agent's pinned descriptor of the site folder (`/proc/self/fd/N`) */
  readonly path: string;
  readonly direction: RsyncDirection;
  /** relative to the site folder; never sent, never received, never deleted */
  readonly dataDirs: readonly string[];
  /** the agent runs as root: the transfer is chrooted into the site folder */
  readonly chroot: boolean;
  readonly logFile: string;
  /** a line of the file's header, for whoever finds it */
  readonly about: string;
}

/**
 * The options a client may use; every other one is refused (rsyncd.conf(5), "refuse options": `*`
 * refuses all but a few vital ones, `!x` accepts x). What quick-migrate's client asks for is rsync's
 * --archive without devices and specials, by number, with --delete on a push.
 *
 * Refused, among everything else, and why:
 * - -D, --devices, --specials, --copy-devices, --write-devices: no device node, FIFO or socket is made.
 * - --super, --fake-super, -X/--xattrs, -A/--acls: no privileged attribute (a file capability is a setuid bit).
 * - --delete-excluded, --delete-before/-after/-delay, --delete-missing-args, --remove-source-files,
 *   --remove-sent-files, and every delete option on a fetch: nothing is deleted but what a push replaces
 *   inside the site folder (daemon-excluded data dirs are never deleted, whatever a client asks).
 * - -L, -k, -K, --copy-unsafe-links: a sender that follows links reads outside the site folder.
 * - --backup-dir, --temp-dir, --partial-dir, --link-/--copy-/--compare-dest, --files-from, --inplace,
 *   --append, --write-batch, --log-file: side paths, and writes through an existing (hard-linked) file.
 */
const ALLOWED = ["r", "l", "p", "t", "g", "o", "numeric-ids"] as const;
const ALLOWED_ON_RECEIVE = ["delete", "delete-during"] as const;

export function rsyncdConf(o: RsyncdConfOptions): string {
  const allowed = o.direction === "receive" ? [...ALLOWED, ...ALLOWED_ON_RECEIVE] : [...ALLOWED];
  const lines = [
    `# quick-migrate agent: ${oneLine(o.about)}`,
    "# written for this one call and removed after it",
    `use chroot = ${o.chroot ? "yes" : "no"}`,
    // owners and groups by number: in a chroot there are no name databases, and without one names are not needed
    "numeric ids = yes",
    // symlinks keep their values: in a chroot they cannot lead out of the folder; without one rsync
    // stores an incoming link's value sanitised (no leading /, no .. above the folder)
    "munge symlinks = no",
    "reverse lookup = no",
    `log file = ${value(o.logFile)}`,
    // root keeps root (owners are kept by number, as before); anyone else is never switched
    ...(o.chroot ? ["uid = 0", "gid = 0"] : []),
    `[${o.module}]`,
    `path = ${value(o.path)}`,
    "list = no",
    `read only = ${o.direction === "send" ? "yes" : "no"}`,
    `write only = ${o.direction === "receive" ? "yes" : "no"}`,
    // `/x/***` is the folder and everything below it: a client cannot name a path inside it either
    ...(o.dataDirs.length > 0 ? [`exclude = ${o.dataDirs.map((d) => `/${literal(d)}/***`).join(" ")}`] : []),
    ...(o.direction === "receive" ? ["incoming chmod = Fug-s"] : []),
    `refuse options = * ${allowed.map((a) => `!${a}`).join(" ")}`,
  ];
  return `${lines.join("\n")}\n`;
}

/** A value rsync reads literally: one line, no surrounding space (rsync trims it), `%` doubled (rsync expands %VAR%). */
function value(s: string): string {
  if (/[\n\r\0]/.test(s) || s.trim() !== s || s === "") throw new Error(`rsyncd.conf: unusable value ${JSON.stringify(s)}`);
  return s.replaceAll("%", "%%");
}

/** A data dir as a filter pattern that matches only itself: no space (the list's separator), no wildcard. */
function literal(dataDir: string): string {
  if (/[\s*?[\\]/.test(dataDir)) throw new Error(`rsyncd.conf: data dir ${JSON.stringify(dataDir)} cannot be a literal pattern`);
  return value(dataDir);
}

function oneLine(s: string): string {
  return s.replace(/[\n\r\0]/g, " ");
}
