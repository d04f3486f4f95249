// Replaying a journal: what is done, where to resume, what to undo on which hosts, and the state shown.
import { describe, expect, it } from "vitest";
import { type JournalEvent, replay, stateOf } from "../../controller/journalState.js";

const intent = (step: string, host: string, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "intent", step, host, action: step, ...extra });
const ack = (step: string, host: string, ok = true, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "ack", step, host, ok, ...extra });
const start = (step: string, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "step-start", step, ...extra });
const end = (step: string, ok = true, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "step-end", step, ok, ...extra });

/** A step run on its hosts; `acked` of them answered ok. */
function step(name: string, hosts: string[], acked = hosts, undo = false): JournalEvent[] {
  const u = undo ? { undo: true } : {};
  return [
    start(name, u),
    ...hosts.map((h) => intent(name, h, u)),
    ...hosts.map((h) => ack(name, h, acked.includes(h), u)),
    end(name, acked.length === hosts.length, u),
  ];
}

const UP_TO_PARK = [
  ...step("preflight", ["hostmaster", "web1", "web2"]),
  ...step("lock", ["hostmaster"]),
  ...step("maintenance-on", ["hostmaster"]),
  ...step("db-dump", ["hostmaster"]),
  ...step("master-park-data", ["hostmaster"]),
];

describe("replay", () => {
  it("an empty journal: resume from lock, nothing to undo", () => {
    const r = replay([]);
    expect(r.resumeFrom).toBe("lock");
    expect(r.undoPlan).toEqual([]);
    expect(r.result).toBeUndefined();
  });

  it("resumes at the first step not completed and undoes, latest first, only steps that have an undo", () => {
    const r = replay([...UP_TO_PARK, start("fronts-park-data"), intent("fronts-park-data", "web1"), intent("fronts-park-data", "web2"), ack("fronts-park-data", "web1")]);
    expect(r.resumeFrom).toBe("fronts-park-data");
    expect([...r.done]).toEqual(["preflight", "lock", "maintenance-on", "db-dump", "master-park-data"]);
    // web2 was sent the step without answering: it is undone there too (undo is idempotent)
    expect(r.undoPlan).toEqual([
      { step: "fronts-park-data", hosts: ["web1", "web2"] },
      { step: "master-park-data", hosts: ["hostmaster"] },
      { step: "maintenance-on", hosts: ["hostmaster"] },
      { step: "lock", hosts: ["hostmaster"] },
    ]);
    expect(r.hosts.get("web2")).toEqual({ step: "fronts-park-data", undo: false, ok: undefined });
    expect(r.hosts.get("web1")).toEqual({ step: "fronts-park-data", undo: false, ok: true });
  });

  it("a completed undo takes the host out of the undo plan, and the step out of what is done", () => {
    const events = [...UP_TO_PARK, ...step("fronts-park-data", ["web1", "web2"]), ...step("fronts-park-data", ["web1", "web2"], ["web1"], true)];
    const r = replay(events);
    expect(r.undoPlan[0]).toEqual({ step: "fronts-park-data", hosts: ["web2"] });
    expect(r.done.has("fronts-park-data")).toBe(false);
    expect(r.resumeFrom).toBe("fronts-park-data");
    expect(r.lastStep).toEqual({ step: "fronts-park-data", undo: true });
  });

  it("a forward step sent again after its undo is pending again", () => {
    const events = [...UP_TO_PARK, ...step("fronts-park-data", ["web1"]), ...step("fronts-park-data", ["web1"], ["web1"], true), ...step("fronts-park-data", ["web1"])];
    expect(replay(events).undoPlan[0]).toEqual({ step: "fronts-park-data", hosts: ["web1"] });
  });

  it("records the sub-actions that ran, so the undo of master-move-site knows whether updatedb did", () => {
    const events = [
      ...UP_TO_PARK,
      start("master-move-site"),
      intent("master-move-site", "hostmaster"),
      intent("master-move-site", "hostmaster", { action: "rename-site" }),
      intent("master-move-site", "hostmaster", { action: "hook:deploy" }),
      intent("master-move-site", "hostmaster", { action: "hook:updatedb" }),
      intent("master-move-site", "hostmaster", { action: "hook:dbRestore", undo: true }),
    ];
    const r = replay(events);
    expect([...r.ran].sort()).toEqual(["master-move-site/hook:deploy", "master-move-site/hook:updatedb", "master-move-site/rename-site"]);
  });

  it("knows when a host was sent a step at or after the point of no return", () => {
    const before = [...UP_TO_PARK, ...step("fronts-restore-data", ["web1"])];
    expect(replay(before).pastPointOfNoReturn).toBe(false);
    expect(replay([...before, start("fronts-remove-old"), intent("fronts-remove-old", "web1")]).pastPointOfNoReturn).toBe(true);
  });

  it("every step done: nothing to resume", () => {
    const names = ["preflight", "lock", "maintenance-on", "db-dump", "master-park-data", "fronts-park-data", "fetch-site", "master-move-site", "push-site", "fronts-restore-data", "fronts-remove-old", "maintenance-off", "finish"];
    const r = replay(names.flatMap((n) => step(n, ["hostmaster"])));
    expect(r.resumeFrom).toBeUndefined();
  });
});

