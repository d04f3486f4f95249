// Per-host accounting for one step: who was asked, who acknowledged, who failed and why, who never answered.
import { QmError } from "../shared/errors.js";

export class StepTally {
  readonly acked = new Map<string, string>();
  readonly failed = new Map<string, QmError | Error>();

  constructor(readonly expected: readonly string[]) {}

  ack(host: string, detail: string): void {
    this.acked.set(host, detail);
  }

  fail(host: string, err: QmError | Error): void {
    this.failed.set(host, err);
  }

  /** Hosts that failed because they could not be reached (no answer, as opposed to a refusal). */
  get unanswered(): string[] {
    return [...this.failed].filter(([, e]) => e instanceof QmError && e.code === "UNREACHABLE").map(([h]) => h);
  }

  get pending(): string[] {
    return this.expected.filter((h) => !this.acked.has(h) && !this.failed.has(h));
  }

  get ok(): boolean {
    return this.acked.size === this.expected.length;
  }

  /** e.g. "2/2" */
  get summary(): string {
    return `${this.acked.size}/${this.expected.length}`;
  }

  firstFailure(): [string, QmError | Error] | undefined {
    return [...this.failed][0];
  }
}
