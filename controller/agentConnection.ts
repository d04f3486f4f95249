// The controller's edge to one web front: a promise API over the generated gRPC client, a deadline on
// every call, and errors turned back into QmErrors naming the host.
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY, type ErrorCode, QmError, isErrorCode } from "../shared/errors.js";
import {
  AgentClient,
  type ApplyResponse,
  type PreflightResponse,
  type RsyncFrame,
} from "../shared/generated/quickmigrate/v1/agent.js";
import type { MigrationSpec } from "../shared/migration.js";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import { type FrontAction, actionToWire } from "../shared/wire.js";
import type { ControllerConfig, FrontConfig } from "./config.js";

export interface CallDeadlines {
  readonly helloMs: number;
  readonly preflightMs: number;
  readonly applyMs: number;
  /** a whole tunnelled rsync run */
  readonly rsyncMs: number;
}

export const DEFAULT_DEADLINES: CallDeadlines = { helloMs: 10_000, preflightMs: 60_000, applyMs: 300_000, rsyncMs: 7_200_000 };

export function deadlinesFrom(config: ControllerConfig): CallDeadlines {
  const t = config.timeouts;
  return { helloMs: t.hello * 1000, preflightMs: t.preflight * 1000, applyMs: t.apply * 1000, rsyncMs: t.rsync * 1000 };
}

/** One web front as the controller sees it. */
export interface AgentConnectionLike {
  readonly name: string;
  readonly local: boolean;
  /** `rootId`: the identity of the agent's root (empty from an agent that predates it) */
  hello(): Promise<{ protocolVersion: number; agentVersion: string; hostname: string; rootId: string }>;
  preflight(m: MigrationSpec, opts: { register: boolean; local: boolean }): Promise<PreflightResponse>;
  apply(migrationId: string, step: string, action: FrontAction): Promise<ApplyResponse>;
  openRsync(): grpc.ClientDuplexStream<RsyncFrame, RsyncFrame>;
  close(): void;
}

export function channelCredentials(config: ControllerConfig): grpc.ChannelCredentials {
  if (config.insecure || !config.tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(readFileSync(config.tls.ca), readFileSync(config.tls.key), readFileSync(config.tls.cert));
}

export class AgentConnection implements AgentConnectionLike {
  readonly name: string;
  readonly local: boolean;
  private readonly client: AgentClient;

  constructor(
    front: FrontConfig,
    credentials: grpc.ChannelCredentials,
    private readonly deadlines: CallDeadlines = DEFAULT_DEADLINES,
  ) {
    this.name = front.name;
    this.local = front.local;
    this.client = new AgentClient(front.address, credentials, {
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      "grpc.max_send_message_length": 4 * 1024 * 1024,
      // the agent's certificate must name the front as configured (a SAN DNS name or IP), whatever its address
      "grpc.ssl_target_name_override": front.name,
      "grpc.default_authority": front.name,
    });
  }

  private unary<Req, Res>(
    method: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall,
    req: Req,
    timeoutMs: number,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      method.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(fromServiceError(this.name, err)) : resolve(res),
      );
    });
  }

  hello() {
    return this.unary(this.client.hello, { protocolVersion: PROTOCOL_VERSION, controllerVersion: PACKAGE_VERSION }, this.deadlines.helloMs);
  }

  preflight(m: MigrationSpec, opts: { register: boolean; local: boolean }): Promise<PreflightResponse> {
    return this.unary(this.client.preflight, { migration: { ...m, dataDirs: [...m.dataDirs] }, ...opts }, this.deadlines.preflightMs);
  }

  apply(migrationId: string, step: string, action: FrontAction): Promise<ApplyResponse> {
    return this.unary(this.client.apply, { migrationId, step, action: actionToWire(action) }, this.deadlines.applyMs);
  }

  openRsync(): grpc.ClientDuplexStream<RsyncFrame, RsyncFrame> {
    return this.client.rsync({ deadline: Date.now() + this.deadlines.rsyncMs });
  }

  close(): void {
    this.client.close();
  }
}

/** Rebuilds the agent's QmError (its code travels in metadata); transport failures become UNREACHABLE. The host is context, not text. */
export function fromServiceError(host: string, err: grpc.ServiceError): QmError {
  const sent = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const transport = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED || err.code === grpc.status.CANCELLED;
  const code: ErrorCode = typeof sent === "string" && isErrorCode(sent) ? sent : transport ? "UNREACHABLE" : "INTERNAL";
  const details = (err.details || grpc.status[err.code]).replace(/\s*Resolution note:\s*$/, "");
  const altnames = /Hostname\/IP does not match certificate's altnames: (.*)$/.exec(details);
  const detail = altnames
    ? `the agent's certificate does not name this front: ${altnames[1]}`
    : code === "UNREACHABLE"
      ? `agent unreachable: ${details}`
      : details;
  return new QmError(code, detail, { host }, { cause: err });
}
