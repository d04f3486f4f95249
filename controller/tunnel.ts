// The controller's end of the rsync tunnel (DESIGN §6). rsync runs our rsh.js as its remote shell and
// speaks rsync's daemon protocol through it (`<front>::site/`: the agent's per-call daemon decides what
// is served); rsh.js connects to a Unix socket served here, and each connection is carried as one gRPC
// Rsync stream to the front's agent over the channel the controller already has. Backpressure is kept in
// both directions, so a large push never sits in memory.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { type Server, type Socket, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ServiceError } from "@grpc/grpc-js";
import { execa } from "execa";
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { rsyncClientArgs } from "../shared/rsyncArgs.js";
import { type AgentConnectionLike, fromServiceError } from "./agentConnection.js";

const RSH_SCRIPT = fileURLToPath(new URL("./rsh.js", import.meta.url));
const MAX_HEADER = 64 * 1024;

interface Grant {
  readonly front: AgentConnectionLike;
  readonly migrationId: string;
  readonly step: string;
  remoteError?: QmError;
  remoteExit?: number;
  remoteStderr: string;
}

export interface RsyncRun {
  readonly front: AgentConnectionLike;
  readonly migrationId: string;
  readonly step: "fetch-site" | "push-site";
  /** the front's folder the agent serves for the step (relative to its root): for messages */
  readonly remoteFolder: string;
  /** local path or `<front>::site/` (rsyncRemote): the agent's rsync daemon for this step */
  readonly source: string;
  readonly destination: string;
  readonly dataDirs: readonly string[];
  /** receiver side: a local folder with an older copy to take unchanged files from */
  readonly copyDest?: string;
  readonly signal?: AbortSignal;
}

export class RsyncTunnel {
  private readonly grants = new Map<string, Grant>();

  private constructor(
    private readonly dir: string,
    private readonly server: Server,
    private readonly rsyncBin: string,
    private readonly log: Logger,
    private readonly stallMs: number,
  ) {}

  /** `stallMs`: a stream that carries no byte either way for this long is given up (timeouts.unresponsive). */
  static async open(rsyncBin: string, log: Logger, stallMs = 30_000): Promise<RsyncTunnel> {
    const dir = await mkdtemp(join(tmpdir(), "quick-migrate-"));
    const server = createServer({ allowHalfOpen: true });
    const tunnel = new RsyncTunnel(dir, server, rsyncBin, log, stallMs);
    server.on("connection", (socket) => {
      tunnel.carry(socket).catch((err: unknown) => {
        log.warn({ err }, "rsync tunnel connection failed");
        socket.destroy();
      });
    });
    server.listen(join(dir, "tunnel.sock"));
    await once(server, "listening");
    return tunnel;
  }

  get socketPath(): string {
    return join(this.dir, "tunnel.sock");
  }

  /** Runs the real rsync binary with our tunnel as its remote shell. Throws RSYNC_FAILED with the host as context. */
  async run(run: RsyncRun): Promise<void> {
    const token = randomUUID();
    const grant: Grant = { front: run.front, migrationId: run.migrationId, step: run.step, remoteStderr: "" };
    this.grants.set(token, grant);
    try {
      const rsh = [process.execPath, RSH_SCRIPT].map((w) => `"${w}"`).join(" ");
      const args = rsyncClientArgs({
        rsh,
        source: run.source,
        destination: run.destination,
        dataDirs: run.dataDirs,
        ...(run.copyDest ? { copyDest: run.copyDest } : {}),
      });
      const result = await execa(this.rsyncBin, args, {
        env: { QM_TUNNEL_SOCKET: this.socketPath, QM_TUNNEL_TOKEN: token },
        stdin: "ignore",
        all: true,
        reject: false,
        ...(run.signal ? { cancelSignal: run.signal } : {}),
      });
      if (grant.remoteError) throw grant.remoteError;
      if (result.failed || (grant.remoteExit ?? 0) !== 0) {
        const local = (result.all ?? "").trim().split("\n").filter(Boolean);
        const remote = grant.remoteStderr.trim().split("\n").filter(Boolean);
        const why = remote.at(-1) ?? local.at(-1) ?? result.shortMessage;
        throw new QmError("RSYNC_FAILED", `rsync for ${run.step} failed (exit ${result.exitCode ?? "?"}): ${why}`, {
          host: run.front.name,
          step: run.step,
          path: run.remoteFolder,
        });
      }
    } finally {
      this.grants.delete(token);
    }
  }

  /** Carries one rsh connection to the agent and back. */
  private async carry(socket: Socket): Promise<void> {
    const input = socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let buffered = Buffer.alloc(0);
    let newline = -1;
    while (newline < 0) {
      const next = await input.next();
      if (next.done) throw new QmError("TUNNEL_REFUSED", "tunnel connection closed before its header");
      buffered = Buffer.concat([buffered, next.value]);
      newline = buffered.indexOf(10);
      if (newline < 0 && buffered.length > MAX_HEADER) throw new QmError("TUNNEL_REFUSED", "tunnel header too long");
    }
    const header = JSON.parse(buffered.subarray(0, newline).toString("utf8")) as { token?: string; host?: string; args?: string[] };
    const grant = header.token ? this.grants.get(header.token) : undefined;
    if (!grant || header.host !== grant.front.name || !Array.isArray(header.args)) {
      throw new QmError("TUNNEL_REFUSED", `tunnel connection refused: unknown token or host ${String(header.host)}`);
    }
    const rest = buffered.subarray(newline + 1);
    const log = this.log.child({ migrationId: grant.migrationId, step: grant.step, host: grant.front.name });

    const call = grant.front.openRsync();
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
        await once(emitter, event);
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
    call.write({ frame: { $case: "start", value: { migrationId: grant.migrationId, step: grant.step, args: header.args } } });

    const upstream = (async () => {
      if (rest.length > 0) await writeCall(rest);
      for (;;) {
        const next = await input.next();
        if (next.done) break;
        await writeCall(next.value);
      }
      call.end();
    })();

    const downstream = (async () => {
      for await (const message of call as AsyncIterable<{ frame?: { $case: string; value: unknown } }>) {
        lastActivity = Date.now();
        const f = message.frame;
        if (f?.$case === "data") {
          if (!socket.write(f.value as Buffer)) await waitFor(socket, "drain");
        } else if (f?.$case === "stderr") {
          grant.remoteStderr = (grant.remoteStderr + (f.value as Buffer).toString("utf8")).slice(-8192);
          log.debug({ stderr: (f.value as Buffer).toString("utf8") }, "remote rsync stderr");
        } else if (f?.$case === "exit") {
          grant.remoteExit = (f.value as { code: number }).code;
        }
      }
    })();

    try {
      await downstream;
      if (stalled) throw new Error("stalled");
      socket.end();
    } catch (err) {
      grant.remoteError = stalled
        ? new QmError("UNREACHABLE", `agent unreachable: the rsync stream carried nothing for ${this.stallMs / 1000} s (timeouts.unresponsive)`, { host: grant.front.name })
        : isServiceError(err)
          ? fromServiceError(grant.front.name, err)
          : new QmError("RSYNC_FAILED", describeError(err), { host: grant.front.name });
      socket.destroy();
      call.cancel();
    } finally {
      clearInterval(stallCheck);
    }
    await upstream.catch(() => undefined);
  }

  async close(): Promise<void> {
    this.server.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === "object" && err !== null && "code" in err && "metadata" in err;
}
