// How a run looks to whoever called it: JSON lines (--json, for hostmaster tasks) or human lines
// (a TTY, or a log when not on one): the plan, each step with a tick or cross per host, a summary. On
// a TTY the step in flight also has a live line, rewritten in place and cleared before its end's line.
import type { Writable } from "node:stream";
import { MASTER, type ProgressEvent, type Reporter, type RunEvent } from "./events.js";
import { LOG_FILE, type Notices } from "./logSink.js";

export class JsonReporter implements Reporter {
  constructor(private readonly out: Writable) {}

  event(e: RunEvent): void {
    this.out.write(`${JSON.stringify(e)}\n`);
  }
}

const TICK = "✔";
const CROSS = "✘";
const RUNNING = "…";
/** back to the start of the line, and erase it */
const ERASE = "\r\x1b[K";

/** what a failed acknowledgement's code says about whose fault it is */
const INTERNAL = "internal error (a bug in quick-migrate)";

type Ack = Extract<RunEvent, { event: "ack" }>;

export class HumanReporter implements Reporter, Notices {
  private acks: Ack[] = [];
  /** hosts that failed with an internal error (a bug) in this run: the result says where its stack trace is */
  private readonly bugs = new Set<string>();
  private hostOrder: string[] = [];
  /** a live line is on screen, to be erased before anything else is written */
  private live = false;

  constructor(
    private readonly out: Writable,
    private readonly color: boolean,
    /** the output is a terminal: the step in flight gets a live line (off one, progress is not shown) */
    private readonly tty = false,
    /** the controller's log goes to controller.log in the journal folder (a person at a terminal), not stderr */
    private readonly logInJournal = tty,
  ) {}

