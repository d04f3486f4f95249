// The pino root logger of a binary; components take children of it ({component}, then {migrationId, step, host}).
import { pino, type Logger, type DestinationStream } from "pino";

export type { Logger };

export function createRootLogger(name: string, level: string, destination?: DestinationStream): Logger {
  return pino({ name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? pino.destination(1));
}