describe("replay: hooks started and not seen to end", () => {
  const started = (hook: string, pgid: number, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "hook-started", step: "master-move-site", hook, pgid, startTime: `${pgid}00`, ...extra });
  const ended = (hook: string, pgid: number, extra: Partial<JournalEvent> = {}): JournalEvent => ({ event: "hook-ended", step: "master-move-site", hook, pgid, ...extra });

  it("a hook that ended (or was ended by an earlier resume) is not listed; one without its end is, with its group", () => {
    const r = replay([
      ...UP_TO_PARK,
      started("deploy", 101),
      ended("deploy", 101, { ok: true }),
      started("updatedb", 102),
      // the controller was killed here
    ]);
    expect(r.unendedHooks).toEqual([{ step: "master-move-site", hook: "updatedb", undo: false, pgid: 102, startTime: "10200" }]);
    expect(replay([...UP_TO_PARK, started("updatedb", 102), ended("updatedb", 102, { endedBy: "SIGTERM" })]).unendedHooks).toEqual([]);
  });

  it("an undo hook too; a journal without hook events (0.1.0) has none", () => {
    expect(replay([started("dbRestore", 7, { undo: true })]).unendedHooks).toEqual([{ step: "master-move-site", hook: "dbRestore", undo: true, pgid: 7, startTime: "700" }]);
    expect(replay(UP_TO_PARK).unendedHooks).toEqual([]);
  });
});

describe("replay: the dump of an earlier run", () => {
  const ended = (extra: Partial<JournalEvent>): JournalEvent => ({ event: "hook-ended", step: "db-dump", hook: "dbDump", pgid: 9, ...extra });

  it("counts only a dbDump hook that ended well, forward: resume keeps that dump", () => {
    expect(replay([start("db-dump"), ended({ ok: true })]).dumped).toBe(true);
    expect(replay([start("db-dump"), ended({ ok: false })]).dumped).toBe(false);
    // ended by a resume (the killed controller's hook still ran): its file may be partial
    expect(replay([start("db-dump"), ended({ endedBy: "SIGTERM" } as Partial<JournalEvent>)]).dumped).toBe(false);
    expect(replay([start("db-dump"), { event: "hook-started", step: "db-dump", hook: "dbDump", pgid: 9, startTime: "900" }]).dumped).toBe(false);
    expect(replay(UP_TO_PARK).dumped).toBe(false);
  });
});

describe("replay: failures", () => {
  it("each host's failed step with its detail, until the same step (forward or undo) is acknowledged there", () => {
    const failedUpdatedb = ack("master-move-site", "hostmaster", false, { detail: "hook updatedb failed: exit 1\nlast 1 lines of its output (f):\nboom" });
    const r = replay([...UP_TO_PARK, start("master-move-site"), intent("master-move-site", "hostmaster"), failedUpdatedb, ...step("master-park-data", ["hostmaster"], ["hostmaster"], true)]);
    expect(r.failures).toEqual([{ host: "hostmaster", step: "master-move-site", undo: false, detail: "hook updatedb failed: exit 1\nlast 1 lines of its output (f):\nboom" }]);
    // a later run (resume) that gets the step done: nothing failed any more
    expect(replay([...UP_TO_PARK, failedUpdatedb, ...step("master-move-site", ["hostmaster"])]).failures).toEqual([]);
    // tried again and failed again: the last one, once
    const again = ack("master-move-site", "hostmaster", false, { detail: "second" });
    expect(replay([failedUpdatedb, ack("fronts-park-data", "web1", false, { detail: "web1's" }), again]).failures.map((f) => f.detail)).toEqual(["web1's", "second"]);
    // an undo's failure is its own
    expect(replay([failedUpdatedb, ack("master-move-site", "hostmaster", false, { detail: "undo's", undo: true })]).failures.map((f) => [f.undo, f.detail])).toEqual([
      [false, failedUpdatedb.detail],
      [true, "undo's"],
    ]);
    expect(replay(UP_TO_PARK).failures).toEqual([]);
  });
});

describe("stateOf", () => {
  it("takes the last result's outcome, else asks whether the controller still runs", () => {
    const done = replay([...UP_TO_PARK, { event: "result", outcome: "migrated", exitCode: 0, message: "ok" }]);
    expect(stateOf(done, false)).toBe("migrated");
    expect(stateOf(replay(UP_TO_PARK), true)).toBe("running");
    expect(stateOf(replay(UP_TO_PARK), false)).toBe("interrupted");
    const attention = replay([...UP_TO_PARK, { event: "result", outcome: "needs-attention", exitCode: 3, message: "x" }]);
    expect(stateOf(attention, false)).toBe("needs-attention");
    // a result followed by a new run (resume) that started a step: that run's result is what counts
    const resumed = replay([...UP_TO_PARK, { event: "result", outcome: "needs-attention", exitCode: 3, message: "x" }, start("fronts-park-data")]);
    expect(stateOf(resumed, false)).toBe("interrupted");
  });
});
