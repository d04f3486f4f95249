// Live progress: the meter's events (timer, host states, bytes and rate) with a fake timer and clock,
// and how the human output shows them on a terminal and not off one.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { Clock } from "../../controller/clock.js";
import type { ProgressEvent, RunEvent } from "../../controller/events.js";
import { HumanReporter, formatBytes, progressLine } from "../../controller/output.js";
import { type Every, ProgressMeter } from "../../controller/progress.js";

class Ticks {
  now = 0;
  readonly timers = new Set<() => void>();
  readonly clock: Clock = { now: () => this.now, sleep: async () => undefined };
  readonly every: Every = (_ms, fn) => {
    this.timers.add(fn);
    return () => this.timers.delete(fn);
  };

  /** a second goes by: every running timer fires once */
  second(): void {
    this.now += 1000;
    for (const fn of this.timers) fn();
  }
}

function meter(): { ticks: Ticks; shown: ProgressEvent[]; m: ProgressMeter } {
  const ticks = new Ticks();
  const shown: ProgressEvent[] = [];
  return { ticks, shown, m: new ProgressMeter("m1", (e) => shown.push(e), ticks.clock, ticks.every) };
}

describe("ProgressMeter", () => {
  it("shows the hosts' states each second while the step runs, and nothing once it ended", () => {
    const { ticks, shown, m } = meter();
    const live = m.begin("fronts-park-data", ["web1", "web2"], false);
    live.answered("web1", true);
    ticks.second();
    live.answered("web2", false);
    ticks.second();
    live.end();
    expect(ticks.timers.size).toBe(0);
    ticks.second();
    expect(shown).toEqual([
      { event: "progress", migrationId: "m1", step: "fronts-park-data", elapsedMs: 1000, hosts: [{ host: "web1", state: "ok" }, { host: "web2", state: "running" }] },
      { event: "progress", migrationId: "m1", step: "fronts-park-data", elapsedMs: 2000, hosts: [{ host: "web1", state: "ok" }, { host: "web2", state: "failed" }] },
    ]);
  });

  it("a step that ends within its first second shows none; an undo step says so", () => {
    const { ticks, shown, m } = meter();
    m.begin("lock", ["hostmaster"], false).end();
    ticks.second();
    expect(shown).toEqual([]);
    const undo = m.begin("master-move-site", ["hostmaster"], true);
    ticks.second();
    undo.end();
    expect(shown).toEqual([{ event: "progress", migrationId: "m1", step: "master-move-site", undo: true, elapsedMs: 1000, hosts: [{ host: "hostmaster", state: "running" }] }]);
  });

  it("bytes of the step in flight, with the rate over the last seconds; the rate only while running", () => {
    const { ticks, shown, m } = meter();
    const live = m.begin("push-site", ["web1", "web2"], false);
    m.bytes("push-site", false, "web1", 0, 0);
    m.bytes("push-site", false, "web1", 4_000_000, 1_000);
    // another step's bytes, or the undo's, are not this one's
    m.bytes("fetch-site", false, "web2", 5, 5);
    m.bytes("push-site", true, "web2", 5, 5);
    ticks.second();
    expect(shown.at(-1)?.hosts).toEqual([
      { host: "web1", state: "running", bytesSent: 4_000_000, bytesReceived: 1_000, bytesPerSecond: 4_001_000 },
      { host: "web2", state: "running" },
    ]);
    // a stall shows at once: the rate is over a window, not since the start
    for (let s = 0; s < 4; s++) ticks.second();
    expect(shown.at(-1)?.hosts[0]).toMatchObject({ bytesSent: 4_000_000, bytesPerSecond: 0 });
    m.bytes("push-site", false, "web1", 10_000_000, 2_000);
    live.answered("web1", true);
    ticks.second();
    expect(shown.at(-1)?.hosts[0]).toEqual({ host: "web1", state: "ok", bytesSent: 10_000_000, bytesReceived: 2_000 });
    live.end();
  });

  it("a new step ends the one before (no two timers)", () => {
    const { ticks, m } = meter();
    m.begin("a", ["x"], false);
    m.begin("b", ["x"], false);
    expect(ticks.timers.size).toBe(1);
  });
});

