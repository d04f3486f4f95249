// The agent's health verdict (pure) and the monitor that keeps the health service's status: a change is
// set once and logged once, a stopping agent is NOT_SERVING for good, a look that hangs is a verdict.
import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type FolderLook, type HealthFacts, HealthMonitor, evaluateHealth } from "../../agent/healthMonitor.js";

const PATHS = { root: "/var/aegir/platforms", stateDir: "/var/lib/qm" };
const GIB = 1024 ** 3;
const ok = (freeBytes = 10 * GIB): FolderLook => ({ ok: true, freeBytes });

describe("evaluateHealth", () => {
  it("SERVING with both folders there, usable and above minFreeBytes", () => {
    expect(evaluateHealth({ root: ok(), stateDir: ok() }, PATHS, GIB)).toEqual({ serving: true, reasons: [] });
  });

  it.each([
    [{ root: { ok: false, why: "missing" }, stateDir: ok() }, "ROOT_MISSING", "root /var/aegir/platforms does not exist"],
    [{ root: { ok: false, why: "not-directory" }, stateDir: ok() }, "ROOT_NOT_DIRECTORY", "root /var/aegir/platforms is not a directory"],
    [{ root: { ok: false, why: "error", detail: "EACCES" }, stateDir: ok() }, "ROOT_UNREADABLE", "root /var/aegir/platforms cannot be looked at: EACCES"],
    [{ root: ok(), stateDir: { ok: false, why: "missing" } }, "STATE_DIR_MISSING", "state dir /var/lib/qm does not exist"],
    [{ root: ok(), stateDir: { ok: false, why: "not-writable", detail: "EROFS" } }, "STATE_DIR_NOT_WRITABLE", "state dir /var/lib/qm is not writable: EROFS"],
    [{ root: ok(GIB), stateDir: ok() }, "ROOT_LOW_SPACE", "root /var/aegir/platforms: 1.0 GiB free, not above minFreeBytes (1.0 GiB)"],
    [{ root: ok(), stateDir: ok(5 * 1024 ** 2) }, "STATE_DIR_LOW_SPACE", "state dir /var/lib/qm: 5.0 MiB free, not above minFreeBytes (1.0 GiB)"],
  ] as Array<[HealthFacts, string, string]>)("NOT_SERVING: %j is %s", (facts, code, message) => {
    expect(evaluateHealth(facts, PATHS, GIB)).toEqual({ serving: false, reasons: [{ code, message }] });
  });

  it("every reason at once", () => {
    const v = evaluateHealth({ root: { ok: false, why: "missing" }, stateDir: ok(1) }, PATHS, GIB);
    expect(v.reasons.map((r) => r.code)).toEqual(["ROOT_MISSING", "STATE_DIR_LOW_SPACE"]);
  });

  it("free space must be above minFreeBytes: none free is too little even for minFreeBytes 0", () => {
    expect(evaluateHealth({ root: ok(0), stateDir: ok(0) }, PATHS, 0).serving).toBe(false);
    expect(evaluateHealth({ root: ok(1), stateDir: ok(1) }, PATHS, 0).serving).toBe(true);
  });
});

function logged(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l.trim() !== "") lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "info" }, sink), lines };
}

const flush = () => new Promise((r) => setImmediate(r));

describe("HealthMonitor", () => {
  it("sets both services on a change only, and logs each change once (warn going down, info coming back)", async () => {
    const { log, lines } = logged();
    const set: string[] = [];
    let facts: HealthFacts = { root: ok(), stateDir: ok() };
    const m = new HealthMonitor({ setStatus: (svc, st) => set.push(`${svc}=${st}`) }, log, { ...PATHS, minFreeBytes: GIB, intervalMs: 3_600_000, look: async () => facts });
    await m.refresh();
    await m.refresh();
    expect(set).toEqual(["=SERVING", "quickmigrate.v1.Agent=SERVING"]);
    facts = { root: { ok: false, why: "missing" }, stateDir: ok() };
    await m.refresh();
    await m.refresh();
    facts = { root: { ok: false, why: "missing" }, stateDir: ok(1) };
    await m.refresh();
    facts = { root: ok(), stateDir: ok() };
    await m.refresh();
    await flush();
    expect(set).toEqual(["=SERVING", "quickmigrate.v1.Agent=SERVING", "=NOT_SERVING", "quickmigrate.v1.Agent=NOT_SERVING", "=SERVING", "quickmigrate.v1.Agent=SERVING"]);
    expect(lines.map((l) => [l.level, l.msg, (l.reasons as Array<{ code: string }> | undefined)?.map((r) => r.code)])).toEqual([
      [30, "serving", undefined],
      [40, "not serving", ["ROOT_MISSING"]],
      [40, "not serving", ["ROOT_MISSING", "STATE_DIR_LOW_SPACE"]],
      [30, "serving", undefined],
    ]);
  });

  it("a reloaded minFreeBytes applies from the next look", async () => {
    const set: string[] = [];
    const m = new HealthMonitor({ setStatus: (svc, st) => svc === "" && set.push(st) }, pino({ level: "silent" }), {
      ...PATHS,
      minFreeBytes: GIB,
      intervalMs: 3_600_000,
      look: async () => ({ root: ok(2 * GIB), stateDir: ok(2 * GIB) }),
    });
    await m.refresh();
    m.setMinFreeBytes(3 * GIB);
    await m.refresh();
    expect(set).toEqual(["SERVING", "NOT_SERVING"]);
  });

  it("stop: NOT_SERVING for good, whatever a look under way finds after", async () => {
    const { log, lines } = logged();
    const set: string[] = [];
    let finish: (f: HealthFacts) => void = () => undefined;
    let hang = false;
    const m = new HealthMonitor({ setStatus: (svc, st) => svc === "" && set.push(st) }, log, {
      ...PATHS,
      minFreeBytes: GIB,
      intervalMs: 3_600_000,
      look: () => (hang ? new Promise<HealthFacts>((resolve) => (finish = resolve)) : Promise.resolve({ root: ok(), stateDir: ok() })),
    });
    await m.refresh();
    hang = true;
    const under = m.refresh();
    m.stop();
    finish({ root: ok(), stateDir: ok() });
    await under;
    await m.fresh();
    await flush();
    expect(set).toEqual(["SERVING", "NOT_SERVING"]);
    expect(lines.at(-1)).toMatchObject({ level: 30, msg: "not serving", reasons: [{ code: "STOPPING" }] });
  });

  it("a look that hangs is NOT_SERVING (PROBE_STUCK), one look at a time; its end decides again", async () => {
    const set: string[] = [];
    let looks = 0;
    let finish: (f: HealthFacts) => void = () => undefined;
    const m = new HealthMonitor({ setStatus: (svc, st) => svc === "" && set.push(st) }, pino({ level: "silent" }), {
      ...PATHS,
      minFreeBytes: GIB,
      intervalMs: 3_600_000,
      stuckMs: 50,
      look: () => {
        looks++;
        return new Promise<HealthFacts>((resolve) => (finish = resolve));
      },
    });
    const first = m.refresh();
    await new Promise((r) => setTimeout(r, 120));
    expect(set).toEqual(["NOT_SERVING"]);
    void m.refresh();
    await m.fresh(); // waits at most a second, answers from what is known
    expect(looks).toBe(1);
    finish({ root: ok(), stateDir: ok() });
    await first;
    expect(set).toEqual(["NOT_SERVING", "SERVING"]);
  });
});
