// migrate --all without I/O: which folders are sites, the batch's exit code and outcome from its sites',
// the usage rules, the live summary line and the final table.
import { describe, expect, it } from "vitest";
import {
  BatchProgress,
  NOT_STARTED,
  type SiteResult,
  batchExitCode,
  batchMessage,
  batchOutcome,
  formatTable,
  migrateUsageProblem,
  parseConcurrency,
  selectSites,
  siteExitCode,
} from "../../controller/batch.js";
import type { Outcome } from "../../controller/events.js";

const result = (site: string, outcome: Outcome | typeof NOT_STARTED, durationMs = 1234): SiteResult => ({
  site,
  outcome,
  migrationId: outcome === NOT_STARTED ? null : `20261126T080000Z-${site.slice(0, 1).repeat(6)}`,
  exitCode: siteExitCode(outcome),
  durationMs,
  message: "",
});

describe("selectSites", () => {
  it("keeps every site folder, sorted; leaves out all, default, files; lists symlinks and bad names as skipped", () => {
    const { sites, skipped } = selectSites([
      { name: "b.example.com", kind: "dir" },
      { name: "all", kind: "dir" },
      { name: "default", kind: "dir" },
      { name: "sites.php", kind: "file" },
      { name: "example.sites.php", kind: "file" },
      { name: "a.example.com", kind: "dir" },
      { name: "alias.example.com", kind: "symlink" },
      { name: "under_score", kind: "dir" },
      { name: ".hidden", kind: "dir" },
      { name: "fifo", kind: "other" },
      { name: "localhost", kind: "dir" },
    ]);
    expect(sites).toEqual(["a.example.com", "b.example.com", "localhost"]);
    expect(skipped.map((k) => k.name)).toEqual([".hidden", "alias.example.com", "under_score"]);
    expect(skipped.find((k) => k.name === "alias.example.com")?.why).toMatch(/symlink/);
    expect(skipped.find((k) => k.name === "under_score")?.why).toMatch(/invalid site folder "under_score"/);
  });

  it("an empty sites folder: no sites", () => {
    expect(selectSites([{ name: "all", kind: "dir" }, { name: "default", kind: "dir" }])).toEqual({ sites: [], skipped: [] });
  });
});

describe("exit code and outcome of a batch", () => {
  it("0 only when every site migrated (or was planned); else the highest of the sites' codes", () => {
    expect(batchExitCode([])).toBe(0);
    expect(batchExitCode([result("a", "migrated"), result("b", "migrated")])).toBe(0);
    expect(batchExitCode([result("a", "dry-run"), result("b", "dry-run")])).toBe(0);
    expect(batchExitCode([result("a", "migrated"), result("b", "rolled-back")])).toBe(1);
    expect(batchExitCode([result("a", "refused"), result("b", "rolled-back"), result("c", "migrated")])).toBe(2);
    expect(batchExitCode([result("a", "needs-attention"), result("b", "locked")])).toBe(4);
    expect(batchExitCode([result("a", "rolled-back"), result("b", NOT_STARTED)])).toBe(1);
  });

  it("a site not started counts as 1: nothing was done to it, as after a rollback", () => {
    expect(siteExitCode(NOT_STARTED)).toBe(1);
    expect(siteExitCode("needs-attention")).toBe(3);
  });

  it("migrated, dry-run, failed, interrupted", () => {
    const ok = [result("a", "migrated")];
    const bad = [result("a", "migrated"), result("b", "rolled-back")];
    expect(batchOutcome(ok, { dryRun: false, interrupted: false })).toBe("migrated");
    expect(batchOutcome([result("a", "dry-run")], { dryRun: true, interrupted: false })).toBe("dry-run");
    expect(batchOutcome(bad, { dryRun: false, interrupted: false })).toBe("failed");
    expect(batchOutcome(bad, { dryRun: false, interrupted: true })).toBe("interrupted");
    // a signal after the last site ended changed nothing
    expect(batchOutcome(ok, { dryRun: false, interrupted: true })).toBe("migrated");
  });

  it("the closing message counts each outcome", () => {
    const list = [result("a", "migrated"), result("b", "rolled-back"), result("c", "migrated"), result("d", NOT_STARTED)];
    expect(batchMessage(list, { from: "d7-98", to: "d7-99" })).toBe("4 sites of d7-98 → d7-99: 2 migrated, 1 rolled-back, 1 not-started");
    expect(batchMessage(list, { from: "d7-98", to: "d7-99", interrupted: "SIGINT" })).toMatch(/\(interrupted by SIGINT: no new site was started\)$/);
    expect(batchMessage([], { from: "p", to: "q" })).toBe("0 sites of p → q: no sites");
  });
});

