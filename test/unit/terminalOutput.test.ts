// A person at a terminal (issue 14): the log goes to the journal folder, not the screen (JournalLogSink);
// expected failures are logged without a stack trace (serializeError); warnings that matter and internal
// errors are said in the human output's own style (HumanReporter).
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunEvent } from "../../controller/events.js";
import { Journal } from "../../controller/journal.js";
import { JournalLogSink, LOG_FILE, noticeText } from "../../controller/logSink.js";
import { HumanReporter } from "../../controller/output.js";
import { QmError } from "../../shared/errors.js";
import { createRootLogger, serializeError } from "../../shared/logger.js";

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(path.join(tmpdir(), "qm-logsink-"));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const ID = "20261126T101645Z-bc2026";

function sinkWithScreen(): { sink: JournalLogSink; notices: Array<[string, string]> } {
  const notices: Array<[string, string]> = [];
  return { sink: new JournalLogSink(stateDir, { notice: (level, text) => notices.push([level, text]) }), notices };
}

const lines = (file: string) =>
  fs
    .readFileSync(file, "utf8")
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe("JournalLogSink", () => {
  it("a migration's lines wait until its journal folder exists, then go to its controller.log in order; the folder is never made by the sink", async () => {
    const { sink } = sinkWithScreen();
    const log = createRootLogger("quick-migrate", "info", sink).child({ migrationId: ID });
    log.info({ n: 1 }, "before the journal");
    log.info({ n: 2 }, "still before");
    expect(fs.existsSync(Journal.folder(stateDir, ID))).toBe(false);
    await Journal.create(stateDir, ID, { plan: {} });
    log.info({ n: 3 }, "after");
    sink.close();
    expect(lines(path.join(Journal.folder(stateDir, ID), LOG_FILE)).map((l) => l.n)).toEqual([1, 2, 3]);
    expect(fs.existsSync(path.join(stateDir, LOG_FILE))).toBe(false);
  });

  it("lines of no migration, and of one whose journal was never made (refused before its lock), go to the state dir's controller.log", () => {
    const { sink } = sinkWithScreen();
    const root = createRootLogger("quick-migrate", "info", sink);
    root.info({ sites: 3 }, "batch finished");
    root.child({ migrationId: ID }).warn({ shownBy: "result" }, "refused at preflight");
    sink.close();
    const got = lines(path.join(stateDir, LOG_FILE));
    expect(got.map((l) => l.msg)).toEqual(["batch finished", "refused at preflight"]);
    expect(fs.existsSync(Journal.folder(stateDir, ID))).toBe(false);
    expect(fs.statSync(path.join(stateDir, LOG_FILE)).mode & 0o777).toBe(0o600);
  });

  it("a warning or error the events do not show is one line on the screen; info, and what the events show, are not", () => {
    const { sink, notices } = sinkWithScreen();
    const log = createRootLogger("quick-migrate", "info", sink).child({ component: "runner", migrationId: ID });
    log.info("hook start");
    log.warn({ shownBy: "ack", err: new QmError("HOOK_FAILED", "hook updatedb failed") }, "host failed step");
    log.warn({ signal: "SIGINT" }, "interrupted: cancelling the running step");
    log.error({ err: new QmError("IO", "cannot write\nthe lock", { path: "/x" }), output: `${"x".repeat(500)}\nsecond line` }, "lock not released");
    sink.close();
    expect(notices).toEqual([
      ["warn", "interrupted: cancelling the running step (signal=SIGINT)"],
      ["error", `lock not released: cannot write … (output=${"x".repeat(160)}…)`],
    ]);
    for (const [, text] of notices) expect(text).not.toContain("\n");
  });

  it("noticeText: the message, the error's message and the context, plumbing left out", () => {
    expect(noticeText({ level: 40, time: "t", pid: 1, name: "quick-migrate", component: "hooks", migrationId: ID, msg: "hook left processes running: ending them", hook: "updatedb", pids: [4711] })).toBe(
      "hook left processes running: ending them (hook=updatedb, pids=[4711])",
    );
  });

  it("a journal folder removed under it (an attempt that lost the race for the lock): its lines go to the state dir's log", async () => {
    const { sink } = sinkWithScreen();
    const journal = await Journal.create(stateDir, ID, { plan: {} });
    const log = createRootLogger("quick-migrate", "info", sink).child({ migrationId: ID });
    await journal.remove();
    log.info("after the journal went");
    sink.close();
    expect(lines(path.join(stateDir, LOG_FILE)).map((l) => l.msg)).toEqual(["after the journal went"]);
  });
});