class Collect extends Writable {
  text = "";
  columns: number | undefined;

  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const run: RunEvent[] = [
  { event: "plan", migrationId: "m1", site: "s", newSite: "s", from: "p1", to: "p2", dryRun: false, fetchFrom: "web1", steps: [{ name: "push-site", hosts: ["web1", "web2"], does: "", undo: null, moves: [] }] },
  { event: "step-start", migrationId: "m1", step: "push-site" },
  { event: "progress", migrationId: "m1", step: "push-site", elapsedMs: 1000, hosts: [{ host: "web2", state: "running", bytesSent: 0, bytesReceived: 0 }, { host: "web1", state: "running", bytesSent: 5_000_000, bytesReceived: 20_000, bytesPerSecond: 5_020_000 }] },
  { event: "ack", migrationId: "m1", step: "push-site", host: "web1", ok: true, detail: "ok" },
  { event: "progress", migrationId: "m1", step: "push-site", elapsedMs: 2100, hosts: [{ host: "web1", state: "ok", bytesSent: 12_400_000, bytesReceived: 0 }, { host: "web2", state: "running", bytesSent: 8_000_000, bytesReceived: 100_000, bytesPerSecond: 38_100_000 }] },
  { event: "ack", migrationId: "m1", step: "push-site", host: "web2", ok: true, detail: "ok" },
  { event: "step-end", migrationId: "m1", step: "push-site", ok: true, acked: 2, expected: 2, durationMs: 2345 },
  { event: "result", migrationId: "m1", outcome: "migrated", exitCode: 0, message: "s is on p2", durationMs: 3000 },
];

function render(events: RunEvent[], tty: boolean, columns?: number): string {
  const out = new Collect();
  out.columns = columns;
  const r = new HumanReporter(out, false, tty);
  for (const e of events) r.event(e);
  return out.text;
}

describe("HumanReporter and progress", () => {
  it("off a terminal, progress is not shown: the output is what it was without it", () => {
    const plain = render(run, false);
    expect(plain).toBe(render(run.filter((e) => e.event !== "progress"), false));
    expect(plain).not.toContain("\r");
    expect(plain).not.toContain("MB");
  });

  it("on a terminal, a live line rewritten in place, cleared before the step's line", () => {
    const text = render(run, true);
    const erase = "\r\x1b[K";
    const first = `${erase}  … push-site                 web1 … 5.0 MB 5.0 MB/s  web2 … 0 B  1.0 s`;
    const second = `${erase}  … push-site                 web1 ✔ 12.4 MB  web2 … 8.1 MB 38.1 MB/s  2.1 s`;
    expect(text).toContain(`${first}${second}${erase}  ✔ push-site                 web1 ✔  web2 ✔  (2/2)  2345 ms\n`);
    // without the live lines, the rest is as off a terminal
    expect(text.replace(first, "").replace(second, "").replace(erase, "")).toBe(render(run, false));
  });

  it("the live line fits the terminal (a wrapped one could not be rewritten)", () => {
    const text = render(run.slice(0, 3), true, 30);
    const live = text.split("\r\x1b[K").at(-1) ?? "";
    expect([...live].length).toBe(29);
  });

  it("bytes in decimal units", () => {
    expect([0, 999, 1000, 12_400_000, 999_960, 3_210_000_000].map(formatBytes)).toEqual(["0 B", "999 B", "1.0 kB", "12.4 MB", "1.0 MB", "3.2 GB"]);
    expect(progressLine({ event: "progress", migrationId: "m", step: "master-move-site", undo: true, elapsedMs: 61_000, hosts: [{ host: "hostmaster", state: "running" }] })).toBe(
      "  … undo master-move-site     hostmaster …  61.0 s",
    );
  });
});

describe("HumanReporter: a failed host's detail", () => {
  it("its first line under the step in red, the lines that follow it (a hook's output) set apart below", () => {
    const detail = ["hook updatedb (drush) failed: exit 1: table missing", "last 2 lines of its output (/j/hooks/04-updatedb.log):", "updating", "table missing"].join("\n");
    const events: RunEvent[] = [
      { event: "step-start", migrationId: "m1", step: "master-move-site" },
      { event: "ack", migrationId: "m1", step: "master-move-site", host: "hostmaster", ok: false, detail, code: "HOOK_FAILED" },
      { event: "step-end", migrationId: "m1", step: "master-move-site", ok: false, acked: 0, expected: 1, durationMs: 12 },
    ];
    const plain = render(events, false);
    expect(plain.split("\n").slice(1)).toEqual([
      "      hostmaster: hook updatedb (drush) failed: exit 1: table missing",
      "      │ last 2 lines of its output (/j/hooks/04-updatedb.log):",
      "      │ updating",
      "      │ table missing",
      "",
    ]);
    const out = new Collect();
    const coloured = new HumanReporter(out, true);
    for (const e of events) coloured.event(e);
    expect(out.text).toContain("      \x1b[2m│ updating\x1b[0m\n");
  });
});
