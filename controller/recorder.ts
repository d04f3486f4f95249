// Journal and events together: every event a run emits is printed (through the reporter) and
// journaled, but progress, which is printed only; intents are journaled only. Until the lock step opens the journal, what is recorded
// waits in memory and is written first thing once it is open. It also keeps every event of this
// migration — those of earlier runs read back from the journal too — for the replay.
import type { IntentEvent, JournaledEvent, ProgressEvent, Reporter } from "./events.js";
import type { Journal } from "./journal.js";
import type { JournalEvent } from "./journalState.js";

export class Recorder {
  /** everything journaled for this migration, including what earlier runs wrote */
  readonly events: JournalEvent[] = [];
  private readonly pending: object[] = [];
  private current: Journal | undefined;

  constructor(
    private readonly reporter: Reporter,
    readonly migrationId: string,
    earlier?: { journal: Journal; events: readonly JournalEvent[] },
  ) {
    if (earlier) {
      this.current = earlier.journal;
      this.events.push(...earlier.events);
    }
  }

  get journal(): Journal | undefined {
    return this.current;
  }

  /**
   * Which run of this migration this is, as the fronts are told (ApplyRequest.run): 1 for `migrate`,
   * one more for each rollback and resume journaled since. A front refuses requests of an earlier run,
   * so one held up in the network cannot act after a later run did.
   */
  get run(): number {
    return 1 + this.events.filter((e) => e.event === "resume" || e.event === "rollback").length;
  }

  /** The journal is there: what waited is written to it, in order. */
  async open(journal: Journal): Promise<void> {
    this.current = journal;
    // given together, they go out in order with one fsync (the journal's group commit)
    await Promise.all(this.pending.splice(0).map((e) => journal.append(e)));
  }

  /** Only for an attempt that changed nothing (it lost the race for the lock): its journal goes. */
  async discard(): Promise<void> {
    await this.current?.remove();
    this.current = undefined;
  }

  /** Printed and journaled. */
  async emit(e: JournaledEvent): Promise<void> {
    this.reporter.event(e);
    await this.note(e);
  }

  /** Printed only: how the step in flight is going says nothing a later run needs. */
  show(e: ProgressEvent): void {
    this.reporter.event(e);
  }

  /** Journaled before a host's change is attempted. */
  async intent(step: string, host: string, action: string, undo: boolean): Promise<void> {
    const e: IntentEvent = { event: "intent", migrationId: this.migrationId, step, host, action, ...(undo ? { undo: true } : {}) };
    await this.note(e);
  }

  /**
   * Journaled only. An event that cannot be journaled (a full state dir) is not kept either: what the
   * replay of this run sees is what a later run will read back.
   */
  async note(e: object): Promise<void> {
    if (this.current) await this.current.append(e);
    else this.pending.push(e);
    this.events.push(e as JournalEvent);
  }

  /** The journal as read again once the lock is held (resume, rollback): earlier runs' events, and none of this one yet. */
  reload(events: readonly JournalEvent[]): void {
    this.events.splice(0, this.events.length, ...events);
  }
}