describe("serializeError", () => {
  it("an expected failure: code, message and context, no stack", () => {
    const err = new QmError("HOOK_FAILED", "hook updatedb (drush) failed: exit 1", { key: "hooks.updatedb" }, { cause: new Error("inner\nmore") });
    expect(serializeError(err)).toEqual({ type: "QmError", code: "HOOK_FAILED", message: "hook updatedb (drush) failed: exit 1", context: { key: "hooks.updatedb" }, cause: "inner" });
  });

  it("a bug keeps its stack: anything not a QmError, and INTERNAL", () => {
    expect(serializeError(new TypeError("x is undefined"))).toMatchObject({ type: "TypeError", message: "x is undefined", stack: expect.stringContaining("at ") });
    expect(serializeError(new QmError("INTERNAL", "no run for a step"))).toMatchObject({ stack: expect.stringContaining("at ") });
  });

  it("the logger uses it for `err`", () => {
    const out: string[] = [];
    const log = createRootLogger("t", "info", { write: (l: string) => out.push(l) });
    log.warn({ err: new QmError("UNREACHABLE", "web1 did not answer", { host: "web1" }) }, "host failed step");
    expect(JSON.parse(out[0] ?? "{}").err).toEqual({ type: "QmError", code: "UNREACHABLE", message: "web1 did not answer", context: { host: "web1" } });
  });
});

class Collect extends Writable {
  text = "";

  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const plan: RunEvent = {
  event: "plan",
  migrationId: "m1",
  site: "s",
  newSite: "s",
  from: "p1",
  to: "p2",
  dryRun: false,
  fetchFrom: "web1",
  steps: [{ name: "master-move-site", hosts: ["hostmaster"], does: "", undo: null, moves: [] }],
};

function failedRun(code: "INTERNAL" | "HOOK_FAILED", host = "hostmaster"): RunEvent[] {
  return [
    plan,
    { event: "step-start", migrationId: "m1", step: "master-move-site" },
    { event: "ack", migrationId: "m1", step: "master-move-site", host, ok: false, detail: "TypeError: x is undefined", code },
    { event: "step-end", migrationId: "m1", step: "master-move-site", ok: false, acked: 0, expected: 1, durationMs: 3 },
    { event: "result", migrationId: "m1", outcome: "rolled-back", exitCode: 1, message: "master-move-site failed", code, durationMs: 10, journal: "/state/migrations/m1" },
  ];
}

function render(events: RunEvent[], logInJournal: boolean): string {
  const out = new Collect();
  const r = new HumanReporter(out, false, false, logInJournal);
  for (const e of events) r.event(e);
  return out.text;
}

describe("HumanReporter: notices and internal errors", () => {
  it("a notice is one line in the table's style", () => {
    const out = new Collect();
    new HumanReporter(out, false).notice("warn", "interrupted: cancelling the running step (signal=SIGINT)");
    expect(out.text).toBe("  ! interrupted: cancelling the running step (signal=SIGINT)\n");
  });

  it("an internal error is called a bug, and the result says where its stack trace is", () => {
    const text = render(failedRun("INTERNAL"), true);
    expect(text).toContain("hostmaster: internal error (a bug in quick-migrate): TypeError: x is undefined");
    expect(text).toContain("please report it with its stack trace, which is in /state/migrations/m1/controller.log on this hostmaster");
    expect(render(failedRun("INTERNAL"), false)).toContain("which is in the controller's log lines on stderr");
    expect(render(failedRun("INTERNAL", "web1"), true)).toContain("which is in the agent's log on web1 (journalctl -u quick-migrate-agent)");
  });

  it("an expected failure is not called a bug", () => {
    const text = render(failedRun("HOOK_FAILED"), true);
    expect(text).not.toContain("bug");
    expect(text).not.toContain("stack");
  });
});