describe("usage", () => {
  it("--all and a site, --all without --from, --all with --new-uri, --concurrency without --all, neither", () => {
    expect(migrateUsageProblem("a.example.com", {})).toBeUndefined();
    expect(migrateUsageProblem(undefined, { all: true, from: "p" })).toBeUndefined();
    expect(migrateUsageProblem(undefined, { all: true, from: "p", concurrency: 8 })).toBeUndefined();
    expect(migrateUsageProblem("a.example.com", { all: true, from: "p" })).toMatch(/^--all and a site \(a\.example\.com\) are mutually exclusive/);
    expect(migrateUsageProblem(undefined, { all: true })).toMatch(/^--all needs --from/);
    expect(migrateUsageProblem(undefined, { all: true, from: "p", newUri: "x.example.com" })).toMatch(/^--new-uri cannot be used with --all/);
    expect(migrateUsageProblem("a.example.com", { concurrency: 2 })).toMatch(/^--concurrency applies to --all only/);
    expect(migrateUsageProblem(undefined, {})).toMatch(/^missing required argument 'uri'/);
  });

  it("--concurrency is a whole number from 1", () => {
    expect(parseConcurrency("1")).toBe(1);
    expect(parseConcurrency("16")).toBe(16);
    for (const bad of ["0", "-1", "1.5", "x", "", " 2", "1e3"]) expect(() => parseConcurrency(bad), bad).toThrow(/whole number/);
  });
});

describe("the live summary and the table", () => {
  it("counts done, failed, running and waiting, names the slowest step so far, and what each running site is at", () => {
    const p = new BatchProgress(4, false);
    expect(p.line()).toBe("sites 0/4: 0 migrated, 0 failed, 0 running, 4 waiting");
    p.started("a.example.com");
    p.started("b.example.com");
    p.observe("a.example.com", { event: "step-start", migrationId: "m1", step: "push-site" });
    p.observe("b.example.com", { event: "step-start", migrationId: "m2", step: "fetch-site" });
    p.observe("b.example.com", { event: "step-end", migrationId: "m2", step: "fetch-site", ok: true, acked: 1, expected: 1, durationMs: 2100 });
    p.observe("a.example.com", { event: "step-end", migrationId: "m1", step: "lock", ok: true, acked: 1, expected: 1, durationMs: 300 });
    // a skipped step took no time worth naming
    p.observe("a.example.com", { event: "step-end", migrationId: "m1", step: "fetch-site", ok: true, acked: 0, expected: 0, skipped: "local", durationMs: 9999 });
    p.observe("b.example.com", { event: "step-start", migrationId: "m2", step: "master-move-site", undo: true });
    expect(p.line()).toBe(
      "sites 0/4: 0 migrated, 0 failed, 2 running, 2 waiting; slowest step: fetch-site 2.1 s (b.example.com); running: a.example.com push-site, b.example.com undo master-move-site",
    );
    p.ended(result("a.example.com", "migrated"));
    p.ended(result("b.example.com", "rolled-back"));
    p.started("c.example.com");
    expect(p.line()).toBe("sites 2/4: 1 migrated, 1 failed, 1 running, 1 waiting; slowest step: fetch-site 2.1 s (b.example.com); running: c.example.com");
  });

  it("a dry run counts sites planned", () => {
    const p = new BatchProgress(1, true);
    p.ended(result("a.example.com", "dry-run"));
    expect(p.line()).toBe("sites 1/1: 1 planned, 0 failed, 0 running, 0 waiting");
  });

  it("the final table: site, outcome, migration id, time, in columns", () => {
    expect(formatTable([result("a.example.com", "migrated", 1500), result("bb.example.com", "rolled-back", 12_345), result("c.example.com", NOT_STARTED, 0)])).toEqual([
      "site            outcome      migration                time",
      "a.example.com   migrated     20261126T080000Z-aaaaaa  1.50 s",
      "bb.example.com  rolled-back  20261126T080000Z-bbbbbb  12.35 s",
      "c.example.com   not-started  -                        0.00 s",
    ]);
  });
});
