// Two recovery commands started at once on one interrupted migration: exactly one takes over its lock
// and runs; the other exits 4 (locked) and writes nothing to the journal. The winner's own end is as
// if it had been alone: migrated or rolled back, trees byte for byte, no lock left.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerRun, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged } from "../helpers/scenario.js";
import { crashedScenario } from "./crash.helpers.js";

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

function journalLines(s: Scenario, id: string): Array<{ event: string; outcome?: string }> {
  const text = fs.readFileSync(path.join(s.cluster.masterState, "migrations", id, "events.jsonl"), "utf8");
  return text.trim().split("\n").map((l) => JSON.parse(l) as { event: string; outcome?: string });
}

describe("resume and rollback started at once", () => {
  it.each([
    ["resume", "rollback"],
    ["rollback", "rollback"],
    ["resume", "resume"],
  ] as const)("%s and %s: exactly one runs, the other exits 4", async (first, second) => {
    const { s, id } = await crashedScenario("kill-before:fetch-site");
    scenario = s;
    // both resume and rollback run maintenanceOff: slowed down, so that the two commands overlap for sure
    s.cluster.writeControllerConfig({ hooks: { ...fakeDrushHooks(), maintenanceOff: [process.execPath, "-e", "setTimeout(() => {}, 1500)"] } });
    const linesBefore = journalLines(s, id).length;

    const runs = await Promise.all([first, second].map((cmd) => runController(s.cluster.controllerConfig, [cmd, id, "--json"])));
    const codes = runs.map((r) => r.exitCode).sort();
    expect(codes, runs.map((r) => r.stdout + r.stderr).join("\n----\n")).toEqual([0, 4]);
    const winner = runs.find((r) => r.exitCode === 0) as ControllerRun;
    const loser = runs.find((r) => r.exitCode === 4) as ControllerRun;
    const winnerKind = [first, second][runs.indexOf(winner)];

    // the loser did nothing: one result line, locked, naming the migration
    expect(loser.events).toEqual([expect.objectContaining({ event: "result", migrationId: id, outcome: "locked", exitCode: 4, code: "LOCKED" })]);
    // the journal holds the winner's run only: one plan event, one result, after the crashed run's lines
    const added = journalLines(s, id).slice(linesBefore);
    expect(added.filter((e) => e.event === "plan")).toHaveLength(1);
    expect(added.filter((e) => e.event === "result").map((e) => e.outcome)).toEqual([winnerKind === "resume" ? "migrated" : "rolled-back"]);

    if (winnerKind === "resume") await expectMigrated(s);
    else await expectUnchanged(s);
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no lock, no takeover marker left").toEqual([]);
  });
});
