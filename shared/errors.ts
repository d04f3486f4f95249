// The catalogue of quick-migrate errors, shared by agent and controller: each stable code maps to the
// gRPC status it travels with. An error carries its code, context fields (host, step, path) and a cause.
// No runtime import of @grpc/grpc-js: what only needs the catalogue (config, status, the journal) does
// not pay for loading gRPC.
import type { status } from "@grpc/grpc-js";

/**
 * The gRPC status codes the catalogue uses, by their numbers: fixed by the gRPC protocol
 * (grpc/doc/statuscodes.md); the type below makes the compiler check each against grpc-js's `status` enum.
 */
export const GrpcStatus = {
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const satisfies { readonly [K in keyof typeof status]?: (typeof status)[K] };

/** Every error code, and the gRPC status it travels with. */
export const ErrorCodes = {
  INVALID_NAME: GrpcStatus.INVALID_ARGUMENT,
  CONFIG_INVALID: GrpcStatus.INVALID_ARGUMENT,
  USAGE: GrpcStatus.INVALID_ARGUMENT,
  NOT_REGISTERED: GrpcStatus.FAILED_PRECONDITION,
  PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  CONFLICT: GrpcStatus.FAILED_PRECONDITION,
  CROSS_DEVICE: GrpcStatus.FAILED_PRECONDITION,
  NOT_EMPTY: GrpcStatus.FAILED_PRECONDITION,
  // preflight problems, each naming the path it is about
  SOURCE_MISSING: GrpcStatus.FAILED_PRECONDITION,
  SITE_IS_SYMLINK: GrpcStatus.FAILED_PRECONDITION,
  TARGET_EXISTS: GrpcStatus.FAILED_PRECONDITION,
  TARGET_PLATFORM_MISSING: GrpcStatus.FAILED_PRECONDITION,
  MOUNT_POINT: GrpcStatus.FAILED_PRECONDITION,
  DATA_NOT_DIRECTORY: GrpcStatus.FAILED_PRECONDITION,
  // two hosts of one migration serve one root, or a front marked local does not serve the hostmaster's
  ROOT_SHARED: GrpcStatus.FAILED_PRECONDITION,
  ROOT_NOT_LOCAL: GrpcStatus.FAILED_PRECONDITION,
  // a front still holds the data of an unfinished migration of the site, or a record it cannot read
  UNFINISHED_MIGRATION: GrpcStatus.FAILED_PRECONDITION,
  RECORD_UNREADABLE: GrpcStatus.FAILED_PRECONDITION,
  // the root's identity file (.quick-migrate-root-id) holds no id, or cannot be made
  ROOT_ID_INVALID: GrpcStatus.FAILED_PRECONDITION,
  ROOT_NOT_WRITABLE: GrpcStatus.FAILED_PRECONDITION,
  // a front's operator put the data back with `parked restore`: the migration only goes back now;
  // or `parked restore` refused: the front is past the point of no return
  RESTORED_ON_FRONT: GrpcStatus.FAILED_PRECONDITION,
  PAST_POINT_OF_NO_RETURN: GrpcStatus.FAILED_PRECONDITION,
  // a data dir that is a relative symlink whose target does not exist from the new site folder
  DANGLING_SYMLINK: GrpcStatus.FAILED_PRECONDITION,
  // the migration lists other data dirs than the agent's own config protects
  DATA_DIRS_MISMATCH: GrpcStatus.FAILED_PRECONDITION,
  // an action or rsync the step sequence does not allow in the migration's state on this front;
  // or any action of a migration that ended here (finished, or rolled back)
  OUT_OF_ORDER: GrpcStatus.FAILED_PRECONDITION,
  STALE_REQUEST: GrpcStatus.FAILED_PRECONDITION,
  MIGRATION_FINISHED: GrpcStatus.FAILED_PRECONDITION,
  OUTSIDE_ROOT: GrpcStatus.PERMISSION_DENIED,
  TUNNEL_REFUSED: GrpcStatus.PERMISSION_DENIED,
  NOT_ALLOWED: GrpcStatus.PERMISSION_DENIED,
  LOCKED: GrpcStatus.ALREADY_EXISTS,
  UNREACHABLE: GrpcStatus.UNAVAILABLE,
  BUSY: GrpcStatus.UNAVAILABLE,
  // the agent is stopping (SIGTERM): it finishes what it has, takes nothing new
  STOPPING: GrpcStatus.UNAVAILABLE,
  // a stream whose other end says nothing: no start frame in time, or an rsync that stopped moving bytes
  STREAM_IDLE: GrpcStatus.UNAVAILABLE,
  // the agent stopped waiting for one of its own operations (operationTimeout): it may still finish
  TIMED_OUT: GrpcStatus.DEADLINE_EXCEEDED,
  // a client already holds as many health Watch (or reflection) streams as it may
  TOO_MANY_STREAMS: GrpcStatus.RESOURCE_EXHAUSTED,
  INCOMPATIBLE: GrpcStatus.FAILED_PRECONDITION,
  HOOK_FAILED: GrpcStatus.INTERNAL,
  RSYNC_FAILED: GrpcStatus.INTERNAL,
  IO: GrpcStatus.INTERNAL,
  JOURNAL_INVALID: GrpcStatus.INTERNAL,
  // the operator stopped the run (SIGINT, SIGTERM): not a failure of any host
  CANCELLED: GrpcStatus.CANCELLED,
  // a bug: anything that is not one of the codes above
  INTERNAL: GrpcStatus.INTERNAL,
} as const satisfies Record<string, status>;

export type ErrorCode = keyof typeof ErrorCodes;

export interface ErrorContext {
  readonly host?: string;
  readonly step?: string;
  readonly path?: string;
  readonly key?: string;
}

export class QmError extends Error {
  override readonly name = "QmError";
  /**
   * Lines the host's acknowledgement carries below the one-line message (a failed hook's last lines of
   * output): the message stays one line, for the run's result and the logs.
   */
  readonly ackLines: readonly string[];

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly context: ErrorContext = {},
    options: { cause?: unknown; ackLines?: readonly string[] } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.ackLines = options.ackLines ?? [];
  }

  get grpcStatus(): status {
    return ErrorCodes[this.code];
  }
}

/** Error codes travel in this metadata key so the other side can rebuild a QmError. */
export const ERROR_CODE_METADATA_KEY = "qm-error-code";

export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(ErrorCodes, s);
}

/** The catalogue code of any thrown value: a QmError's own, INTERNAL for anything else (a bug). */
export function errorCode(err: unknown): ErrorCode {
  return err instanceof QmError ? err.code : "INTERNAL";
}

/** A one-line description of any thrown value, for acknowledgements and logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0] ?? err.message;
  return String(err);
}

/** What a failed host's acknowledgement says: the one-line description, then the error's ackLines, if any. */
export function ackDetail(err: unknown): string {
  const more = err instanceof QmError ? err.ackLines : [];
  return [describeError(err), ...more].join("\n");
}

/** Maps a Node fs error to a QmError naming the path. EXDEV is never turned into a copy. */
export function fsError(err: unknown, path: string, what: string): QmError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (err instanceof QmError) return err;
  if (code === "EXDEV") {
    return new QmError("CROSS_DEVICE", `${what}: ${path} is on another filesystem than its destination; refusing to copy`, { path }, { cause: err });
  }
  if (code === "ENOTEMPTY" || code === "EEXIST") {
    return new QmError("CONFLICT", `${what}: ${path}: destination exists`, { path }, { cause: err });
  }
  return new QmError("IO", `${what}: ${path}: ${code ?? describeError(err)}`, { path }, { cause: err });
}
