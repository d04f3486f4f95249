// The one rsync invocation quick-migrate makes, from both ends: the client arguments the controller
// runs (rsync's daemon protocol over our remote shell, `<front>::site/`), and what that client asks the
// remote shell to run, which is all the agent accepts before it runs rsync's daemon mode itself.

/** The one module an agent's per-call rsync daemon serves: the site folder of that step. */
export const RSYNC_MODULE = "site";

/**
 * What rsync asks its remote shell to run for `<host>::<module>` (rsync(1), "USING RSYNC-DAEMON FEATURES
 * VIA A REMOTE-SHELL CONNECTION"), without the host. The agent runs its own command, never this one.
 */
export const DAEMON_OVER_RSH: readonly string[] = Object.freeze(["rsync", "--server", "--daemon", "."]);

/** `<front>::site/`: the folder the front's agent serves for the step, whatever path a client names. */
export function rsyncRemote(front: string): string {
  return `${front}::${RSYNC_MODULE}/`;
}

/**
 * Options of the client side. rsync's --archive without devices and specials (the agent's daemon refuses
 * them), owners and groups by number (the daemon's `numeric ids`), and the data dirs excluded (anchored at
 * the site folder) here too, so that a normal run never asks for what the daemon refuses.
 */
export function rsyncClientArgs(opts: {
  rsh: string;
  source: string;
  destination: string;
  dataDirs: readonly string[];
  /** a local folder rsync may copy unchanged files from (receiver side only: never sent to the agent) */
  copyDest?: string;
}): string[] {
  return [
    "--recursive",
    "--links",
    "--perms",
    "--times",
    "--group",
    "--owner",
    "--numeric-ids",
    "--delete",
    ...opts.dataDirs.map((d) => `--exclude=/${d}`),
    ...(opts.copyDest ? [`--copy-dest=${opts.copyDest}`] : []),
    "--rsh",
    opts.rsh,
    opts.source,
    opts.destination,
  ];
}

/** Whether `args` (the remote shell's arguments after the host) are exactly the daemon-over-rsh invocation. */
export function isDaemonOverRsh(args: readonly string[]): boolean {
  return args.length === DAEMON_OVER_RSH.length && args.every((a, i) => a === DAEMON_OVER_RSH[i]);
}
