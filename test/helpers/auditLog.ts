// The agent's audit lines (component "rpc": "operation" and "refused") as a test reads them from the
// agent's log file, and a wait for the ones a test's calls should have written.
import fs from "node:fs";

export interface AuditLine {
  readonly msg: string;
  readonly level: number;
  readonly op: string;
  readonly client: string;
  readonly peer: string;
  readonly result: string;
  readonly code?: string;
  readonly reason?: string;
  readonly migrationId?: string;
  readonly [field: string]: unknown;
}

/** pino's number for warn */
export const WARN = 40;

export function auditLines(logFile: string): AuditLine[] {
  const out: AuditLine[] = [];
  const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "";
  for (const l of text.split("\n")) {
    if (!l.includes('"component":"rpc"')) continue;
    try {
      out.push(JSON.parse(l) as AuditLine);
    } catch {
      // a line being written
    }
  }
  return out;
}

/**
 * The audit lines written after the first `since`, once `enough` says they are all there (the agent's
 * output reaches its log file asynchronously), and `settleMs` later: a line too many shows.
 */
export async function auditLinesAfter(logFile: string, since: number, enough: (lines: AuditLine[]) => boolean, opts: { timeoutMs?: number; settleMs?: number } = {}): Promise<AuditLine[]> {
  const until = Date.now() + (opts.timeoutMs ?? 10_000);
  let lines = auditLines(logFile).slice(since);
  while (!enough(lines)) {
    if (Date.now() > until) throw new Error(`audit lines: not all there within ${(opts.timeoutMs ?? 10_000) / 1000} s; got ${JSON.stringify(lines)}`);
    await new Promise((r) => setTimeout(r, 100));
    lines = auditLines(logFile).slice(since);
  }
  await new Promise((r) => setTimeout(r, opts.settleMs ?? 300));
  return auditLines(logFile).slice(since);
}
