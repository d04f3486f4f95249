// The one rsync invocation quick-migrate makes, from both ends: the client arguments the controller
// runs (rsync's daemon protocol over our remote shell, `<front>::site/`), the remote shell itself, and
// what that client asks the remote shell to run, which is all the agent accepts before it runs rsync's
// daemon mode itself.

/** The one module an agent's per-call rsync daemon serves: the site folder of that step. */
export const RSYNC_MODULE = "site";

/**
 * What rsync asks its remote shell to run for `<host>::<module>` (rsync(1), "USING RSYNC-DAEMON FEATURES
 * VIA A REMOTE-SHELL CONNECTION"), without the host. The agent runs its own command, never this one.
 */
export const DAEMON_OVER_RSH: readonly string[] = Object.freeze(["rsync", "--server", "--daemon", "."]);

/**
 * rsync's remote shell: `sh` and two `cat`s joining rsync's pipe to the descriptor 3 the controller gave
 * rsync (one end of a socket pair; the controller carries the other to the agent). No Node process to be
 * made to listen, no socket path, no token. rsync splits this string itself (quotes honoured) and appends
 * `<host> rsync --server --daemon .`, which become the script's $1… and are not used: the agent runs its
 * own daemon ($0, quick-migrate-rsh, is the name `ps` shows). dash gives a background job /dev/null as
 * its stdin, hence rsync's pipe copied to fd 4 first. rsync holds fd 3 as long as it runs, so its end of
 * input never reaches the controller; rsync's daemon protocol ends a session by itself. The session ends
 * when the controller closes its end (the agent ended the stream): the reading `cat` ends, the writing
 * one is stopped, and rsync sees its remote shell exit. A fixed string: nothing of a migration's is ever
 * put in it.
 */
export const TUNNEL_RSH_SCRIPT = "exec 4<&0; cat <&4 >&3 4<&- & cat <&3 4<&-; kill $! 2>/dev/null";
export const TUNNEL_RSH = `sh -c '${TUNNEL_RSH_SCRIPT}' quick-migrate-rsh`;

/** `<front>::site/`: the folder the front's agent serves for the step, whatever path a client names. */
export function rsyncRemote(front: string): string {
  return `${front}::${RSYNC_MODULE}/`;
}

/**
 * Options of the client side. rsync's --archive without devices and specials (the agent's daemon refuses
 * them), owners and groups by number (the daemon's `numeric ids`), and the data dirs excluded (anchored at
 * the site folder) here too, so that a normal run never asks for what the daemon refuses. --blocking-io:
 * rsync would otherwise hand its remote shell a non-blocking pipe, which `cat` cannot write to.
 */
export function rsyncClientArgs(opts: {
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
    "--blocking-io",
    "--rsh",
    TUNNEL_RSH,
    opts.source,
    opts.destination,
  ];
}

/** Whether `args` (the remote shell's arguments after the host) are exactly the daemon-over-rsh invocation. */
export function isDaemonOverRsh(args: readonly string[]): boolean {
  return args.length === DAEMON_OVER_RSH.length && args.every((a, i) => a === DAEMON_OVER_RSH[i]);
}

/**
 * How often, while bytes move, each end of the rsync tunnel tells the other (an empty data frame) at the
 * least: the agent, while its rsync moves bytes; the controller, while the agent's bytes arrive. Bytes
 * handed to a slow link's buffers arrive long after; neither end's silence bound then cuts them off.
 */
export const TUNNEL_HEARTBEAT_MS = 500;
