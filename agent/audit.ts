// The agent's audit trail (component "rpc"): exactly one line per call, "operation" for a call the agent
// ran (result ok, or error: it failed while running) and "refused" for one it would not run (a client
// not allowed, busy, a bad name, an action out of order, an rsync against policy, too many streams),
// and one "refused" line per TLS connection that ended in its handshake, before any call.
import type { Server } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { Socket } from "node:net";
import { type TLSSocket, Server as TlsServer } from "node:tls";
import { QmError, describeError, errorCode } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";

/** What every line names: the operation, the client's certificate CN and its address; then what is known of the request. */
export interface AuditFields {
  op: string;
  client: string;
  peer: string;
  [field: string]: unknown;
}

/**
 * A refusal is an answer with a status that says "not this request, not now": the agent judged it and
 * said no. INTERNAL (a failure while running, or a bug) and TIMED_OUT are not refusals. A code added
 * to the catalogue later is classed by the status it travels with.
 */
const REFUSING: ReadonlySet<status> = new Set([
  status.INVALID_ARGUMENT,
  status.FAILED_PRECONDITION,
  status.PERMISSION_DENIED,
  status.ALREADY_EXISTS,
  status.UNAVAILABLE,
  status.RESOURCE_EXHAUSTED,
]);

export function isRefusal(err: unknown): boolean {
  return err instanceof QmError && REFUSING.has(err.grpcStatus);
}

/** Request fields are the caller's: a 4 MiB name must not make a 4 MiB log line. */
const MAX_FIELD = 200;
const MAX_REASON = 500;

function clip(value: string, max: number): string {
  return value.length > max ? `${value.slice(0, max)}...(${value.length} chars)` : value;
}

function clipped(fields: AuditFields): AuditFields {
  const out: AuditFields = { ...fields };
  for (const [k, v] of Object.entries(out)) if (typeof v === "string") out[k] = clip(v, MAX_FIELD);
  return out;
}

function why(err: unknown): { code: string; reason: string } {
  return { code: errorCode(err), reason: clip(describeError(err), MAX_REASON) };
}

export type CallResult = "ok" | "refused" | "error";

/** Whoever else learns of every call the audit sees end (the metrics): once per call, as its audit line. */
export interface CallObserver {
  /** `seconds` when the call's start was known (see CallAudit.began) */
  callEnded(op: string, result: CallResult, code: string | undefined, seconds: number | undefined): void;
}

export class CallAudit {
  /** when each call began, by its fields object (the one later given to end) */
  private readonly started = new WeakMap<AuditFields, number>();

  constructor(
    private readonly log: Logger,
    private readonly observer?: CallObserver,
  ) {}

  /** Marks the start of the call whose audit line `fields` will be, for its duration. */
  began(fields: AuditFields): void {
    this.started.set(fields, performance.now());
  }

  /** The one line of a call: `err` undefined when it succeeded. */
  end(fields: AuditFields, err?: unknown): void {
    const began = this.started.get(fields);
    const ms = began === undefined ? undefined : performance.now() - began;
    // how long the agent itself took: beside the controller's step time, it tells the network from the disk
    const line = { ...clipped(fields), ...(ms === undefined ? {} : { durationMs: Math.round(ms * 10) / 10 }) };
    if (err === undefined) this.log.info({ ...line, result: "ok" }, "operation");
    else if (isRefusal(err)) this.log.warn({ ...line, result: "refused", ...why(err) }, "refused");
    else this.log.warn({ ...line, result: "error", ...why(err), err }, "operation");
    if (this.observer) {
      const result: CallResult = err === undefined ? "ok" : isRefusal(err) ? "refused" : "error";
      this.observer.callEnded(fields.op, result, err === undefined ? undefined : errorCode(err), ms === undefined ? undefined : ms / 1000);
    }
  }

  /** What became of an operation the agent had already answered TIMED_OUT for: not a second audit line of the call. */
  late(fields: AuditFields, err?: unknown): void {
    this.log.warn({ ...clipped(fields), result: err === undefined ? "ok" : "error", ...(err === undefined ? {} : why(err)) }, "operation ended after its bound");
  }

  /**
   * One line per TLS connection that ended in its handshake: no call was made, so there is no verified
   * client and no operation. The CN of a certificate that failed verification is not logged: anyone
   * can write any CN into a certificate the CA did not sign.
   */
  handshake(peer: string, reason: string, tls: { tlsError?: string; certificateError?: string }): void {
    this.log.warn({ op: "tls-handshake", client: "(not verified)", peer, result: "refused", code: "NOT_ALLOWED", reason, ...tls }, "refused");
    this.observer?.callEnded("tls-handshake", "refused", "NOT_ALLOWED", undefined);
  }
}

/** `address:port`, the way grpc-js's getPeer() writes a client's address. */
function peerOf(socket: Socket | undefined): string | undefined {
  const address = socket?.remoteAddress;
  if (address === undefined) return undefined;
  return `${address.includes(":") ? `[${address}]` : address}:${socket?.remotePort ?? "?"}`;
}

/** The reason of an OpenSSL error message (`...:SSL routines:<function>:<reason>:<file>:<line>:`), or its first line. */
function tlsReason(err: Error): string {
  return /:SSL routines:[^:]*:([^:]+):/.exec(err.message)?.[1] ?? describeError(err);
}

function handshakeReason(err: NodeJS.ErrnoException, socket: TLSSocket): string {
  if (socket.authorizationError) return `client certificate not accepted: ${String(socket.authorizationError)}`;
  if (err.code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE") return "no client certificate";
  if (err.code === "ERR_SSL_WRONG_VERSION_NUMBER" || err.code === "ERR_SSL_HTTP_REQUEST") return "not TLS (a plaintext client?)";
  if (err.code === "ECONNRESET") return "the connection closed during the TLS handshake (a client that does not trust this agent's certificate, or a port probe)";
  return `TLS handshake failed: ${tlsReason(err)}`;
}

/**
 * Audits every TLS handshake that fails on the server's listeners. grpc-js does not expose its HTTP/2
 * servers, so this reaches for its private `http2Servers` map (grpc-js is pinned; the audit test
 * notices if that changes) and for the raw socket behind a TLS socket (`_parent`, Node's own),
 * which still knows the peer's address when the TLS socket was destroyed. Returns false when the
 * servers cannot be found: then handshake refusals are not logged. Call it after binding.
 */
export function auditHandshakes(server: Server, audit: CallAudit): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return false;
  let found = false;
  for (const s of servers.keys()) {
    if (!(s instanceof TlsServer)) continue;
    found = true;
    // the peer's address is read (and cached by the socket) while the connection is still open
    s.prependListener("connection", (raw: Socket) => void raw.remoteAddress);
    s.on("tlsClientError", (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      const peer = peerOf(socket) ?? peerOf((socket as unknown as { _parent?: Socket })._parent) ?? "?";
      audit.handshake(peer, handshakeReason(err, socket), {
        ...(err.code ? { tlsError: err.code } : {}),
        ...(socket.authorizationError ? { certificateError: String(socket.authorizationError) } : {}),
      });
    });
  }
  return found;
}
