// The controller's end of the rsync tunnel (DESIGN §6). rsync speaks its daemon protocol (`<front>::site/`:
// the agent's per-call daemon decides what is served) through its remote shell, `sh` and two `cat`s
// (TUNNEL_RSH) joined to a socket pair whose one end is rsync's descriptor 3 and whose other end is carried
// here as one gRPC Rsync stream to the front's agent, over the channel the controller already has. Nothing
// listens and nothing holds a token: only rsync and its remote shell have the socket. Backpressure is kept
// in both directions, so a large push never sits in memory.
import { once } from "node:events";
import type { Socket } from "node:net";
import type { ServiceError } from "@grpc/grpc-js";
import { execa } from "execa";
import type { LimitFunction } from "p-limit";
import { QmError, describeError } from "../shared/errors.js";
import type { RsyncStepName } from "../shared/frontSteps.js";
import type { Logger } from "../shared/logger.js";
import { DAEMON_OVER_RSH, TUNNEL_HEARTBEAT_MS, rsyncClientArgs } from "../shared/rsyncArgs.js";
import { type AgentConnectionLike, fromServiceError } from "./agentConnection.js";
import { retryWhileBusy } from "./busyRetry.js";

export interface RsyncRun {
  readonly front: AgentConnectionLike;
  readonly migrationId: string;
  /** which run of the migration this is (Recorder.run): the front refuses an earlier run's stream */
  readonly run: number;
  readonly step: RsyncStepName;
  /** the front's folder the agent serves for the step (relative to its root): for messages */
  readonly remoteFolder: string;
  /** local path or `<front>::site/` (rsyncRemote): the agent's rsync daemon for this step */
  readonly source: string;
  readonly destination: string;
  readonly dataDirs: readonly string[];
  /** receiver side: a local folder with an older copy to take unchanged files from */
  readonly copyDest?: string;
  readonly signal?: AbortSignal;
  /** the bytes carried so far, sent to the agent and received from it: once at the start (0, 0), then after each chunk */
  readonly onBytes?: (sent: number, received: number) => void;
}

/** What the carrying of one run learnt: from the agent's end, and about rsync's. */
interface Remote {
  /** the stream failed on the agent's side or on the way (stalled, cut, refused) */
  error?: QmError;
  exit?: number;
  stderr: string;
  /** rsync's end failed under the carrying (its remote shell gone): rsync's own status says why */
  localError?: unknown;
}

/**
 * Holds nothing of a run but its logger and bounds: one tunnel serves every migration of a process (the
 * runs of `migrate --all` side by side), each run with its own rsync, socket pair and stream.
 */
export class RsyncTunnel {
  /**
   * `stallMs`: a stream that carries no byte either way for this long is given up (timeouts.unresponsive).
   * `inFlight`: the bound on runs at once (config fanOut.rsync); the others wait their turn, their
   * stall timer not yet running.
   * `busyWaitMs`: how long a run is started again while the agent answers BUSY (timeouts.rsync).
   */
  constructor(
    private readonly rsyncBin: string,
    private readonly log: Logger,
    private readonly stallMs = 30_000,
    private readonly inFlight: LimitFunction | undefined = undefined,
    private readonly busyWaitMs = 7_200_000,
  ) {}

  /**
   * Runs the real rsync binary with the tunnel as its remote shell. Throws RSYNC_FAILED with the host as
   * context. An agent at its maxConcurrentOps refuses the stream (BUSY) before its rsync starts: the run
   * is made again after a pause (waiting its turn again, holding none meanwhile), until the agent takes it
   * or busyWaitMs has gone by since it first started.
   */
  run(run: RsyncRun): Promise<void> {
    const log = this.log.child({ migrationId: run.migrationId, step: run.step, host: run.front.name });
    let deadline: number | undefined;
    const attempt = (): Promise<void> => {
      const now = () => {
        deadline ??= Date.now() + this.busyWaitMs;
        return this.runNow(run);
      };
      return this.inFlight ? this.inFlight(now) : now();
    };
    return retryWhileBusy(attempt, {
      deadline: () => deadline ?? Date.now() + this.busyWaitMs,
      ...(run.signal ? { signal: run.signal } : {}),
      onBusy: (err, n, delayMs) => log.debug({ attempt: n, delayMs, reason: err.message }, "agent busy: rsync started again after a pause"),
    });
  }

