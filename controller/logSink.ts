// Where the controller's log goes when a person watches the terminal: not on the screen, where JSON
// lines of several hundred characters would bury the step table, but into `controller.log` in the
// journal folder of the migration each line is about, so that nothing is lost and it stays with the
// journal. A warning or error that the run's events do not already show is shown to the person as one
// line. With --json, or off a terminal, none of this: JSON lines go to stderr as they always did.
import { closeSync, mkdirSync, openSync, renameSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../shared/logger.js";
import type { ControllerConfig } from "./config.js";
import { Journal } from "./journal.js";

/** A person's screen: one line each for the warnings and errors that matter. */
export interface Notices {
  notice(level: "warn" | "error", text: string): void;
}

/** A command's log, closed at its end. */
export interface ControllerLog {
  readonly log: Logger;
  close(): void;
}

/** Opens the log for a config: on the screen's behalf when a person watches (`screen`), else JSON lines on stderr. */
export type OpenLog = (config: ControllerConfig, screen: Notices | undefined) => ControllerLog;

export const LOG_FILE = "controller.log";

/** Lines of a migration whose journal folder is not there yet are kept this many, the latest. */
const PENDING_LINES = 2000;
/** `<stateDir>/controller.log` (lines of no journal) is moved to controller.log.1 when it is over this. */
const STATE_LOG_MAX_BYTES = 10 * 1024 * 1024;

/** a context value on the screen is cut to this many characters (the whole is in the log file) */
const NOTICE_VALUE_CHARS = 160;
/** pino's levels */
const WARN = 40;
const ERROR = 50;
/** what every line carries, not worth repeating on the screen */
const PLUMBING = new Set(["level", "time", "pid", "hostname", "name", "component", "msg", "err", "migrationId", "shownBy"]);

interface LogRecord {
  level?: number;
  msg?: string;
  migrationId?: string;
  /** the news of this line is in the run's events already (an ack, the result): not shown again */
  shownBy?: string;
  err?: { message?: string };
  [key: string]: unknown;
}

/**
 * A pino destination (pino calls `write` with one JSON line at a time). Each line goes to
 * `<journal>/controller.log` of its migrationId once that folder exists (the lock step makes it); until
 * then it waits in memory. Lines of no migration, and at `close` those of a migration whose journal was
 * never made (refused before its lock), go to `<stateDir>/controller.log`.
 */
export class JournalLogSink {
  private readonly files = new Map<string, number>();
  private readonly pending = new Map<string, string[]>();
  private stateLog: number | undefined;
  /** the state dir's log could not be written: said once, not again for each line */
  private stateLogBroken = false;

  constructor(
    private readonly stateDir: string,
    private readonly screen: Notices,
  ) {}

  write(line: string): void {
    let record: LogRecord = {};
    try {
      record = JSON.parse(line) as LogRecord;
    } catch {
      // not ours to judge: kept as it came
    }
    const id = typeof record.migrationId === "string" ? record.migrationId : undefined;
    if (id === undefined) this.toStateLog(line);
    else if (!this.toJournal(id, line)) this.hold(id, line);
    if ((record.level ?? 0) >= WARN && record.shownBy === undefined) this.screen.notice((record.level ?? 0) >= ERROR ? "error" : "warn", noticeText(record));
  }

  /** The end of the command: what still waits goes to its journal, or else to the state dir's log. */
  close(): void {
    for (const [id, lines] of this.pending) {
      for (const line of lines) if (!this.toJournal(id, line)) this.toStateLog(line);
    }
    this.pending.clear();
    for (const fd of this.files.values()) closeSync(fd);
    this.files.clear();
    if (this.stateLog !== undefined) closeSync(this.stateLog);
    this.stateLog = undefined;
  }

  /** Appends to the migration's controller.log; false while its journal folder does not exist. */
  private toJournal(id: string, line: string): boolean {
    let fd = this.files.get(id);
    if (fd === undefined) {
      try {
        // never makes the folder: the journal must be the one to create it
        fd = openSync(join(Journal.folder(this.stateDir, id), LOG_FILE), "a", 0o600);
      } catch {
        return false;
      }
      this.files.set(id, fd);
      for (const held of this.pending.get(id) ?? []) writeSync(fd, held);
      this.pending.delete(id);
    }
    try {
      writeSync(fd, line);
      return true;
    } catch {
      // a journal folder removed under it (an attempt that lost the race for the lock) or a full disk
      closeSync(fd);
      this.files.delete(id);
      return false;
    }
  }

  private hold(id: string, line: string): void {
    const lines = this.pending.get(id) ?? [];
    lines.push(line);
    if (lines.length > PENDING_LINES) lines.shift();
    this.pending.set(id, lines);
  }

  private toStateLog(line: string): void {
    if (this.stateLogBroken) return;
    const file = join(this.stateDir, LOG_FILE);
    try {
      if (this.stateLog === undefined) {
        mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
        if (sizeOf(file) > STATE_LOG_MAX_BYTES) renameSync(file, `${file}.1`);
        this.stateLog = openSync(file, "a", 0o600);
      }
      writeSync(this.stateLog, line);
    } catch (err) {
      // a log that cannot be written must not stop a migration (whose journal is written elsewhere)
      this.stateLogBroken = true;
      this.screen.notice("warn", `the controller's log cannot be written to ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): its lines are lost`);
    }
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** A value as it fits on one line of the screen: its first line, cut short. */
function oneLine(v: unknown): string {
  const text = typeof v === "string" ? v : JSON.stringify(v);
  const [first = ""] = text.split("\n");
  const cut = first.length > NOTICE_VALUE_CHARS ? `${first.slice(0, NOTICE_VALUE_CHARS)}…` : first;
  return cut.length < text.length && !cut.endsWith("…") ? `${cut} …` : cut;
}

/** `hook left processes running: ending them (hook=updatedb, pids=[4711])`, with the error's message if any: one line */
export function noticeText(r: LogRecord): string {
  const context = Object.entries(r)
    .filter(([k, v]) => !PLUMBING.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${oneLine(v)}`);
  const err = r.err?.message ? `: ${oneLine(r.err.message)}` : "";
  return `${oneLine(r.msg ?? "(no message)")}${err}${context.length > 0 ? ` (${context.join(", ")})` : ""}`;
}
