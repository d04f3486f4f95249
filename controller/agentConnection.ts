// The controller's end of one web front's agent: a promise API over the generated gRPC client, a
// deadline on every call, a bound on how long a silent agent is waited for (HTTP/2 keepalive pings on
// the connection, a bound on connecting), and errors turned back into QmErrors with the host as context.
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { LimitFunction } from "p-limit";
import { ERROR_CODE_METADATA_KEY, type ErrorCode, QmError, isErrorCode } from "../shared/errors.js";
import {
  type AgentClient,
  type ApplyResponse,
  type InspectResponse,
  type PreflightResponse,
  type RsyncFrame,
} from "../shared/generated/quickmigrate/v1/agent.js";
import type { MigrationSpec } from "../shared/migration.js";
import { receiveWindowBytes } from "../shared/receiveWindow.js";
import { AgentServiceWithRsyncCodec } from "../shared/rsyncFrameCodec.js";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import { type FrontAction, actionToWire } from "../shared/wire.js";
import { retryWhileBusy } from "./busyRetry.js";
import type { ControllerConfig, FrontConfig } from "./config.js";

export interface CallDeadlines {
  readonly helloMs: number;
  readonly preflightMs: number;
  readonly applyMs: number;
  /** a whole tunnelled rsync run */
  readonly rsyncMs: number;
  /** an agent that does not answer at all (no connection, no ping answered) is given up after this */
  readonly unresponsiveMs: number;
}

export const DEFAULT_DEADLINES: CallDeadlines = { helloMs: 10_000, preflightMs: 60_000, applyMs: 300_000, rsyncMs: 7_200_000, unresponsiveMs: 30_000 };

/** How often the connection to an agent is pinged, and how long an answer is waited for: half the unresponsive bound each. */
export function keepaliveMs(deadlines: CallDeadlines): number {
  return Math.max(500, Math.floor(deadlines.unresponsiveMs / 2));
}

export function deadlinesFrom(config: ControllerConfig): CallDeadlines {
  const t = config.timeouts;
  return { helloMs: t.hello * 1000, preflightMs: t.preflight * 1000, applyMs: t.apply * 1000, rsyncMs: t.rsync * 1000, unresponsiveMs: t.unresponsive * 1000 };
}

/** One web front as the controller sees it. */
export interface AgentConnectionLike {
  readonly name: string;
  readonly local: boolean;
  /** `rootId`: the identity of the agent's root (empty from an agent that predates it) */
  hello(): Promise<{ protocolVersion: number; agentVersion: string; hostname: string; rootId: string }>;
  /** `signal` ends a wait for a busy agent (see busyRetry.ts), never a call in flight */
  preflight(m: MigrationSpec, opts: { register: boolean; local: boolean }, signal?: AbortSignal): Promise<PreflightResponse>;
  /** `run`: which run of the migration sends it (Recorder.run); `signal` as for preflight */
  apply(migrationId: string, step: string, action: FrontAction, run: number, signal?: AbortSignal): Promise<ApplyResponse>;
  inspect(migrationId: string): Promise<InspectResponse>;
  openRsync(): grpc.ClientDuplexStream<RsyncFrame, RsyncFrame>;
  /** how long a keepalive answer is waited for on this connection (the rsync stream's start frame tells the agent) */
  readonly keepaliveTimeoutMs?: number;
  close(): void;
}

type UnaryMethod<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

export function channelCredentials(config: ControllerConfig): grpc.ChannelCredentials {
  if (config.insecure || !config.tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(readFileSync(config.tls.ca), readFileSync(config.tls.key), readFileSync(config.tls.cert));
}

/** The generated client, with rsync's bytes (de)serialised without extra copies (shared/rsyncFrameCodec.ts). */
const Client = grpc.makeGenericClientConstructor(AgentServiceWithRsyncCodec, "quickmigrate.v1.Agent") as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: Partial<grpc.ClientOptions>,
) => AgentClient;

export class AgentConnection implements AgentConnectionLike {
  readonly name: string;
  readonly local: boolean;
  readonly keepaliveTimeoutMs: number;
  private readonly client: AgentClient;

  /**
   * `inFlight`: the controller's bound on agent calls in flight, shared by every front's connection
   * (config fanOut.calls); a call's deadline starts when it is sent, not while it waits its turn.
   */
  constructor(
    front: FrontConfig,
    credentials: grpc.ChannelCredentials,
    private readonly deadlines: CallDeadlines = DEFAULT_DEADLINES,
    private readonly inFlight: LimitFunction | undefined = undefined,
  ) {
    this.name = front.name;
    this.local = front.local;
    this.keepaliveTimeoutMs = keepaliveMs(deadlines);
    this.client = new Client(front.address, credentials, {
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      "grpc.max_send_message_length": 4 * 1024 * 1024,
      // the agent's certificate must name the front as configured (a SAN DNS name or IP), whatever its address
      "grpc.ssl_target_name_override": front.name,
      "grpc.default_authority": front.name,
      // a peer that vanished without FIN or RST (link down, power lost, process frozen) answers no
      // ping: the connection is dropped, and every call on it fails, within the unresponsive bound.
      // A peer busy sending data still answers pings, so it is not cut off.
      "grpc.keepalive_time_ms": keepaliveMs(deadlines),
      "grpc.keepalive_timeout_ms": keepaliveMs(deadlines),
      "grpc.keepalive_permit_without_calls": 1,
      "grpc-node.flow_control_window": receiveWindowBytes(keepaliveMs(deadlines)),
    });
  }

