// `npm run bench` as a smoke run: a few sections with --quick (1 run, small sizes, few fronts) write
// their figures as JSON with the machine and the commit, and print the table. Only that the figures
// are there and sane is checked: the targets are the benchmark's to judge, not a test's.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

const BENCH = path.join(repoRoot(), "dist", "scripts", "bench.js");

interface Figure {
  key: string;
  section: string;
  label: string;
  value: number;
  unit: string;
  samples: number[];
  target?: { op: string; value: number };
  pass?: boolean;
}

let results: string;

beforeAll(() => {
  results = fs.mkdtempSync(path.join(os.tmpdir(), "qm-bench-results-"));
});

afterAll(() => {
  fs.rmSync(results, { recursive: true, force: true });
});

describe("npm run bench", () => {
  it("--quick writes the figures of the chosen sections as JSON and prints them as a table", async () => {
    const r = await execa(process.execPath, [BENCH, "--quick", "--only", "fixed,op,footprint,channel,sites", "--results-dir", results], {
      reject: false,
      stdin: "ignore",
      timeout: 115_000,
    });
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    const files = fs.readdirSync(results).filter((f) => f.endsWith(".json"));
    expect(files).toHaveLength(1);
    expect(r.stdout).toContain(`results: ${path.join(results, files[0] as string)}`);
    const report = JSON.parse(fs.readFileSync(path.join(results, files[0] as string), "utf8")) as {
      date: string;
      commit: string;
      machine: { cores: number; memoryMB: number; node: string; cpu: string };
      options: { runs: number; quick: boolean; only: string[]; tls: boolean };
      figures: Figure[];
      sections: Record<string, { figures: Figure[]; error?: string }>;
      targets: { met: number; of: number };
    };

    expect(Number.isNaN(Date.parse(report.date))).toBe(false);
    expect(report.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(report.machine.cores).toBeGreaterThanOrEqual(1);
    expect(report.machine.memoryMB).toBeGreaterThan(100);
    expect(report.machine.node).toBe(process.version);
    // the clusters run with mutual TLS, as deployed, unless --plaintext is asked for
    expect(report.options).toMatchObject({ runs: 1, quick: true, only: ["fixed", "op", "footprint", "channel", "sites"], tls: true });
    expect(r.stdout).toContain("; mutual TLS;");
    expect(Object.keys(report.sections).sort()).toEqual(["channel", "fixed", "footprint", "op", "sites"]);
    for (const s of Object.values(report.sections)) expect(s.error).toBeUndefined();

    const keys = report.figures.map((f) => f.key);
    for (const key of [
      "fixed.status",
      "fixed.migrate2",
      "fixed.fetch2",
      "fixed.push2",
      "op.apply",
      "op.sshMv",
      "footprint.agentRssIdle",
      "footprint.agentRssPeak",
      "footprint.agentStartToServing",
      "footprint.controllerRss",
      "channel.fetchSite",
      "channel.rsyncSsh",
      "channel.fetchOverSsh",
      "channel.pushSite",
    ]) {
      expect(keys, key).toContain(key);
    }

    // migrate --all: 6 sites x 2 fronts at concurrency 1 and 4
    expect(keys).toEqual(expect.arrayContaining(["sites.batch.1", "sites.site.1", "sites.batch.4", "sites.site.4"]));
    expect(report.figures.find((f) => f.key === "sites.site.4")?.samples).toHaveLength(6);

    const byKey = new Map(report.figures.map((f) => [f.key, f]));
    const measured = report.figures.filter((f) => f.samples.length > 0 || f.unit === "x");
    // op.sshMv and the ratios after it have no samples when no sshd could be started
    expect(measured.length).toBeGreaterThanOrEqual(keys.length - 3);
    for (const f of measured) {
      if (!Number.isFinite(f.value)) continue;
      expect(f.value, f.key).toBeGreaterThan(0);
      if (f.unit === "ms") expect(f.value, f.key).toBeLessThan(60_000);
      if (f.unit === "MB") expect(f.value, f.key).toBeLessThan(4096);
      if (f.samples.length > 0) expect(f.value, f.key).toBeGreaterThanOrEqual(Math.min(...f.samples));
      if (f.samples.length > 0) expect(f.value, f.key).toBeLessThanOrEqual(Math.max(...f.samples));
    }
    // a few that cannot be anything else whatever the machine
    expect(byKey.get("op.apply")?.samples).toHaveLength(10);
    expect(byKey.get("footprint.agentRssIdle")?.value).toBeGreaterThan(10);
    expect(byKey.get("footprint.agentRssPeak")?.value).toBeGreaterThanOrEqual(byKey.get("footprint.agentRssIdle")?.value ?? Infinity);
    expect(byKey.get("fixed.migrate2")?.value).toBeGreaterThan(byKey.get("fixed.fetch2")?.value ?? Infinity);

    // targets are reported, met or not, beside their figures
    const withTarget = report.figures.filter((f) => f.target !== undefined);
    expect(withTarget.map((f) => f.key)).toEqual(expect.arrayContaining(["fixed.status", "fixed.migrate2", "op.apply", "footprint.agentRssIdle", "footprint.agentStartToServing"]));
    for (const f of withTarget) expect(typeof f.pass, f.key).toBe("boolean");
    expect(report.targets).toEqual({ met: withTarget.filter((f) => f.pass).length, of: withTarget.length });

    expect(r.stdout).toMatch(/section\s+figure\s+median\s+target/);
    expect(r.stdout).toMatch(/targets met: \d+ of \d+/);
  });

  it("refuses an unknown section before starting anything", async () => {
    const r = await execa(process.execPath, [BENCH, "--only", "fixed,nosuch", "--results-dir", results], { reject: false, stdin: "ignore", timeout: 20_000 });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("unknown section(s): nosuch");
    expect(fs.readdirSync(results).filter((f) => f.includes("nosuch"))).toEqual([]);
  });
});
