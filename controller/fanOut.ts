// Runs one step's part on each of its hosts in parallel and accounts for every host: one
// acknowledgement each, journaled before (intent) and after (ack), and a StepTally that knows who was
// asked, who acknowledged, who failed and why. Hosts that failed may be tried again. While a step is
// in flight, the progress meter shows who has answered.
import { ackDetail, errorCode } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { Clock } from "./clock.js";
import type { ProgressMeter } from "./progress.js";
import type { Recorder } from "./recorder.js";
import { StepTally } from "./tally.js";

/** One host's part of a step; resolves with the acknowledgement's one line. */
export type HostWork = (host: string) => Promise<string>;

export interface FanOutOptions {
  readonly undo?: boolean;
  /** attempts in all: the hosts that failed are tried again, after a pause that grows each time */
  readonly attempts?: number;
  readonly retryDelayMs?: number;
}

export class FanOut {
  constructor(
    private readonly rec: Recorder,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** called after each acknowledgement is journaled (fault injection for the crash tests) */
    private readonly afterAck: (step: string, host: string, undo: boolean) => void = () => undefined,
    private readonly progress?: ProgressMeter,
  ) {}

  async run(step: string, hosts: readonly string[], work: HostWork, opts: FanOutOptions = {}): Promise<StepTally> {
    const tally = new StepTally(hosts);
    await this.once(step, hosts, work, tally, opts.undo === true);
    for (let attempt = 2; attempt <= (opts.attempts ?? 1) && !tally.ok; attempt++) {
      await this.clock.sleep((opts.retryDelayMs ?? 1000) * (attempt - 1));
      await this.once(step, [...tally.failed.keys()], work, tally, opts.undo === true);
    }
    return tally;
  }

  /**
   * One attempt on each host. A host's change is attempted only once its intent is journaled; a
   * journal that cannot be written (a full state dir) is not a host's failure: every host's part is let
   * finish, then the journal's error is thrown, and the runner stops going forward.
   */
  private async once(step: string, hosts: readonly string[], work: HostWork, tally: StepTally, undo: boolean): Promise<void> {
    const { rec } = this;
    const id = rec.migrationId;
    const u = undo ? { undo: true as const } : {};
    let journalError: unknown;
    const journal = async (write: Promise<void>): Promise<boolean> => {
      try {
        await write;
        return true;
      } catch (err) {
        journalError ??= err;
        return false;
      }
    };
    for (const h of hosts) tally.failed.delete(h);
    const t0 = this.clock.now();
    if (!(await journal(rec.emit({ event: "step-start", migrationId: id, step, ...u })))) throw journalError;
    const live = this.progress?.begin(step, hosts, undo);
    try {
      await Promise.all(
        hosts.map(async (host) => {
          if (!(await journal(rec.intent(step, host, step, undo)))) {
            tally.fail(host, asError(journalError));
            live?.answered(host, false);
            return;
          }
          try {
            const detail = await work(host);
            tally.ack(host, detail);
            live?.answered(host, true);
            if (await journal(rec.emit({ event: "ack", migrationId: id, step, host, ok: true, detail, ...u }))) this.afterAck(step, host, undo);
          } catch (err) {
            const e = asError(err);
            tally.fail(host, e);
            live?.answered(host, false);
            this.log.warn({ step, host, undo, err: e, shownBy: "ack" }, "host failed step");
            await journal(rec.emit({ event: "ack", migrationId: id, step, host, ok: false, detail: ackDetail(e), code: errorCode(e), ...u }));
          }
        }),
      );
    } finally {
      // before step-end: no progress of a step follows its end
      live?.end();
    }
    await journal(
      rec.emit({
        event: "step-end",
        migrationId: id,
        step,
        ok: tally.ok && journalError === undefined,
        acked: tally.acked.size,
        expected: tally.expected.length,
        durationMs: this.clock.now() - t0,
        ...u,
      }),
    );
    if (journalError !== undefined) throw journalError;
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
