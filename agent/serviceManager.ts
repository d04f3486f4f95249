// What the agent tells systemd when it runs as a Type=notify service (sd_notify): ready once it serves,
// reloading around a SIGHUP, stopping. Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
import { execFile } from "node:child_process";
import { hrtime } from "node:process";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";

export interface ServiceManagerLike {
  /** serving; `status` is what `systemctl status` shows */
  ready(status: string): Promise<void>;
  /** a reload (SIGHUP) has begun; `ready` ends it */
  reloading(): Promise<void>;
  stopping(): Promise<void>;
}

export const NO_SERVICE_MANAGER: ServiceManagerLike = {
  ready: async () => undefined,
  reloading: async () => undefined,
  stopping: async () => undefined,
};

const NOTIFY_TIMEOUT_MS = 10_000;

/**
 * Node cannot send on a unix datagram socket, so systemd-notify(1), a child of the agent, sends each
 * message (the unit says NotifyAccess=all). It waits until systemd has read the message (its BARRIER),
 * so systemd still finds it in the agent's cgroup. A message that cannot be sent is logged, never thrown:
 * systemd then times the start out, which says more than an agent that stops serving.
 */
class SystemdNotify implements ServiceManagerLike {
  constructor(
    private readonly socket: string,
    private readonly log: Logger,
  ) {}

  ready(status: string): Promise<void> {
    // MAINPID: the agent itself, should it have been started through a wrapper that stays its parent
    return this.send(["--ready", `--pid=${process.pid}`, `--status=${status}`]);
  }

  reloading(): Promise<void> {
    // MONOTONIC_USEC lets a newer systemd (Type=notify-reload) match this reload to its request
    return this.send(["RELOADING=1", `MONOTONIC_USEC=${hrtime.bigint() / 1000n}`, "STATUS=reloading"]);
  }

  stopping(): Promise<void> {
    return this.send(["STOPPING=1", "STATUS=stopping"]);
  }

  // node's execFile rather than execa: loading execa (for this one short child) would cost the idle agent
  // several MB and its start tens of milliseconds
  private send(args: string[]): Promise<void> {
    return new Promise((resolve) => {
      const child = execFile("systemd-notify", args, { env: { ...process.env, NOTIFY_SOCKET: this.socket }, timeout: NOTIFY_TIMEOUT_MS }, (err, _stdout, stderr) => {
        if (err) this.log.warn({ args, exitCode: err.code, signal: err.signal ?? undefined, stderr: String(stderr).trim(), err: describeError(err) }, "systemd-notify failed");
        resolve();
      });
      child.stdin?.end();
    });
  }
}

/**
 * The service manager the agent was started by: systemd when $NOTIFY_SOCKET is set, else none. The
 * variable is taken out of the environment, so that rsync and other children cannot speak for the agent.
 */
export function serviceManagerFromEnv(log: Logger): ServiceManagerLike {
  const socket = process.env.NOTIFY_SOCKET;
  delete process.env.NOTIFY_SOCKET;
  if (socket === undefined || socket === "") return NO_SERVICE_MANAGER;
  log.info({ notifySocket: socket }, "started by systemd: readiness goes to its notification socket");
  return new SystemdNotify(socket, log);
}