  private paint(code: number, s: string): string {
    return this.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  private line(s = ""): void {
    this.out.write(`${this.live ? ERASE : ""}${s}\n`);
    this.live = false;
  }

  /** the live line, cut to the terminal's width: one that wrapped could not be rewritten in place */
  private showLive(text: string): void {
    const columns = (this.out as { columns?: number }).columns;
    const chars = [...text];
    const fitted = columns && chars.length >= columns ? chars.slice(0, columns - 1).join("") : text;
    this.out.write(`${ERASE}${fitted}`);
    this.live = true;
  }

  /** A warning or error of the controller's log that the events do not show: one line, in the table's style. */
  notice(level: "warn" | "error", text: string): void {
    this.line(`  ${this.paint(level === "error" ? 31 : 33, "!")} ${text}`);
  }

  event(e: RunEvent): void {
    switch (e.event) {
      case "progress":
        if (this.tty) this.showLive(progressLine(e, this.hostOrder));
        return;
      case "plan": {
        this.hostOrder = [...new Set(e.steps.flatMap((s) => s.hosts))];
        const rename = e.site === e.newSite ? e.site : `${e.site} → ${e.newSite}`;
        this.line(`quick-migrate ${rename}: ${e.from} → ${e.to}  (migration ${e.migrationId}${e.dryRun ? ", dry run" : ""})`);
        for (const [i, s] of e.steps.entries()) {
          const hosts = s.skipped ? this.paint(2, `skipped: ${s.skipped}`) : s.hosts.join(", ");
          this.line(`  ${String(i).padStart(2)} ${s.name.padEnd(20)} ${hosts}`);
          if (e.dryRun && !s.skipped) {
            this.line(`       ${this.paint(2, `does: ${s.does}`)}`);
            for (const mv of s.moves) this.line(`       ${mv.host}: ${mv.what}: ${[mv.from, mv.to].filter((x) => x !== "").join(" → ")}`);
            if (s.undo) this.line(`       ${this.paint(2, `undo: ${s.undo}`)}`);
          }
        }
        this.line();
        return;
      }
      case "step-start":
        this.acks = [];
        return;
      case "ack":
        this.acks.push(e);
        return;
      case "step-end": {
        const label = `${e.undo ? "undo " : ""}${e.step}`.padEnd(25);
        if (e.skipped) {
          this.line(`  ${this.paint(2, "-")} ${label} ${this.paint(2, `skipped: ${e.skipped}`)}`);
          return;
        }
        const mark = e.ok ? this.paint(32, TICK) : this.paint(31, CROSS);
        this.acks.sort((a, b) => this.hostOrder.indexOf(a.host) - this.hostOrder.indexOf(b.host));
        const hosts = this.acks.map((a) => `${a.host} ${a.ok ? this.paint(32, TICK) : this.paint(31, CROSS)}`).join("  ");
        this.line(`  ${mark} ${label} ${hosts}  (${e.acked}/${e.expected})  ${e.durationMs} ms`);
        for (const a of this.acks) {
          if (a.ok) continue;
          if (a.code === "INTERNAL") this.bugs.add(a.host);
          // a failed hook's detail goes on with its last lines of output: shown below, set apart
          const [first, ...more] = a.detail.split("\n");
          this.line(`      ${this.paint(31, `${a.host}: ${a.code === "INTERNAL" ? `${INTERNAL}: ` : ""}${first}`)}`);
          for (const l of more) this.line(`      ${this.paint(2, `│ ${l}`)}`);
        }
        return;
      }
      case "orphaned-hook":
        this.line(
          `  ${this.paint(33, "!")} hook ${e.hook} of the interrupted run (${e.undo ? "undo " : ""}${e.step}) was still running as process group ${e.pgid}: ended by ${e.endedBy}`,
        );
        return;
      case "result": {
        this.line();
        const ok = e.exitCode === 0;
        const bug = e.code === "INTERNAL" && this.bugs.size === 0 ? `${INTERNAL}: ` : "";
        this.line(`${ok ? this.paint(32, TICK) : this.paint(31, CROSS)} ${e.outcome}: ${bug}${e.message}  (${(e.durationMs / 1000).toFixed(2)} s)`);
        if (e.journal) this.line(`  journal: ${e.journal}`);
        if (bug || this.bugs.size > 0) this.line(`  ${this.paint(31, "!")} ${whereTheStackIs(e.code === "INTERNAL" ? new Set([...this.bugs, MASTER]) : this.bugs, e.journal, this.logInJournal)}`);
        return;
      }
    }
  }
}

/**
 * An internal error is a bug, and its stack trace is what a report needs: the controller's own is in
 * its log (controller.log in the journal folder on a terminal, the JSON lines on stderr off one), a
 * front agent's in that agent's log.
 */
function whereTheStackIs(hosts: ReadonlySet<string>, journal: string | undefined, logInJournal: boolean): string {
  const places = [...hosts].map((h) =>
    h === MASTER
      ? logInJournal
        ? `${journal ? `${journal}/${LOG_FILE}` : LOG_FILE} on this hostmaster`
        : "the controller's log lines on stderr"
      : `the agent's log on ${h} (journalctl -u quick-migrate-agent)`,
  );
  return `this is a bug in quick-migrate, not a fault of your hosts: please report it with its stack trace, which is in ${places.join(" and ")}`;
}

/** `  … push-site  web1 ✔ 12.4 MB  web2 … 8.1 MB 38.1 MB/s  2.1 s`: bytes both ways, the rate while running */
export function progressLine(e: ProgressEvent, hostOrder: readonly string[] = []): string {
  const rank = (h: string) => (hostOrder.includes(h) ? hostOrder.indexOf(h) : hostOrder.length);
  const hosts = [...e.hosts]
    .sort((a, b) => rank(a.host) - rank(b.host))
    .map((h) => {
      const parts = [h.host, h.state === "ok" ? TICK : h.state === "failed" ? CROSS : RUNNING];
      if (h.bytesSent !== undefined || h.bytesReceived !== undefined) parts.push(formatBytes((h.bytesSent ?? 0) + (h.bytesReceived ?? 0)));
      if (h.bytesPerSecond !== undefined) parts.push(`${formatBytes(h.bytesPerSecond)}/s`);
      return parts.join(" ");
    });
  return `  ${RUNNING} ${`${e.undo ? "undo " : ""}${e.step}`.padEnd(25)} ${hosts.join("  ")}  ${(e.elapsedMs / 1000).toFixed(1)} s`;
}

/** Decimal units, as disks and links are sold: 999 B, 1.0 kB, 12.4 MB, 3.2 GB. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${Math.round(n)} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1000;
  let i = 0;
  // 999.96 kB would print as "1000.0 kB": round first, then move up a unit
  while (i < units.length - 1 && Number(v.toFixed(1)) >= 1000) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}
