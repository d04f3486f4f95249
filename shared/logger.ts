// The pino root logger of a binary; components take children of it ({component}, then {migrationId, step, host}).
import { type DestinationStream, type Logger, pino } from "pino";
import { QmError, describeError } from "./errors.js";

export type { Logger };

/** `destination`: a stream, or a file descriptor for pino's own writer (default 1, stdout). */
export function createRootLogger(name: string, level: string, destination: DestinationStream | number = 1): Logger {
  return pino(
    { name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, serializers: { err: serializeError } },
    typeof destination === "number" ? pino.destination(destination) : destination,
  );
}

/**
 * An expected failure — a QmError of the catalogue: a hook that exited 1, a host unreachable, a refusal —
 * is logged by its code, message and context, without a stack trace: it is not a bug, and a stack would
 * only bury what matters. Anything else (INTERNAL, or not a QmError at all) is a bug and keeps its stack.
 */
export function serializeError(err: unknown): unknown {
  if (err instanceof QmError && err.code !== "INTERNAL") {
    return {
      type: "QmError",
      code: err.code,
      message: err.message,
      ...(Object.keys(err.context).length > 0 ? { context: err.context } : {}),
      ...(err.cause !== undefined ? { cause: describeError(err.cause) } : {}),
    };
  }
  return err instanceof Error ? pino.stdSerializers.err(err) : err;
}
