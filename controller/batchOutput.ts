// How `migrate --all` looks. With --json: every event of every site's migration, as `migrate` prints
// it, with the site added; the batch's own first and last events carry `site: null`. For humans: a line
// per site as it ends (its whole output, plan and steps, when it failed or was only planned), a live
// summary line on a terminal, and a final table.
import { Writable } from "node:stream";
import { type BatchOutcome, BatchProgress, type SiteResult, formatTable } from "./batch.js";
import type { Reporter, RunEvent } from "./events.js";
import type { Notices } from "./logSink.js";
import { HumanReporter } from "./output.js";

export type BatchEvent =
  | {
      event: "batch";
      site: null;
      from: string;
      to: string;
      sites: readonly string[];
      skipped: ReadonlyArray<{ name: string; why: string }>;
      concurrency: number;
      dryRun: boolean;
    }
  | (RunEvent & { site: string })
  /** a site the batch did not start: a signal stopped it first */
  | { event: "result"; site: string; migrationId: null; outcome: "not-started"; exitCode: number; message: string; durationMs: number }
  | {
      event: "batch-result";
      site: null;
      outcome: BatchOutcome;
      exitCode: number;
      message: string;
      code?: string;
      durationMs: number;
      sites: readonly SiteResult[];
    };

export interface BatchOutput {
  event(e: BatchEvent): void;
  /** The reporter of one site's migration: its events pass here, tagged with the site. */
  siteReporter(site: string): Reporter;
  siteStarted(site: string): void;
  siteEnded(result: SiteResult): void;
}

export class JsonBatchOutput implements BatchOutput {
  constructor(private readonly out: Writable) {}

  event(e: BatchEvent): void {
    this.out.write(`${JSON.stringify(e)}\n`);
  }

  siteReporter(site: string): Reporter {
    // a plan's own `site` is the same
    return { event: (e) => this.event({ ...e, site }) };
  }

  siteStarted(): void {}

  siteEnded(): void {}
}

const ERASE = "\r\x1b[K";

/** Keeps what a HumanReporter writes, to be printed in one piece: sites running side by side do not interleave. */
class Buffered extends Writable {
  text = "";

  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
}

export class HumanBatchOutput implements BatchOutput, Notices {
  private progress: BatchProgress | undefined;
  private dryRun = false;
  private readonly blocks = new Map<string, Buffered>();
  private live = false;
  private blankLast = false;
  /** the live line on screen */
  private shown = "";

  constructor(
    private readonly out: Writable,
    private readonly color: boolean,
    /** a terminal: the live summary line is rewritten in place */
    private readonly tty: boolean,
  ) {}

  private paint(code: number, s: string): string {
    return this.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  private line(s = ""): void {
    this.out.write(`${this.live ? ERASE : ""}${s}\n`);
    this.live = false;
    this.blankLast = s === "";
  }

  private redraw(): void {
    if (!this.tty || !this.progress) return;
    const columns = (this.out as { columns?: number }).columns;
    const chars = [...this.progress.line()];
    const text = columns && chars.length >= columns ? chars.slice(0, columns - 1).join("") : chars.join("");
    if (this.live && text === this.shown) return;
    this.out.write(`${ERASE}${text}`);
    this.live = true;
    this.shown = text;
  }

  event(e: BatchEvent): void {
    switch (e.event) {
      case "batch": {
        this.dryRun = e.dryRun;
        this.progress = new BatchProgress(e.sites.length, e.dryRun);
        const n = e.sites.length;
        this.line(`quick-migrate --all: ${n} site${n === 1 ? "" : "s"} of ${e.from} → ${e.to}, at most ${e.concurrency} at a time${e.dryRun ? " (dry run)" : ""}`);
        for (const s of e.skipped) this.line(`  ${this.paint(33, "!")} skipped sites/${s.name}: ${s.why}`);
        this.line();
        this.redraw();
        return;
      }
      case "batch-result": {
        if (e.sites.length > 0) {
          // after a site's block, its blank line is there already
          if (!this.blankLast) this.line();
          for (const row of formatTable(e.sites)) this.line(`  ${row}`);
        }
        if (!this.blankLast) this.line();
        const mark = e.exitCode === 0 ? this.paint(32, "✔") : this.paint(31, "✘");
        this.line(`${mark} ${e.outcome}: ${e.message}  (${(e.durationMs / 1000).toFixed(2)} s, exit ${e.exitCode})`);
        return;
      }
      default:
        // a site's event: see siteReporter; a not-started site's result is in siteEnded
        return;
    }
  }

  /** A warning or error of the controller's log that the events do not show (see logSink.ts). */
  notice(level: "warn" | "error", text: string): void {
    this.line(`  ${this.paint(level === "error" ? 31 : 33, "!")} ${text}`);
    this.redraw();
  }

  siteReporter(site: string): Reporter {
    const block = new Buffered();
    this.blocks.set(site, block);
    // printed in one piece when the site ends, so no live line; its log is where the batch's goes
    const human = new HumanReporter(block, this.color, false, this.tty);
    return {
      event: (e) => {
        human.event(e);
        this.progress?.observe(site, e);
        if (e.event === "step-start" || e.event === "step-end") this.redraw();
      },
    };
  }

  siteStarted(site: string): void {
    this.progress?.started(site);
    if (!this.tty) this.line(`  started ${site}`);
    this.redraw();
  }

  siteEnded(r: SiteResult): void {
    this.progress?.ended(r);
    const block = this.blocks.get(r.site);
    this.blocks.delete(r.site);
    const ok = r.exitCode === 0;
    // a failed site's own output says which step failed on which host; a dry run's, what would be done
    if (block && (!ok || this.dryRun)) {
      this.line(this.paint(1, `── ${r.site}`));
      for (const l of block.text.replace(/\n+$/, "").split("\n")) this.line(l === "" ? "" : `  ${l}`);
    }
    const mark = ok ? this.paint(32, "✔") : this.paint(31, "✘");
    const id = r.migrationId ? ` (${r.migrationId})` : "";
    // the block above ends with the message already
    this.line(`${mark} ${r.site}: ${r.outcome}${id}  ${(r.durationMs / 1000).toFixed(2)} s${ok || block ? "" : `: ${r.message}`}`);
    if (block && (!ok || this.dryRun)) this.line();
    this.redraw();
  }
}
