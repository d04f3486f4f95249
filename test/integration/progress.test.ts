// Live progress (issue 10 item 8) with real agents and real rsync: a site with a large file in its
// code makes fetch-site and push-site take a few seconds. With --json, progress events at most once a
// second with growing bytes, consistent with the acks, none after their step's end; on a terminal (a
// pseudo-terminal, through util-linux `script`) a live line rewritten in place; to a pipe, none of it.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerEvent, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { excludePaths, manifest } from "../../scripts/lib/manifest.js";
import { type Scenario, expectMigrated, setupScenario, siteDir } from "../helpers/scenario.js";

const MB = 1024 * 1024;
const CONTROLLER_BIN = path.join(repoRoot(), "bin", "quick-migrate");

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

/** Two fronts; web1's site code holds a large random file (outside the data dirs), so the rsync steps take a while. */
async function bigSite(bytes: number): Promise<Scenario> {
  const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
  const dir = siteDir(s.cluster.frontRoot("web1"), s.from, s.site);
  const fd = fs.openSync(path.join(dir, "libraries", "big.bin"), "w", 0o644);
  try {
    for (let done = 0; done < bytes; done += MB) fs.writeSync(fd, randomBytes(Math.min(MB, bytes - done)));
  } finally {
    fs.closeSync(fd);
  }
  s.codeBefore.set("web1", excludePaths(await manifest(dir), ["files", "private/files"]));
  return s;
}

interface Progress {
  step: string;
  undo?: true;
  elapsedMs: number;
  hosts: Array<{ host: string; state: string; bytesSent?: number; bytesReceived?: number; bytesPerSecond?: number }>;
}

const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

describe("live progress", () => {
  it("--json: progress events for the rsync steps with growing bytes, at most once a second, none after the step's end", async () => {
    const s = await bigSite(128 * MB);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);

    // in the order printed: each progress event is of the step in flight, and says of each host what its acks said
    let inFlight: { step: string; undo: boolean; acked: Map<string, boolean> } | undefined;
    const byStep = new Map<string, Progress[]>();
    for (const e of run.events as ControllerEvent[]) {
      if (e.event === "step-start") inFlight = { step: String(e.step), undo: e.undo === true, acked: new Map() };
      else if (e.event === "ack") inFlight?.acked.set(String(e.host), e.ok === true);
      else if (e.event === "step-end") inFlight = undefined;
      else if (e.event === "progress") {
        const p = e as unknown as Progress;
        expect(inFlight, `progress of ${p.step} outside its step`).toBeDefined();
        expect(p.step).toBe(inFlight?.step);
        expect(p.undo === true).toBe(inFlight?.undo);
        for (const h of p.hosts) {
          const acked = inFlight?.acked.get(h.host);
          expect(h.state, `${p.step} ${h.host}`).toBe(acked === undefined ? "running" : acked ? "ok" : "failed");
        }
        byStep.set(p.step, [...(byStep.get(p.step) ?? []), p]);
      }
    }

    const ends = new Map(run.events.filter((e) => e.event === "step-end").map((e) => [String(e.step), Number(e.durationMs)]));
    for (const [step, progress] of byStep) {
      // at most once a second: the first a second in, each a second after the one before
      expect(progress.length, step).toBeLessThanOrEqual(Math.floor((ends.get(step) ?? 0) / 1000));
      for (const [i, p] of progress.entries()) expect(p.elapsedMs - (progress[i - 1]?.elapsedMs ?? 0), `${step} #${i}`).toBeGreaterThanOrEqual(950);
    }

    // the rsync steps: bytes that grow, a positive rate while running; the other steps carry no bytes
    for (const [step, direction] of [
      ["fetch-site", "bytesReceived"],
      ["push-site", "bytesSent"],
    ] as const) {
      const progress = byStep.get(step) ?? [];
      expect(progress.length, `${step} took ${ends.get(step)} ms and showed no progress`).toBeGreaterThan(0);
      const hosts = step === "fetch-site" ? ["web1"] : ["web1", "web2"];
      for (const p of progress) expect(p.hosts.map((h) => h.host)).toEqual(hosts);
      const seen = progress.flatMap((p) => p.hosts).filter((h) => h[direction] !== undefined);
      expect(seen.some((h) => (h[direction] ?? 0) > MB && (h.bytesPerSecond ?? 0) > 0 && h.state === "running"), JSON.stringify(progress)).toBe(true);
      for (const host of hosts) {
        const figures = progress.map((p) => p.hosts.find((h) => h.host === host)?.[direction]).filter((n) => n !== undefined);
        expect(figures, `${step} ${host}`).toEqual([...figures].sort((a, b) => a - b));
        expect(Math.max(0, ...figures)).toBeLessThanOrEqual(129 * MB);
      }
      for (const h of progress.flatMap((p) => p.hosts)) if (h.state !== "running") expect(h.bytesPerSecond).toBeUndefined();
    }
    for (const step of ["preflight", "lock", "fronts-park-data"]) {
      for (const p of byStep.get(step) ?? []) for (const h of p.hosts) expect(h.bytesSent).toBeUndefined();
    }

    // not journaled: a later run has nothing to do with how fast this one went
    const journal = fs.readFileSync(path.join(s.cluster.masterState, "migrations", String(run.events[0]?.migrationId), "events.jsonl"), "utf8");
    expect(journal).not.toContain('"progress"');
  });

  it("on a terminal: a live line rewritten in place, then the usual result line", async () => {
    const s = await bigSite(128 * MB);
    const command = [CONTROLLER_BIN, "migrate", s.site, "--to", s.to, "--config", s.cluster.controllerConfig].map(shellQuote).join(" ");
    const run = await execa("script", ["-qfec", command, "/dev/null"], { reject: false, stdin: "ignore", env: { QM_LOG_LEVEL: "warn" }, timeout: 120_000 });
    const out = String(run.stdout);
    expect(run.exitCode, out + run.stderr).toBe(0);
    await expectMigrated(s);
    // the live line of push-site, with a byte figure, written over with \r and erased
    expect(out).toMatch(/\r\x1b\[K {2}… push-site +web1 […✔] \d+(\.\d)? (B|kB|MB|GB)/);
    // cleared before the step's own line
    expect(out).toMatch(/\r\x1b\[K {2}\S*✔\S* push-site +web1 .*✔.*web2 .*✔.*\(2\/2\)/);
    expect(out).toMatch(/✔\S* migrated: .*\(\d+\.\d\d s\)\r?\n/);
    // every live line was erased: none is left on the line the result follows
    expect(out).not.toMatch(/… [^\r\n]*\r?\n/);
  });

  it("to a pipe: plain lines, no live line", async () => {
    const s = await bigSite(128 * MB);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to], { controllerBin: CONTROLLER_BIN });
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    expect(run.stdout).toMatch(/^ {2}✔ push-site +web1 ✔ {2}web2 ✔ {2}\(2\/2\) {2}\d+ ms$/m);
    expect(run.stdout).not.toContain("\r");
    expect(run.stdout).not.toContain("\x1b");
    expect(run.stdout).not.toContain("…");
    expect(run.stdout).not.toMatch(/\d (kB|MB|GB)\b/);
    expect(run.stdout).toMatch(/\n✔ migrated: .*\(\d+\.\d\d s\)\n/);
  });
});
