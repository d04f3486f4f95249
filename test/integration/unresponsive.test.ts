// A front that stops answering costs a bounded time: its agent frozen (SIGSTOP) or its link cut (the
// front in a network namespace, its end of the veth taken down) — no FIN, no RST. The controller gives up on it within
// timeouts.unresponsive (3 s here), the usual failure policy follows, a rollback that cannot reach it
// gives up within the same bound (exit 3 naming the front), and once it is back `rollback` or `resume`
// finishes. A front that is slow but still moving data is not cut off.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerRun, runController } from "../../scripts/lib/cluster.js";
import { type TestLink, makeLink, netnsUnavailable } from "../helpers/netns.js";
import { type Scenario, expectMigrated, expectUnchanged, setupScenario } from "../helpers/scenario.js";

const UNRESPONSIVE_S = 3;
/** what one give-up may take beyond the bound: process start, the step's other work, a loaded CI machine */
const SLACK_MS = 3000;

let scenario: Scenario | undefined;
let link: TestLink | undefined;
const cleanups: Array<() => void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  await scenario?.cleanup();
  scenario = undefined;
  link?.remove();
  link = undefined;
});

function stepEnd(run: ControllerRun, step: string, undo: boolean): { durationMs: number; ok: boolean } {
  const e = run.events.find((x) => x.event === "step-end" && x.step === step && (x.undo === true) === undo);
  if (!e) throw new Error(`no ${undo ? "undo " : ""}${step} step-end in:\n${run.stdout}`);
  return e as unknown as { durationMs: number; ok: boolean };
}

/** The front failed the step and its undo, each within the bound; the run ended needs-attention naming it. */
function expectGaveUpOn(run: ControllerRun, front: string, step = "push-site"): string {
  expect(run.exitCode, run.stdout + run.stderr).toBe(3);
  const result = run.events.at(-1) as { outcome: string; message: string; migrationId: string };
  expect(result.outcome).toBe("needs-attention");
  expect(result.message).toMatch(new RegExp(`${step} failed on ${front}: agent unreachable`));
  expect(result.message).toMatch(new RegExp(`undo of ${step} failed on ${front}: agent unreachable`));
  expect(result.message).toContain(`quick-migrate rollback ${result.migrationId}`);
  const forward = stepEnd(run, step, false);
  const undo = stepEnd(run, step, true);
  expect(forward.ok).toBe(false);
  expect(forward.durationMs, `${step} gave up within the bound`).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
  expect(undo.durationMs, "its undo gave up within the bound").toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
  return result.migrationId;
}

function expectNoLock(s: Scenario): void {
  expect(fs.readdirSync(path.join(s.cluster.masterState, "locks")), "no lock left held").toEqual([]);
}

describe("a frozen agent (SIGSTOP)", () => {
  // frozen by a hook: by dbDump, fronts-park-data finds it silent on a connection that was up (the
  // keepalive pings catch it); by updatedb, push-site finds it silent inside the rsync stream
  it.each([
    ["dbDump", "fronts-park-data", "rollback"],
    ["updatedb", "push-site", "rollback"],
    ["updatedb", "push-site", "resume"],
  ] as const)("frozen by the %s hook: %s gives up within the bound, exit 3; thawed, %s finishes", async (hook, step, finish) => {
    const pidFile = path.join(fs.mkdtempSync(path.join("/tmp", "qm-pid-")), "web2.pid");
    cleanups.push(() => fs.rmSync(path.dirname(pidFile), { recursive: true, force: true }));
    // the hook freezes web2's agent: everything after it finds web2 silent
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2" }],
      symlinkFiles: ["web2"],
      // (updatedb needs a dbDump hook; a hook the rollback runs again, like deploy, would freeze it again)
      hooks: { dbDump: ["true"], [hook]: ["sh", "-c", `kill -STOP "$(cat '${pidFile}')"`] },
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
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    const id = expectGaveUpOn(run, "web2", step);

    process.kill(pid, "SIGCONT");
    // the small bound was under test in the first run; the run that finishes uses the defaults
    s.cluster.writeControllerConfig({ extra: {} });
    const again = await runController(s.cluster.controllerConfig, [finish, id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    if (finish === "rollback") await expectUnchanged(s);
    else await expectMigrated(s);
    expectNoLock(s);
  });

  it("frozen before preflight: refused within the bound, nothing changed", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });
    const pid = s.cluster.front("web1").process?.pid as number;
    process.kill(pid, "SIGSTOP");
    cleanups.push(() => process.kill(pid, "SIGCONT"));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(String(run.events.at(-1)?.message)).toMatch(/preflight refused: web1: agent unreachable: no connection within 3 s/);
    expect(run.durationMs).toBeLessThan(UNRESPONSIVE_S * 1000 + SLACK_MS);
    process.kill(pid, "SIGCONT");
    await expectUnchanged(s);
  });
});

const noNetns = netnsUnavailable();

describe.skipIf(noNetns !== undefined)(`a front behind a link that is cut${noNetns ? ` — skipped: ${noNetns}` : ""}`, () => {
  it("the link fails after master-move-site: gives up within the bound, exit 3; mended, rollback finishes", async () => {
    link = makeLink();
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2", netns: { name: link.ns, address: link.address } }],
      tls: true,
      hooks: { dbDump: ["true"], updatedb: link.cut },
    }));
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    const id = expectGaveUpOn(run, "web2");

    const [cmd, ...args] = link.mend;
    execFileSync(cmd as string, args);
    s.cluster.writeControllerConfig({ extra: {} });
    // requests the first run sent while the link was cut may still reach web2 once it is mended (TCP
    // retransmits them): web2 refuses those of run 1 once this rollback (run 2) has been there, so a late
    // push-site cannot put its step order ahead of the undo
    const again = await runController(s.cluster.controllerConfig, ["rollback", id, "--json"]);
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    await expectUnchanged(s);
    expectNoLock(s);
  });

  it("a slow link that still moves data is not unresponsive: a push slower than the bound completes", async () => {
    link = makeLink();
    const l = link;
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2", netns: { name: l.ns, address: l.address } }],
      tls: true,
      // 2 MB of site code at 2 Mbit/s: about 8 s of pushing, well past the 3 s bound
      hooks: { dbDump: ["true"], updatedb: l.slow("2mbit") },
    }));
    // random bytes: rsync may compress, and zeros would cross the link in no time
    const big = randomBytes(2 * 1024 * 1024);
    for (const { root } of s.cluster.roots()) fs.writeFileSync(path.join(root, s.from, "sites", s.site, "big-module.inc"), big);
    // (the fixture's snapshot was taken before: the code check below compares against the fetched front's code)
    s.cluster.writeControllerConfig({ extra: { timeouts: { unresponsive: UNRESPONSIVE_S } } });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(stepEnd(run, "push-site", false).durationMs, "the push took longer than the bound").toBeGreaterThan(UNRESPONSIVE_S * 1000);
    const pushed = path.join(s.cluster.frontRoot("web2"), s.to, "sites", s.site, "big-module.inc");
    expect(fs.readFileSync(pushed).equals(big)).toBe(true);
    expectNoLock(s);
  });
});
