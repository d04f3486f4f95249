// The agent's audit trail (component "rpc"): exactly one line per call, "operation" for a call the agent
// ran (result ok, or error: it failed while running) and "refused" for one it would not run (a client
// not allowed, busy, a bad name, an action out of order, an rsync against policy, too many streams).
import { status } from "@grpc/grpc-js";
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

export class CallAudit {
  constructor(private readonly log: Logger) {}

  /** The one line of a call: `err` undefined when it succeeded. */
  end(fields: AuditFields, err?: unknown): void {
    if (err === undefined) this.log.info({ ...clipped(fields), result: "ok" }, "operation");
    else if (isRefusal(err)) this.log.warn({ ...clipped(fields), result: "refused", ...why(err) }, "refused");
    else this.log.warn({ ...clipped(fields), result: "error", ...why(err), err }, "operation");
  }

  /** What became of an operation the agent had already answered TIMED_OUT for: not a second audit line of the call. */
  late(fields: AuditFields, err?: unknown): void {
    this.log.warn({ ...clipped(fields), result: err === undefined ? "ok" : "error", ...(err === undefined ? {} : why(err)) }, "operation ended after its bound");
  }
}