  /**
   * Resolves false when the channel has not become ready within `ms`: a connection that hangs (a TCP
   * connect or TLS handshake nobody answers) is bounded too, not only one that was up and fell silent.
   */
  private async connects(ms: number): Promise<boolean> {
    const channel = this.client.getChannel();
    const deadline = Date.now() + ms;
    let state = channel.getConnectivityState(true);
    while (state !== grpc.connectivityState.READY) {
      if (state === grpc.connectivityState.SHUTDOWN) return false;
      const changed = await new Promise<boolean>((resolve) => channel.watchConnectivityState(state, deadline, (err) => resolve(!err)));
      if (!changed) return false;
      state = channel.getConnectivityState(false);
    }
    return true;
  }

  /**
   * One call. It waits its turn among the calls in flight (fanOut.calls), and its deadline (`timeoutMs`)
   * starts when it is first sent. An agent that answers BUSY (at its maxConcurrentOps) is asked again
   * after a growing pause, within that same deadline, waiting its turn again each time (no turn is held
   * while pausing); `signal` ends such a pause.
   */
  private unary<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, timeoutMs: number, signal?: AbortSignal): Promise<Res> {
    let deadline: number | undefined;
    const attempt = (): Promise<Res> => {
      const send = () => this.send(method, req, (deadline ??= Date.now() + timeoutMs));
      return this.inFlight ? this.inFlight(send) : send();
    };
    return retryWhileBusy(attempt, { deadline: () => deadline ?? Date.now() + timeoutMs, ...(signal ? { signal } : {}) });
  }

  private send<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, deadline: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const call = method.call(this.client, req, new grpc.Metadata(), { deadline }, (err, res) => {
        if (settled) return;
        settled = true;
        if (err) reject(fromServiceError(this.name, err));
        else resolve(res);
      });
      const { unresponsiveMs } = this.deadlines;
      void this.connects(unresponsiveMs).then((ok) => {
        if (ok || settled) return;
        settled = true;
        call.cancel();
        reject(new QmError("UNREACHABLE", `agent unreachable: no connection within ${unresponsiveMs / 1000} s (timeouts.unresponsive)`, { host: this.name }));
      });
    });
  }

  hello() {
    return this.unary(this.client.hello, { protocolVersion: PROTOCOL_VERSION, controllerVersion: PACKAGE_VERSION }, this.deadlines.helloMs);
  }

  preflight(m: MigrationSpec, opts: { register: boolean; local: boolean }, signal?: AbortSignal): Promise<PreflightResponse> {
    return this.unary(this.client.preflight, { migration: { ...m, dataDirs: [...m.dataDirs] }, ...opts }, this.deadlines.preflightMs, signal);
  }

  apply(migrationId: string, step: string, action: FrontAction, run: number, signal?: AbortSignal): Promise<ApplyResponse> {
    return this.unary(this.client.apply, { migrationId, step, action: actionToWire(action), run }, this.deadlines.applyMs, signal);
  }

  inspect(migrationId: string): Promise<InspectResponse> {
    return this.unary(this.client.inspect, { migrationId }, this.deadlines.helloMs);
  }

  openRsync(): grpc.ClientDuplexStream<RsyncFrame, RsyncFrame> {
    return this.client.rsync({ deadline: Date.now() + this.deadlines.rsyncMs });
  }

  close(): void {
    this.client.close();
  }

  /** The connection to the agent, for another service's client on it (health, in the inventory). */
  get channel(): grpc.Channel {
    return this.client.getChannel() as grpc.Channel;
  }
}

/** Rebuilds the agent's QmError (its code travels in metadata); transport failures become UNREACHABLE. The host is context, not text. */
export function fromServiceError(host: string, err: grpc.ServiceError): QmError {
  const sent = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const transport = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED || err.code === grpc.status.CANCELLED;
  const code: ErrorCode = typeof sent === "string" && isErrorCode(sent) ? sent : transport ? "UNREACHABLE" : "INTERNAL";
  const details = (err.details || grpc.status[err.code]).replace(/\s*Resolution note:\s*$/, "");
  const altnames = /Hostname\/IP does not match certificate's altnames: (.*)$/.exec(details);
  // grpc-js's "Deadline exceeded after 3.001s,name resolution: …,Waiting for LB pick" is for gRPC's
  // developers; an operator needs how long the agent was given (the whole text stays in the cause)
  const deadline = /^Deadline exceeded after (\d+(?:\.\d+)?)s\b/.exec(details);
  const detail = altnames
    ? `the agent's certificate does not name this front: ${altnames[1]}`
    : code === "UNREACHABLE"
      ? `agent unreachable: ${deadline ? `no answer within ${Number(deadline[1]).toFixed(1)} s` : details}`
      : details;
  return new QmError(code, detail, { host }, { cause: err });
}
