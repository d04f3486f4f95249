// Fan-out to many fronts stays parallel but bounded (config fanOut): no more agent calls and no more
// tunnelled rsync runs in flight than the bounds, read from the agents' own audit lines (each says when
// the call ended and how long it took there); and a frozen front holding a slot costs its
// timeouts.unresponsive bound, not a hang.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { type AuditLine, auditLines, auditLinesAfter } from "../helpers/auditLog.js";
import { type Scenario, expectMigrated, expectUnchanged, rescan, setupScenario, siteDir } from "../helpers/scenario.js";

const UNRESPONSIVE_S = 3;
const SLACK_MS = 3000;

let scenario: Scenario | undefined;
const cleanups: Array<() => void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await scenario?.cleanup();
  scenario = undefined;
});

/**
 * The most intervals [end - duration, end - endSlackMs] that overlap at one moment. `endSlackMs`: how
 * long after the controller let go of a call its agent may still log the call's end.
 */
function maxOverlap(lines: readonly AuditLine[], endSlackMs = 0): number {
  const edges = lines.flatMap((l) => {
    const end = Date.parse(String(l.time));
    return [
      { at: end - (l.durationMs as number), d: +1 },
      { at: end - endSlackMs, d: -1 },
    ];
  });
  // an end before a start at the same moment: touching is not overlapping
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let most = 0;
  for (const e of edges) most = Math.max(most, (now += e.d));
  return most;
}

/** A file in the site's code, different on each front's copy: push-site carries it to every front. */
function addLargeCode(s: Scenario, mb: number): void {
  const file = path.join(siteDir(s.cluster.frontRoot("web1"), s.from, s.site), "libraries", "large.bin");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const chunk = Buffer.alloc(1024 * 1024);
  const fd = fs.openSync(file, "w", 0o644);
  for (let i = 0; i < mb; i++) {
    chunk.fill(i % 251);
    chunk.writeUInt32LE(i, 0);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  s.cluster.handOver();
}

describe("fan-out bounds (fanOut.calls, fanOut.rsync)", () => {
  it("six fronts, two calls and two rsync runs at a time: never more in flight, still two at once, every front migrated", async () => {
    const fronts = ["web1", "web2", "web3", "web4", "web5", "web6"].map((name) => ({ name }));
    scenario = await setupScenario({ fronts, files: 20 });
    addLargeCode(scenario, 24);
    const s = (scenario = await rescan(scenario));
    s.cluster.writeControllerConfig({ extra: { fanOut: { calls: 2, rsync: 2 } } });
    const since = new Map(s.cluster.fronts.map((f) => [f.name, auditLines(f.logFile).length]));

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--from", s.from, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    const id = String(run.events[0]?.migrationId);

    const lines: AuditLine[] = [];
    for (const f of s.cluster.fronts) {
      // every front: preflight, park, push, restore, remove (and web1's fetch)
      const expected = f.name === "web1" ? 6 : 5;
      const mine = await auditLinesAfter(f.logFile, since.get(f.name) ?? 0, (l) => l.filter((x) => x.migrationId === id).length >= expected);
      lines.push(...mine.filter((x) => x.migrationId === id && x.result === "ok"));
    }
    for (const l of lines) expect(typeof l.durationMs, JSON.stringify(l)).toBe("number");
    const pushes = lines.filter((l) => l.op === "rsync" && l.step === "push-site");
    expect(pushes).toHaveLength(6);
    // a bound that did not hold shows here: six 24 MB pushes sent at once all overlap. The agent logs a
    // push's end once its rsync has exited, a few ms after the controller's rsync ended and freed the
    // slot (6–24 ms here when idle, more under load): 100 ms of a push's end do not count (a push takes
    // 400 ms and more, so two at once still overlap by far)
    expect(maxOverlap(pushes, 100)).toBe(2);
    const unary = lines.filter((l) => l.op !== "rsync");
    expect(unary.length).toBeGreaterThanOrEqual(4 * 6);
    expect(maxOverlap(unary)).toBeLessThanOrEqual(2);

    await expectMigrated(s);
    const large = (root: string, platform: string) => path.join(siteDir(root, platform, s.site), "libraries", "large.bin");
    const source = fs.readFileSync(large(s.cluster.masterRoot, s.to));
    for (const f of s.cluster.fronts) expect(fs.readFileSync(large(f.root, s.to)).equals(source), f.name).toBe(true);
  });

  it("a front frozen during push-site holds the only rsync slot for its bound, not for ever: exit 3; thawed, rollback finishes", async () => {
    const pidFile = path.join(fs.mkdtempSync(path.join("/tmp", "qm-pid-")), "web2.pid");
    cleanups.push(() => fs.rmSync(path.dirname(pidFile), { recursive: true, force: true }));
    const s = (scenario = await setupScenario({
      fronts: ["web1", "web2", "web3", "web4"].map((name) => ({ name })),
      hooks: { dbDump: ["true"], updatedb: ["sh", "-c", `kill -STOP "$(cat '${pidFile}')"`] },
    }));
    const pid = s.cluster.front("web2").process?.pid as number;
    fs.writeFileSync(pidFile, String(pid));
    cleanups.push(() => {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // gone
      }
    });
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S }, fanOut: { calls: 2, rsync: 1 } } });

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(3);
    const push = run.events.find((e) => e.event === "step-end" && e.step === "push-site" && e.undo !== true);
    expect(push).toMatchObject({ ok: false, acked: 3, expected: 4 });
    // web2 held the one slot until its bound; web3 and web4 went after it
    expect(Number(push?.durationMs)).toBeGreaterThanOrEqual(UNRESPONSIVE_S * 1000 - 500);
    expect(Number(push?.durationMs)).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
    const result = run.events.at(-1) as { outcome: string; message: string; migrationId: string };
    expect(result.outcome).toBe("needs-attention");
    expect(result.message).toMatch(/push-site failed on web2: agent unreachable/);

    process.kill(pid, "SIGCONT");
    s.cluster.writeControllerConfig({ extra: {} });
    const again = await runController(s.cluster.controllerConfig, ["rollback", result.migrationId, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectUnchanged(s);
  });
});
