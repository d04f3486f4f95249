// Per-host accounting for one step: who was asked, who acknowledged, who failed and why (an agent that
// never answered fails as UNREACHABLE).
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

  get ok(): boolean {
    return this.acked.size === this.expected.length;
  }

  firstFailure(): [string, QmError | Error] | undefined {
    return [...this.failed][0];
  }
}