  private async runNow(run: RsyncRun): Promise<void> {
    // cancelled while it waited its turn
    run.signal?.throwIfAborted();
    const args = rsyncClientArgs({
      source: run.source,
      destination: run.destination,
      dataDirs: run.dataDirs,
      ...(run.copyDest ? { copyDest: run.copyDest } : {}),
    });
    const rsync = execa(this.rsyncBin, args, {
      // fd 3: one end of a socket pair (rsync passes it on to its remote shell); the other end is ours
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      buffer: { fd3: false },
      all: true,
      reject: false,
      // nothing of the controller's environment steers rsync (RSYNC_* variables)
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      extendEnv: false,
      ...(run.signal ? { cancelSignal: run.signal } : {}),
    });
    const remote: Remote = { stderr: "" };
    // once rsync is gone, nothing reads what the agent sends: the stream is ended and the socket closed,
    // which also ends a remote shell that rsync's exit left behind
    const rsyncGone = new AbortController();
    rsync.once("exit", () => rsyncGone.abort());
    rsync.once("error", () => rsyncGone.abort());
    const socket = rsync.stdio[3] as Socket | undefined;
    const carried = socket
      ? this.carry(run, socket, remote, rsyncGone.signal).catch((err: unknown) => {
          remote.localError ??= err;
        })
      : Promise.resolve();
    const result = await rsync;
    await carried;
    if (remote.error) throw remote.error;
    const failed = (why: string) =>
      new QmError("RSYNC_FAILED", `rsync for ${run.step} failed (exit ${result.exitCode ?? "?"}): ${why}`, {
        host: run.front.name,
        step: run.step,
        path: run.remoteFolder,
      });
    if (result.failed || (remote.exit ?? 0) !== 0) {
      const why = [errorLine(remote.stderr), errorLine(String(result.all ?? ""))].filter((l) => l !== undefined);
      throw failed(why.join("; ") || (result.shortMessage ?? `the agent's rsync exited with ${remote.exit ?? "?"}`));
    }
    // not expected (rsync checks its session end to end, so a broken carrying makes it fail), never a success
    if (remote.localError !== undefined) throw failed(describeError(remote.localError));
  }

