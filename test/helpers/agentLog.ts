// An agent's JSON log lines as a test reads them from its log file (written asynchronously: wait for
// them), the controller's from its stderr, and a wait for any condition.
import fs from "node:fs";
import { WINDOW_CHANGED } from "../../shared/receiveWindow.js";

export type LogLine = Record<string, unknown> & { readonly msg?: string; readonly level?: number; readonly component?: string };

/** Every JSON line of the log file so far (a line being written is skipped). */
export function logLines(logFile: string): LogLine[] {
  return parseLogLines(fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "");
}

/** The receive windows a process's log says it gave its connections (shared/receiveWindow.ts), in order. */
export function windowsLogged(lines: readonly LogLine[]): Array<{ windowBytes: number; from: number }> {
  return lines.filter((l) => l.msg === WINDOW_CHANGED).map((l) => ({ windowBytes: Number(l.windowBytes), from: Number(l.from) }));
}

/** The JSON lines of a log's text (anything else, or a line being written, is skipped). */
export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const l of text.split("\n")) {
    if (!l.startsWith("{")) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a line being written
    }
  }
  return out;
}

/** Resolves once `cond` holds (checked every 50 ms); throws naming `what` after `timeoutMs`. */
export async function waitUntil(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`not within ${timeoutMs / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The lines of `component` with message `msg`, once there are at least `count` of them. */
export async function waitForLines(logFile: string, match: (l: LogLine) => boolean, what: string, count = 1, timeoutMs = 10_000): Promise<LogLine[]> {
  await waitUntil(() => logLines(logFile).filter(match).length >= count, `${what} in ${logFile}`, timeoutMs);
  return logLines(logFile).filter(match);
}
