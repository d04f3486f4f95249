// The agent's end of the rsync tunnel (DESIGN §6): rsync's daemon mode, confined by rsync itself to the
// one site folder of the step (a module written for this call: read-only for fetch-site, write-only for
// push-site, data dirs excluded, options refused), with bytes piped both ways through the gRPC stream
// and backpressure in both directions. What the client's remote shell was asked to run is checked, never
// run. A stream that says nothing is ended: no start frame within START_MS, or no byte moved either way
// for the unresponsive bound. A cancelled call ends the rsync daemon, never leaves it waiting.
import { once } from "node:events";
import { type FileHandle, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { QmError } from "../shared/errors.js";
import { frontStep } from "../shared/frontSteps.js";
import type { RsyncFrame, RsyncStart } from "../shared/generated/quickmigrate/v1/agent.js";
import type { Logger } from "../shared/logger.js";
import { type MigrationSpec, newSiteRel, oldSiteRel } from "../shared/migration.js";
import { checkMigrationId, checkStepName } from "../shared/names.js";
import { peerKeepaliveTimeout } from "../shared/receiveWindow.js";
import { RSYNC_MODULE, TUNNEL_HEARTBEAT_MS, isDaemonOverRsh } from "../shared/rsyncArgs.js";
import { type RsyncDirection, rsyncdConf } from "./rsyncdConf.js";
import type { SiteOperations } from "./siteOperations.js";

type Stream = ServerDuplexStream<RsyncFrame, RsyncFrame>;

/** A stream's start frame must come within this; until it has, the stream holds no operation slot. */
export const START_MS = 5000;
/** The descriptor of the site folder in the rsync daemon: its module's path is `/proc/self/fd/3`. */
const FOLDER_FD = 3;

/** What the audit line of one tunnelled rsync records, filled in as it becomes known (also when it is refused). */
export interface RsyncRun {
  migrationId?: string;
  step?: string;
  site?: string;
  exitCode?: number;
  /** bytes of rsync's stream: from the controller's rsync to ours, and back */
  bytesIn: number;
  bytesOut: number;
}

export interface RsyncServeOptions {
  readonly rsyncBin: string;
  /** a running rsync that moves no byte either way for this long is ended (timeouts.unresponsive) */
  readonly idleMs: number;
  /** the daemon chroots into the site folder; default: when the agent runs as root (it may chroot) */
  readonly privileged?: boolean;
  readonly log: Logger;
  /** aborted by a stopping agent that will not wait for this run any longer: it is ended (STOPPING) */
  readonly stop?: AbortSignal;
  /** told of rsync's bytes as they move (the metrics), not only at the end as the audit line */
  readonly moved?: (direction: "in" | "out", bytes: number) => void;
}

/** What each step serves: the folder, and which way the bytes go. */
function stepFolder(m: MigrationSpec, step: string): { rel: string; direction: RsyncDirection } | undefined {
  const way = frontStep(step)?.rsync;
  // a fetch reads the front's old site folder; a push writes the new one
  if (way === "fetch") return { rel: oldSiteRel(m), direction: "send" };
  if (way === "push") return { rel: newSiteRel(m), direction: "receive" };
  return undefined;
}

/**
 * Serves one tunnelled rsync, recording in `run` what its audit line says. `admit` is called once the
 * start frame is in (authorisation and the operation slot); it throws to refuse.
 */
export async function serveRsync(
  call: Stream,
  agent: SiteOperations,
  opts: RsyncServeOptions,
  admit: () => void,
  run: RsyncRun,
): Promise<void> {
  const cancelled = new AbortController();
  call.on("cancelled", () => cancelled.abort());
  opts.stop?.addEventListener("abort", () => cancelled.abort(), { once: true });
  // the iterator must not destroy the call when the client half-closes: its status could not be sent
  const frames = call.iterator({ destroyOnReturn: false }) as AsyncIterator<RsyncFrame>;
  const start = await firstFrame(frames, cancelled.signal);
  const { migrationId, step, args, run: controllerRun } = start;
  Object.assign(run, { migrationId, step });
  admit();

  checkMigrationId(migrationId);
  checkStepName(step);
  const refuse = (why: string) => new QmError("TUNNEL_REFUSED", `rsync tunnel refused for ${step} of ${migrationId}: ${why}`, { step });
  // the client's remote shell says what its rsync asked for; the agent runs its own command whatever it is
  if (!isDaemonOverRsh(args)) throw refuse(`the remote shell must be asked for \`rsync --server --daemon .\` (rsync's daemon protocol over the tunnel), not ${JSON.stringify(args).slice(0, 200)}`);
  const registered = await agent.migration(migrationId);
  run.site = registered.site;
  const served = stepFolder(registered, step);
  if (!served) throw refuse("rsync is only used by fetch-site and push-site");
  // the folder is looked at before the step order is written down, changing nothing: a symlink, a parent
  // leading out of the root or an absent folder to read is refused here (the pinned open below is what
  // rsync is confined by; it refuses the same, and a swap after this look)
  await agent.checkRsyncFolder(served.rel, served.direction === "send");
  // last, once nothing else refuses it: the step order, which writes a push down as begun
  const m = await agent.forwardMigration(migrationId, step, controllerRun);
  run.site = m.site;
  // a push's data comes in on this connection: its window may follow the link, sized for the controller's pings too
  if (start.keepaliveTimeoutMs !== undefined) peerKeepaliveTimeout(call.getPeer(), start.keepaliveTimeoutMs);
  // rsync works in the site folder itself: a real directory inside the root (made for a push), pinned
  // by a descriptor, so that a symlink or rename swapped in after the checks is never followed
  const folder = await agent.tree.root.openRealDirectory(served.rel, { create: served.direction === "receive", purpose: "rsync" });
  const opLog = opts.log.child({ migrationId, step });
  const chroot = opts.privileged ?? process.geteuid?.() === 0;
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), "quick-migrate-rsyncd-"));
    const config = join(dir, "rsyncd.conf");
    const logFile = join(dir, "rsyncd.log");
    await writeFile(
      config,
      rsyncdConf({
        module: RSYNC_MODULE,
        path: `/proc/self/fd/${FOLDER_FD}`,
        direction: served.direction,
        dataDirs: m.dataDirs,
        chroot,
        logFile,
        about: `${step} of migration ${migrationId}, ${served.rel}`,
      }),
      { mode: 0o600, flag: "wx" },
    );
    opLog.info({ folder: served.rel, direction: served.direction, chroot }, "rsync server start");
    const result = await pipeDaemon(call, frames, cancelled, folder, run, { ...opts, config, cwd: dir, log: opLog });
    if (result.exitCode !== 0) opLog.warn({ daemonLog: await tail(logFile) }, "rsync daemon log");
  } finally {
    await folder.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/** The start frame, within START_MS; anything else first is refused. */
async function firstFrame(frames: AsyncIterator<RsyncFrame>, cancelled: AbortSignal): Promise<RsyncStart> {
  let timer: NodeJS.Timeout | undefined;
  const silent = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new QmError("STREAM_IDLE", `rsync tunnel: no start frame within ${START_MS / 1000} s`)), START_MS);
  });
  try {
    const first = await Promise.race([frames.next(), silent]);
    const frame = first.done ? undefined : first.value.frame;
    if (frame?.$case !== "start") {
      if (cancelled.aborted) throw new QmError("USAGE", "rsync tunnel: cancelled before its start frame");
      throw new QmError("USAGE", "rsync tunnel: the first frame must be `start`");
    }
    return frame.value;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the rsync daemon on the pinned folder and carries its bytes; resolves when it has ended. */
async function pipeDaemon(
  call: Stream,
  frames: AsyncIterator<RsyncFrame>,
  cancelled: AbortController,
  folder: FileHandle,
  run: RsyncRun,
  opts: RsyncServeOptions & { config: string; cwd: string },
): Promise<{ exitCode: number }> {
  const { log } = opts;
  // loaded at the first rsync run, not at the start: an idle agent does without execa's memory
  const { execa } = await import("execa");
  const child = execa(opts.rsyncBin, ["--server", "--daemon", `--config=${opts.config}`, "."], {
    cwd: opts.cwd,
    // nothing of the agent's environment steers rsync (RSYNC_* variables)
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    extendEnv: false,
    // the pinned site folder becomes the daemon's fd 3 (execa's types name only fds 3-9 of ours; any works)
    stdio: ["pipe", "pipe", "pipe", folder.fd as 3],
    buffer: false,
    reject: false,
    cancelSignal: cancelled.signal,
  });

  // rsync may exit before reading all its input; a broken pipe then is not the agent's error
  child.stdin?.on("error", (err) => log.debug({ err }, "rsync stdin closed"));

  // Progress: while rsync takes or gives bytes, the controller hears from this end at least every
  // TUNNEL_HEARTBEAT_MS (an empty data frame when nothing else was sent), so that its stall timer can
  // tell a slow link, where bytes still move, from a silent one. The same moves keep this end's idle
  // bound off, and so do the controller's heartbeats while the bytes sent from here arrive there.
  let moved = false;
  let sent = false;
  let lastMove = Date.now();
  let waitingOnLink = 0;
  let idle = false;
  const move = () => {
    moved = true;
    lastMove = Date.now();
  };
  const heartbeat = setInterval(() => {
    if (moved && !sent && !cancelled.signal.aborted) call.write({ frame: { $case: "data", value: Buffer.alloc(0) } });
    moved = false;
    sent = false;
  }, TUNNEL_HEARTBEAT_MS);
  // A write waiting for the controller to take it is a slow link, not a silent rsync (a dead peer there
  // is the gRPC keepalive's to catch).
  const idleCheck = setInterval(
    () => {
      if (waitingOnLink > 0) lastMove = Date.now();
      if (Date.now() - lastMove < opts.idleMs || cancelled.signal.aborted) return;
      idle = true;
      log.warn({ idleMs: opts.idleMs }, "rsync moved nothing: ending it");
      cancelled.abort();
    },
    Math.min(1000, opts.idleMs),
  );

  const write = async (frame: RsyncFrame) => {
    if (cancelled.signal.aborted) return;
    sent = true;
    if (!call.write(frame)) {
      waitingOnLink++;
      try {
        await once(call, "drain", { signal: cancelled.signal }).catch(() => undefined);
      } finally {
        waitingOnLink--;
        lastMove = Date.now();
      }
    }
  };

  const stdin = child.stdin as NonNullable<typeof child.stdin>;
  const upstream = (async () => {
    try {
      for (;;) {
        const next = await frames.next();
        if (next.done || cancelled.signal.aborted) break;
        const f = next.value.frame;
        if (f?.$case !== "data") throw new QmError("USAGE", "rsync tunnel: only data frames may follow `start`");
        move();
        run.bytesIn += f.value.length;
        opts.moved?.("in", f.value.length);
        if (!stdin.write(f.value)) await once(stdin, "drain", { signal: cancelled.signal });
      }
    } finally {
      // end of input from the controller's rsync: pass it on
      stdin.end();
    }
  })();
  upstream.catch(() => undefined);

  const forward = async (source: NodeJS.ReadableStream, kind: "data" | "stderr") => {
    for await (const chunk of source) {
      move();
      if (kind === "data") {
        run.bytesOut += (chunk as Buffer).length;
        opts.moved?.("out", (chunk as Buffer).length);
      }
      await write({ frame: { $case: kind, value: chunk as Buffer } });
    }
  };
  let result;
  try {
    await Promise.all([forward(child.stdout as NodeJS.ReadableStream, "data"), forward(child.stderr as NodeJS.ReadableStream, "stderr")]);
    result = await child;
  } finally {
    clearInterval(heartbeat);
    clearInterval(idleCheck);
  }
  const code = result.exitCode ?? 255;
  run.exitCode = code;
  log.info({ exitCode: code, signal: result.signal, cancelled: cancelled.signal.aborted, idle, maxRssKb: process.resourceUsage().maxRSS }, "rsync server end");
  if (opts.stop?.aborted) {
    throw new QmError("STOPPING", "rsync tunnel: the agent is stopping and its stopTimeout passed: rsync ended");
  }
  if (idle) {
    throw new QmError("STREAM_IDLE", `rsync tunnel: no byte moved either way for ${opts.idleMs / 1000} s (timeouts.unresponsive): rsync ended`);
  }
  if (!cancelled.signal.aborted) {
    await write({ frame: { $case: "exit", value: { code, signal: result.signal ?? "" } } });
    call.end();
  }
  return { exitCode: code };
}

/** The end of the daemon's own log, for the agent's log when it failed. */
async function tail(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.slice(-4096);
}