  /**
   * Carries rsync's end of the socket to the agent and back. The session ends when the agent ends the
   * stream: rsync holds its end of the socket as long as it runs, so its end of input never reaches here.
   * What went wrong is left in `remote`.
   */
  private async carry(run: RsyncRun, socket: Socket, remote: Remote, rsyncGone: AbortSignal): Promise<void> {
    const host = run.front.name;
    const log = this.log.child({ migrationId: run.migrationId, step: run.step, host });
    const input = socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const call = run.front.openRsync();
    let finished = false;
    const onGone = () => {
      if (!finished) call.cancel();
      socket.destroy();
    };
    rsyncGone.addEventListener("abort", onGone, { once: true });
    // errors are read where they matter (the loops below); one that comes after them must not crash the controller
    socket.on("error", (err) => log.debug({ err }, "rsync's end of the tunnel failed"));
    call.on("error", (err) => log.debug({ err }, "rsync stream failed"));

    // the stall timer: a stream that carries nothing either way (a connection that never comes up,
    // an agent that stopped sending). While a write waits for the other end to take it, the bytes are
    // moving as fast as the link lets them: a slow link is not a silent one, and a dead peer there is
    // caught by the connection's keepalive pings.
    let stalled = false;
    let lastActivity = Date.now();
    let waiting = 0;
    const waitFor = async (emitter: NodeJS.EventEmitter, event: string) => {
      waiting++;
      try {
        await once(emitter, event, { signal: rsyncGone });
      } finally {
        waiting--;
        lastActivity = Date.now();
      }
    };
    const stallCheck = setInterval(
      () => {
        if (waiting > 0) lastActivity = Date.now();
        if (Date.now() - lastActivity < this.stallMs) return;
        stalled = true;
        clearInterval(stallCheck);
        call.cancel();
      },
      Math.min(1000, this.stallMs),
    );
    const writeCall = async (data: Buffer) => {
      lastActivity = Date.now();
      if (!call.write({ frame: { $case: "data", value: data } })) await waitFor(call, "drain");
    };
    // While the agent's bytes keep arriving, the agent hears from this end at least every
    // TUNNEL_HEARTBEAT_MS (an empty data frame): what it sent may sit in the link's buffers for seconds
    // after its writes took it, and its idle bound must not end a transfer that is still arriving. Only
    // bytes count, not the agent's own heartbeats: two silent rsyncs never keep each other alive.
    let arrived = false;
    const heartbeat = setInterval(() => {
      if (arrived && !finished) call.write({ frame: { $case: "data", value: Buffer.alloc(0) } });
      arrived = false;
    }, TUNNEL_HEARTBEAT_MS);
    const keepalive = run.front.keepaliveTimeoutMs;
    call.write({ frame: { $case: "start", value: { migrationId: run.migrationId, step: run.step, args: [...DAEMON_OVER_RSH], run: run.run, ...(keepalive !== undefined ? { keepaliveTimeoutMs: keepalive } : {}) } } });
    // every byte of the session passes here: counted each way for the progress of the step
    let sent = 0;
    let received = 0;
    run.onBytes?.(0, 0);

    // rsync's end failing (ECONNRESET when rsync dies) ends this loop; the downstream's outcome and
    // rsync's own status say why. Caught here at once: a rejection left unheld until the downstream
    // ends would crash the controller (an unhandled rejection).
    const upstream = (async () => {
      for (;;) {
        const next = await input.next();
        if (next.done || finished) break;
        sent += next.value.length;
        run.onBytes?.(sent, received);
        await writeCall(next.value);
      }
    })().catch((err: unknown) => log.debug({ err }, "rsync's end of the tunnel ended"));

    const downstream = (async () => {
      // the stream is ended here once the agent ended its side (call.end() below), not destroyed by the
      // loop's end: destroyed, it would fail with an AbortError after every successful run
      for await (const message of call.iterator({ destroyOnReturn: false }) as AsyncIterable<{ frame?: { $case: string; value: unknown } }>) {
        lastActivity = Date.now();
        const f = message.frame;
        if (f?.$case === "data") {
          if ((f.value as Buffer).length > 0) arrived = true;
          received += (f.value as Buffer).length;
          run.onBytes?.(sent, received);
          if (!socket.write(f.value as Buffer)) await waitFor(socket, "drain");
        } else if (f?.$case === "stderr") {
          remote.stderr = (remote.stderr + (f.value as Buffer).toString("utf8")).slice(-8192);
          log.debug({ stderr: (f.value as Buffer).toString("utf8") }, "remote rsync stderr");
        } else if (f?.$case === "exit") {
          remote.exit = (f.value as { code: number }).code;
        }
      }
    })();

    try {
      await downstream;
      if (stalled) throw new Error("stalled");
      finished = true;
      call.end();
      // the remote shell's reading `cat` sees the end: the shell exits, and rsync after it
      socket.end();
    } catch (err) {
      finished = true;
      if (stalled) {
        remote.error = new QmError("UNREACHABLE", `agent unreachable: the rsync stream carried nothing for ${this.stallMs / 1000} s (timeouts.unresponsive)`, { host });
      } else if (isServiceError(err) && !rsyncGone.aborted) {
        remote.error = fromServiceError(host, err);
      } else {
        // rsync's end went away (it failed, its remote shell was stopped: EPIPE, ECONNRESET, or the stream
        // cancelled once rsync had exited): rsync's own status and message say why
        remote.localError = err;
        log.debug({ err }, "rsync's end of the tunnel closed");
      }
      socket.destroy();
      call.cancel();
    } finally {
      clearInterval(stallCheck);
      clearInterval(heartbeat);
    }
    await upstream;
  }
}

/** The line of rsync's stderr that says what went wrong: its first complaint, else its last line. */
function errorLine(stderr: string): string | undefined {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.find((l) => /^(rsync: |@ERROR)/.test(l)) ?? lines.at(-1);
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === "object" && err !== null && "code" in err && "metadata" in err;
}
