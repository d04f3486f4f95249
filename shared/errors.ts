// The catalogue of quick-migrate errors, shared by agent and controller. Each has a stable code,
// context fields (host, step, path), an optional cause, and whether retrying can help.
import { status } from "@grpc/grpc-js";

export const ErrorCodes = {
  INVALID_NAME: { grpc: status.INVALID_ARGUMENT, retryable: false },
  CONFIG_INVALID: { grpc: status.INVALID_ARGUMENT, retryable: false },
  USAGE: { grpc: status.INVALID_ARGUMENT, retryable: false },
  NOT_REGISTERED: { grpc: status.FAILED_PRECONDITION, retryable: false },
  PRECONDITION: { grpc: status.FAILED_PRECONDITION, retryable: false },
  CONFLICT: { grpc: status.FAILED_PRECONDITION, retryable: false },
  CROSS_DEVICE: { grpc: status.FAILED_PRECONDITION, retryable: false },
  NOT_EMPTY: { grpc: status.FAILED_PRECONDITION, retryable: false },
  OUTSIDE_ROOT: { grpc: status.PERMISSION_DENIED, retryable: false },
  TUNNEL_REFUSED: { grpc: status.PERMISSION_DENIED, retryable: false },
  NOT_ALLOWED: { grpc: status.PERMISSION_DENIED, retryable: false },
  LOCKED: { grpc: status.ALREADY_EXISTS, retryable: false },
  UNREACHABLE: { grpc: status.UNAVAILABLE, retryable: true },
  BUSY: { grpc: status.UNAVAILABLE, retryable: true },
  INCOMPATIBLE: { grpc: status.FAILED_PRECONDITION, retryable: false },
  HOOK_FAILED: { grpc: status.INTERNAL, retryable: false },
  RSYNC_FAILED: { grpc: status.INTERNAL, retryable: true },
  IO: { grpc: status.INTERNAL, retryable: true },
  JOURNAL_INVALID: { grpc: status.INTERNAL, retryable: false },
  INTERNAL: { grpc: status.INTERNAL, retryable: false },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export interface ErrorContext {
  readonly host?: string;
  readonly step?: string;
  readonly path?: string;
  readonly key?: string;
}

export class QmError extends Error {
  override readonly name = "QmError";
  readonly retryable: boolean;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly context: ErrorContext = {},
    options: { cause?: unknown; retryable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? ErrorCodes[code].retryable;
  }

  get grpcStatus(): status {
    return ErrorCodes[this.code].grpc;
  }
}

/** Error codes travel in this metadata key so the other side can rebuild a QmError. */
export const ERROR_CODE_METADATA_KEY = "qm-error-code";

export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(ErrorCodes, s);
}

/** A one-line description of any thrown value, for acknowledgements and logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0] ?? err.message;
  return String(err);
}

/** Maps a Node fs error to a QmError naming the path. EXDEV is never retried and never turned into a copy. */
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
