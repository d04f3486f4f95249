// A journal written by quick-migrate 0.1.0 (test/fixtures/journal-0.1.0: a real run killed right after
// master-move-site was acknowledged, before its step-end) still resumes and rolls back on real agents.
// The trees are what that run left: the same cluster shape is run by this controller and killed at the
// same point (0.1.0 already fetched into the staging folder and set the stale site folder aside, as
// this one does; only its plan's texts said otherwise). Then the journal's plan and events are replaced
// by the fixture's, its migration id (and the temp folder in its texts) made this run's; the ledger and
// the dump, which the fixture does not hold, are the files 0.1.0 wrote under the same names.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged } from "../helpers/scenario.js";
import { crashedScenario } from "./crash.helpers.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/journal-0.1.0", import.meta.url));
const FIXTURE_ID = "20261126T023027Z-eb32c0";
/** the temp folder of the run that wrote the fixture (in acknowledgement texts only) */
const FIXTURE_BASE = "/tmp/qm-test-AbdDZS";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** The cluster as the killed 0.1.0 run left it, with its journal. */
async function killed010(): Promise<{ s: Scenario; id: string; journaled: string }> {
  const { s, id } = await crashedScenario("kill-after-ack:master-move-site:hostmaster");
  scenario = s;
  const dir = path.join(s.cluster.masterState, "migrations", id);
  const own = (file: string) => fs.readFileSync(path.join(FIXTURE, file), "utf8").split(FIXTURE_ID).join(id).split(FIXTURE_BASE).join(s.baseDir);
  // the run stopped where the fixture's did: its events end with master-move-site's ack
  const ours = fs.readFileSync(path.join(dir, "events.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  const theirs = own("events.jsonl").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(ours.at(-1)).toMatchObject({ event: "ack", step: "master-move-site" });
  expect(theirs.at(-1)).toMatchObject({ event: "ack", step: "master-move-site" });
  // and it journaled what 0.1.0 did, but for the hook process groups it journals since (and the order the fronts answered in)
  const shape = (events: Array<Record<string, unknown>>) =>
    events.filter((e) => e.event !== "hook-started" && e.event !== "hook-ended").map((e) => [e.event, e.step, e.host, e.action, e.ok].filter((x) => x !== undefined).join(" ")).sort();
  expect(shape(ours)).toEqual(shape(theirs));
  for (const file of ["plan.json", "events.jsonl"]) fs.writeFileSync(path.join(dir, file), own(file));
  // 0.1.0 kept no hook output: the files this run's hooks wrote go, as its events of them did
  fs.rmSync(path.join(dir, "hooks"), { recursive: true, force: true });
  expect(fs.readdirSync(dir).sort(), "0.1.0's journal folder: its ledger and dump under the same names").toEqual(["db-dump.sql", "events.jsonl", "master-ledger.json", "plan.json"]);
  return { s, id, journaled: own("events.jsonl") };
}

/** The run went on from 0.1.0's journal: its lines are kept as they were, the run's own appended after them. */
function expectAppendedTo(s: Scenario, id: string, journaled: string): void {
  const now = fs.readFileSync(path.join(s.cluster.masterState, "migrations", id, "events.jsonl"), "utf8");
  expect(now.startsWith(journaled), "0.1.0's events kept as they were").toBe(true);
  expect(now.length).toBeGreaterThan(journaled.length);
}

const locks = (s: Scenario) => fs.readdirSync(path.join(s.cluster.masterState, "locks"));

describe("a journal written by 0.1.0, on the trees its killed run left", () => {
  it("rolls back: every tree byte for byte as before, no lock left", async () => {
    const { s, id, journaled } = await killed010();
    const run = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ event: "result", migrationId: id, outcome: "rolled-back", exitCode: 0 });
    // the fetch's staging folder is undone too, though 0.1.0's plan said fetch-site had no undo
    expect(run.events.filter((e) => e.event === "step-start" && e.undo).map((e) => e.step)).toEqual([
      "master-move-site",
      "fetch-site",
      "fronts-park-data",
      "master-park-data",
      "maintenance-on",
      "lock",
    ]);
    expectAppendedTo(s, id, journaled);
    await expectUnchanged(s);
    expect(locks(s), "no lock left").toEqual([]);
  });

  it("resumes: migrated, every tree byte for byte as a migration leaves it, no lock left", async () => {
    const { s, id, journaled } = await killed010();
    const run = await runController(s.cluster.controllerConfig, ["resume", id, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ event: "result", migrationId: id, outcome: "migrated", exitCode: 0 });
    expectAppendedTo(s, id, journaled);
    await expectMigrated(s);
    expect(locks(s), "no lock left").toEqual([]);
  });
});
