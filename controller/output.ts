// How a run looks to whoever called it: JSON lines (--json, for hostmaster tasks) or human lines
// (a TTY, or a log when not on one): the plan, each step with a tick or cross per host, a summary.
import type { Writable } from "node:stream";
import type { Reporter, RunEvent } from "./events.js";

export class JsonReporter implements Reporter {
  constructor(private readonly out: Writable) {}

  event(e: RunEvent): void {
    this.out.write(`${JSON.stringify(e)}\n`);
  }
}

const TICK = "✔";
const CROSS = "✘";

export class HumanReporter implements Reporter {
  private acks: Array<{ host: string; ok: boolean; detail: string }> = [];
  private hostOrder: string[] = [];

  constructor(
    private readonly out: Writable,
    private readonly color: boolean,
  ) {}

  private paint(code: number, s: string): string {
    return this.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  private line(s = ""): void {
    this.out.write(`${s}\n`);
  }

  event(e: RunEvent): void {
    switch (e.event) {
      case "plan": {
        this.hostOrder = [...new Set(e.steps.flatMap((s) => s.hosts))];
        const rename = e.site === e.newSite ? e.site : `${e.site} → ${e.newSite}`;
        this.line(`quick-migrate ${rename}: ${e.from} → ${e.to}  (migration ${e.migrationId}${e.dryRun ? ", dry run" : ""})`);
        for (const [i, s] of e.steps.entries()) {
          const hosts = s.skipped ? this.paint(2, `skipped: ${s.skipped}`) : s.hosts.join(", ");
          this.line(`  ${String(i).padStart(2)} ${s.name.padEnd(20)} ${hosts}`);
          if (e.dryRun && !s.skipped) {
            this.line(`       ${this.paint(2, `does: ${s.does}`)}`);
            for (const mv of s.moves) this.line(`       ${mv.host}: ${mv.what}: ${mv.from}${mv.to ? ` → ${mv.to}` : ""}`);
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
          if (!a.ok) this.line(`      ${this.paint(31, `${a.host}: ${a.detail}`)}`);
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
        this.line(`${ok ? this.paint(32, TICK) : this.paint(31, CROSS)} ${e.outcome}: ${e.message}  (${(e.durationMs / 1000).toFixed(2)} s)`);
        if (e.journal) this.line(`  journal: ${e.journal}`);
        return;
      }
    }
  }
}
