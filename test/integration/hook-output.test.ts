// A failed hook shows why, on a real cluster: its output goes to a capped file in the journal folder, its
// last lines to the failed step's acknowledgement, the journal and `status`; and a hook that prints
// megabytes does not grow the controller (its output is streamed, not held).
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerEvent, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectUnchanged, setupScenario } from "../helpers/scenario.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

const MIB = 1024 * 1024;
const THIRTY_LINES = 'for i in $(seq 1 30); do echo "updb line $i"; done; exit 1';

async function migrateWithUpdatedb(script: string, env: Record<string, string> = {}): Promise<{ s: Scenario; id: string; events: ControllerEvent[]; stderr: string; exitCode: number }> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], hooks: { dbDump: ["true"], updatedb: ["sh", "-c", script] } }));
  const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env });
  return { s, id: String(run.events[0]?.migrationId), events: run.events, stderr: run.stderr, exitCode: run.exitCode };
}

function journalEvents(dir: string): ControllerEvent[] {
  return fs
    .readFileSync(path.join(dir, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as ControllerEvent);
}

/** the peak memory the controller logged at its end ("controller finished", JSON on stderr) */
function maxRssKb(stderr: string): number {
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    const rec = JSON.parse(line) as { msg?: string; maxRssKb?: number };
    if (rec.msg === "controller finished" && typeof rec.maxRssKb === "number") return rec.maxRssKb;
  }
  throw new Error(`no "controller finished" line with maxRssKb in:\n${stderr}`);
}

describe("a failed hook shows why", () => {
  it("updatedb prints 30 lines and exits 1: rolled back; its last 20 lines in the ack, the journal and status; the whole output in its file", async () => {
    const { s, id, events, exitCode } = await migrateWithUpdatedb(THIRTY_LINES);
    expect(exitCode, JSON.stringify(events)).toBe(1);
    await expectUnchanged(s);

    const journalDir = path.join(s.cluster.masterState, "migrations", id);
    const started = journalEvents(journalDir).find((e) => e.event === "hook-started" && e.hook === "updatedb");
    expect(started?.output).toBe("hooks/02-updatedb.log");
    const file = path.join(journalDir, String(started?.output));
    const expected = Array.from({ length: 30 }, (_, i) => `updb line ${i + 1}`);
    expect(fs.readFileSync(file, "utf8")).toBe(`${expected.join("\n")}\n`);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);

    const tail = [`last 20 lines of its output (${file}):`, ...expected.slice(10)];
    const ack = events.find((e) => e.event === "ack" && e.step === "master-move-site" && e.ok === false);
    const detail = String(ack?.detail).split("\n");
    expect(detail[0]).toBe("hook updatedb (sh) failed: exit 1: updb line 30");
    expect(detail.slice(1)).toEqual(tail);
    const journaled = journalEvents(journalDir).find((e) => e.event === "ack" && e.step === "master-move-site" && e.ok === false);
    expect(journaled?.detail).toBe(ack?.detail);
    // the run's one-line message stays one line
    expect(String(events.at(-1)?.message)).not.toContain("\n");
    expect(String(events.at(-1)?.message)).toMatch(/^master-move-site failed on hostmaster: hook updatedb \(sh\) failed: exit 1: updb line 30; rolled back/);

    const json = await runController(s.cluster.controllerConfig, ["status", id, "--json"]);
    expect(JSON.parse(json.stdout)[0]).toMatchObject({ state: "rolled-back", failures: [{ host: "hostmaster", step: "master-move-site", detail: ack?.detail }] });
    const text = (await runController(s.cluster.controllerConfig, ["status", id])).stdout.split("\n");
    const failure = text.indexOf("    hostmaster: master-move-site failed: hook updatedb (sh) failed: exit 1: updb line 30");
    expect(failure, text.join("\n")).toBeGreaterThan(0);
    expect(text.slice(failure + 1)).toEqual(tail.map((l) => `      │ ${l}`));
    // the list of every migration: the failure's first line, not its output
    const list = (await runController(s.cluster.controllerConfig, ["status"])).stdout;
    expect(list).toContain("    hostmaster: master-move-site failed: hook updatedb (sh) failed: exit 1: updb line 30");
    expect(list).not.toContain("│");
  });

  it("a hook that prints 10 MB and fails: its file holds at most 1 MiB ending with the real tail, and the controller's memory stays flat", async () => {
    // the output's real last lines, after the megabytes: they must survive the cap
    const loud = await migrateWithUpdatedb("head -c 10485760 /dev/urandom | base64; echo 'the end 1'; echo 'the end 2'; exit 1", { QM_LOG_LEVEL: "info" });
    expect(loud.exitCode).toBe(1);
    await expectUnchanged(loud.s);
    const loudRss = maxRssKb(loud.stderr);
    // the log says where the output is and how it ended, and does not carry it
    const failedLine = loud.stderr.split("\n").find((l) => l.includes('"msg":"hook failed"'));
    expect(JSON.parse(String(failedLine))).toMatchObject({ hook: "updatedb", outputFile: expect.stringMatching(/\/hooks\/02-updatedb\.log$/), outputTail: expect.arrayContaining(["the end 2"]) });
    expect(loud.stderr.length).toBeLessThan(100_000);
    const file = path.join(loud.s.cluster.masterState, "migrations", loud.id, "hooks", "02-updatedb.log");
    expect(fs.statSync(file).size).toBeLessThanOrEqual(MIB);
    const kept = fs.readFileSync(file, "utf8");
    expect(kept).toMatch(/^\[… [\d,]+ earlier bytes cut …\]\n/);
    expect(kept.endsWith("\nthe end 1\nthe end 2\n")).toBe(true);
    const ack = loud.events.find((e) => e.event === "ack" && e.step === "master-move-site" && e.ok === false);
    expect(String(ack?.detail).split("\n").slice(-2)).toEqual(["the end 1", "the end 2"]);
    // each line of the tail is cut to a sane length (base64 lines are 76 characters: none is cut here)
    for (const line of String(ack?.detail).split("\n")) expect(line.length).toBeLessThanOrEqual(400);
    await loud.s.cleanup();
    scenario = undefined;

    const quiet = await migrateWithUpdatedb("exit 1", { QM_LOG_LEVEL: "info" });
    expect(quiet.exitCode).toBe(1);
    const quietRss = maxRssKb(quiet.stderr);
    // measured on a 2-core test machine: buffered by execa (before the output was streamed) the 10 MB
    // hook cost ~150 MB more than a silent one; streamed, ~30-45 MB, the same for 50 MB of output (what
    // the garbage collector lets pile up between collections, not the output)
    expect(loudRss - quietRss, `maxRssKb: loud hook ${loudRss}, quiet hook ${quietRss}`).toBeLessThan(80_000);
  });
});
