// `migrate --all`: every site of a platform on a real local cluster (agent processes, real rsync, real
// trees), each its own migration; a site that fails, a busy agent, a dry run, a signal, usage errors.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ControllerEvent, fakeDrushHooks, runController } from "../../scripts/lib/cluster.js";
import { type Manifest, diffManifests, manifest, manifestOrAbsent, summarizeDiff } from "../../scripts/lib/manifest.js";
import { type AuditLine, auditLines } from "../helpers/auditLog.js";
import { type Scenario, expectMigrated, expectUnchanged, forSite, setupScenario, siteDir } from "../helpers/scenario.js";

const SITES = ["a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com", "f.example.com"];

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

async function setup(opts: { sites?: string[]; fronts?: Parameters<typeof setupScenario>[0]["fronts"]; hooks?: Record<string, string[]> } = {}): Promise<Scenario> {
  const [first, ...more] = opts.sites ?? SITES;
  scenario = await setupScenario({
    fronts: opts.fronts ?? [{ name: "web1" }, { name: "web2" }],
    site: first as string,
    moreSites: more,
    symlinkFiles: ["web2"],
    files: 40,
    ...(opts.hooks ? { hooks: opts.hooks } : {}),
  });
  return scenario;
}

interface Summary {
  event: "batch-result";
  site: null;
  outcome: string;
  exitCode: number;
  sites: Array<{ site: string; outcome: string; migrationId: string | null; exitCode: number; durationMs: number; message: string }>;
}

function summaryOf(events: ControllerEvent[]): Summary {
  const last = events.at(-1);
  expect(last?.event).toBe("batch-result");
  return last as unknown as Summary;
}

/** Every event names its site: a site's own, or null for the batch's first and last. */
function expectSiteOnEvery(events: ControllerEvent[], sites: readonly string[]): void {
  expect(events.length).toBeGreaterThan(sites.length * 5);
  for (const e of events) {
    expect(Object.hasOwn(e, "site"), JSON.stringify(e)).toBe(true);
    if (e.event === "batch" || e.event === "batch-result") expect(e.site).toBeNull();
    else expect(sites, JSON.stringify(e)).toContain(e.site);
  }
  // and a site's events are its migration's
  for (const site of sites) {
    const ids = new Set(events.filter((e) => e.site === site && e.migrationId !== null).map((e) => e.migrationId));
    expect(ids.size, site).toBe(1);
  }
}

/** The most sites whose migration was under way at once: from its first event to its result. */
function mostAtOnce(events: ControllerEvent[]): number {
  const open = new Set<string>();
  let most = 0;
  for (const e of events) {
    if (typeof e.site !== "string") continue;
    if (e.event === "result") open.delete(e.site);
    else open.add(e.site);
    most = Math.max(most, open.size);
  }
  return most;
}

/** Each root's copy of one site's old folder, before: to show afterwards that it is as it was. */
async function siteTrees(s: Scenario, site: string, platform: string): Promise<Map<string, Manifest | null>> {
  const out = new Map<string, Manifest | null>();
  for (const { name, root } of s.cluster.roots()) out.set(name, await manifestOrAbsent(siteDir(root, platform, site)));
  return out;
}

async function expectSiteUnchanged(s: Scenario, site: string, before: Map<string, Manifest | null>): Promise<void> {
  for (const { name, root } of s.cluster.roots()) {
    const was = before.get(name);
    expect(was, `${name}: ${site} existed before`).toBeTruthy();
    const now = await manifest(siteDir(root, s.from, site));
    const diff = diffManifests(was as Manifest, now);
    expect(diff, `${name}: ${site} changed:\n${summarizeDiff(diff)}`).toEqual([]);
    expect(fs.existsSync(siteDir(root, s.to, site)), `${name}: ${site} must not be on ${s.to}`).toBe(false);
  }
}

function refusals(lines: AuditLine[], code: string): AuditLine[] {
  return lines.filter((l) => l.msg === "refused" && l.code === code);
}

describe("quick-migrate migrate --all", () => {
  it("migrates 6 sites over 2 fronts, 2 at a time, each its own migration, on one connection per front", async () => {
    const s = await setup();
    // not sites: an alias symlink Aegir makes, a file, a folder whose name is not a site name
    const sites = path.join(s.cluster.masterRoot, s.from, "sites");
    fs.symlinkSync("a.example.com", path.join(sites, "alias.example.com"));
    fs.writeFileSync(path.join(sites, "sites.php"), "<?php\n");
    fs.mkdirSync(path.join(sites, "not_a_site"));
    const each = await Promise.all(SITES.map((site) => forSite(s, site)));

    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--concurrency", "2", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);

    expect(run.events[0]).toMatchObject({ event: "batch", site: null, from: s.from, to: s.to, sites: SITES, concurrency: 2, dryRun: false });
    expect((run.events[0]?.skipped as Array<{ name: string }>).map((k) => k.name)).toEqual(["alias.example.com", "not_a_site"]);
    expectSiteOnEvery(run.events, SITES);
    expect(mostAtOnce(run.events)).toBe(2);

    const summary = summaryOf(run.events);
    expect(summary).toMatchObject({ outcome: "migrated", exitCode: 0 });
    expect(summary.sites.map((r) => [r.site, r.outcome, r.exitCode])).toEqual(SITES.map((site) => [site, "migrated", 0]));
    for (const r of summary.sites) {
      expect(r.migrationId).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
      expect(r.durationMs).toBeGreaterThan(0);
      // the site's own result event says the same
      expect(run.events.find((e) => e.event === "result" && e.site === r.site)).toMatchObject({ migrationId: r.migrationId, outcome: "migrated" });
    }
    expect(new Set(summary.sites.map((r) => r.migrationId)).size).toBe(SITES.length);

    // every host's trees: each site's code and data on the new platform, nothing left on the old
    for (const one of each) await expectMigrated(one);
    // each site its own journal
    const status = await runController(s.cluster.controllerConfig, ["status", "--json"]);
    const list = JSON.parse(status.stdout) as Array<{ id: string; site: string; state: string }>;
    expect(list.map((m) => [m.site, m.state]).sort()).toEqual(SITES.map((site) => [site, "migrated"]));
    expect(list.map((m) => m.id).sort()).toEqual(summary.sites.map((r) => r.migrationId).sort());
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks"))).toEqual([]);

    // one channel per front for the whole batch: every call of every migration came over one connection
    for (const f of s.cluster.fronts) {
      const calls = auditLines(f.logFile).filter((l) => l.msg === "operation" && summary.sites.some((r) => r.migrationId === l.migrationId));
      expect(calls.length, f.name).toBeGreaterThanOrEqual(SITES.length * 5);
      expect(new Set(calls.map((l) => l.peer)).size, `${f.name}: connections used`).toBe(1);
    }
  });

  it("a site that fails is rolled back, the others migrate, and the exit code is that site's", async () => {
    const h = fakeDrushHooks();
    // updatedb fails for c.example.com only, after its data was parked and its folder moved
    const s = await setup({ hooks: { ...h, updatedb: [...(h.updatedb ?? []), "--tag={site}"] } });
    const failing = "c.example.com";
    const each = await Promise.all(SITES.filter((x) => x !== failing).map((site) => forSite(s, site)));
    const before = await siteTrees(s, failing, s.from);

    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--json"], {
      env: { QM_FAKE_DRUSH_FAIL: `--tag=${failing}` },
    });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    expectSiteOnEvery(run.events, SITES);
    const summary = summaryOf(run.events);
    expect(summary).toMatchObject({ outcome: "failed", exitCode: 1 });
    expect(summary.sites.map((r) => [r.site, r.outcome, r.exitCode])).toEqual(SITES.map((site) => (site === failing ? [site, "rolled-back", 1] : [site, "migrated", 0])));
    const failed = summary.sites.find((r) => r.site === failing);
    expect(failed?.message).toMatch(/^master-move-site failed on hostmaster: hook updatedb .*; rolled back/);
    // it had got that far: the rollback put back data that had been moved
    expect(run.events.some((e) => e.site === failing && e.event === "ack" && e.step === "fronts-park-data" && e.undo === true && e.ok === true)).toBe(true);

    for (const one of each) await expectMigrated(one);
    await expectSiteUnchanged(s, failing, before);
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks"))).toEqual([]);
  });

  it("an agent with maxConcurrentOps 1 and 4 sites at once: its BUSY answers are waited out, every site migrates", async () => {
    const sites = SITES.slice(0, 4);
    const s = await setup({ sites, fronts: [{ name: "web1" }, { name: "web2", agentConfig: { maxConcurrentOps: 1 } }] });
    const each = await Promise.all(sites.map((site) => forSite(s, site)));
    const since = auditLines(s.cluster.front("web2").logFile).length;

    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--concurrency", "4", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(summaryOf(run.events).sites.map((r) => r.outcome)).toEqual(sites.map(() => "migrated"));
    // no host's step failed along the way: BUSY was never a failure
    expect(run.events.filter((e) => e.event === "ack" && e.ok === false)).toEqual([]);
    for (const one of each) await expectMigrated(one);

    // the agent did turn calls away (or this test would prove nothing), unary calls and rsync streams alike
    const busy = refusals(auditLines(s.cluster.front("web2").logFile).slice(since), "BUSY");
    expect(busy.length, "BUSY refusals on web2").toBeGreaterThan(0);
    expect(refusals(auditLines(s.cluster.front("web1").logFile), "BUSY")).toEqual([]);
  });

  it("--dry-run plans every site and changes nothing", async () => {
    const s = await setup({ sites: SITES.slice(0, 3) });
    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--dry-run", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expectSiteOnEvery(run.events, SITES.slice(0, 3));
    for (const site of SITES.slice(0, 3)) {
      const plan = run.events.find((e) => e.event === "plan" && e.site === site);
      expect(plan, site).toMatchObject({ dryRun: true, from: s.from, to: s.to });
      expect((plan?.steps as unknown[]).length).toBe(13);
    }
    expect(summaryOf(run.events)).toMatchObject({ outcome: "dry-run", exitCode: 0 });
    expect(summaryOf(run.events).sites.map((r) => r.outcome)).toEqual(["dry-run", "dry-run", "dry-run"]);
    await expectUnchanged(s);
    expect(fs.existsSync(path.join(s.cluster.masterState, "migrations")), "no journal").toBe(false);

    // for humans: each site's plan, and the table
    const human = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--dry-run"]);
    expect(human.exitCode, human.stdout + human.stderr).toBe(0);
    for (const site of SITES.slice(0, 3)) {
      expect(human.stdout).toContain(`quick-migrate ${site}: ${s.from} → ${s.to}`);
      expect(human.stdout).toMatch(new RegExp(`^  ${site.replace(/\./g, "\\.")} +dry-run +\\S+ +\\d+\\.\\d\\d s$`, "m"));
    }
    expect(human.stdout).toContain("does: ");
    await expectUnchanged(s);
  });

  it("SIGTERM during the batch: the running sites roll back, no other starts, and those are reported not started", async () => {
    const sites = SITES.slice(0, 4);
    const s = await setup({ sites, hooks: fakeDrushHooks() });
    let out = "";
    let sent = false;
    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", s.to, "--concurrency", "2", "--json"], {
      env: { QM_FAKE_DRUSH_HANG: "updatedb" },
      // once both running sites are in master-move-site (its updatedb hangs), stop the controller
      onSpawn: (child) => {
        child.stdout?.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          const moving = out.match(/"event":"step-start","migrationId":"[^"]+","step":"master-move-site"/g) ?? [];
          if (moving.length >= 2 && !sent) {
            sent = true;
            setTimeout(() => child.kill("SIGTERM"), 500);
          }
        });
      },
    });
    expect(run.exitCode, run.stdout + run.stderr).toBe(1);
    const summary = summaryOf(run.events);
    expect(summary.outcome).toBe("interrupted");
    expect(summary.sites.map((r) => [r.site, r.outcome])).toEqual([
      [sites[0], "rolled-back"],
      [sites[1], "rolled-back"],
      [sites[2], "not-started"],
      [sites[3], "not-started"],
    ]);
    for (const r of summary.sites.slice(0, 2)) expect(r.message).toMatch(/interrupted by SIGTERM.*rolled back/);
    for (const r of summary.sites.slice(2)) expect(r).toMatchObject({ migrationId: null, exitCode: 1 });
    // the sites not started never had an event but their result
    for (const site of sites.slice(2)) expect(run.events.filter((e) => e.site === site).map((e) => e.event)).toEqual(["result"]);
    await expectUnchanged(s);
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks"))).toEqual([]);
  });
});

describe("quick-migrate migrate --all: usage", () => {
  const cases: Array<[string, string[], RegExp]> = [
    ["a site and --all", ["migrate", "shop.example.com", "--all", "--from", "p1", "--to", "p2"], /--all/],
    ["--all without --from", ["migrate", "--all", "--to", "p2"], /--all needs --from/],
    ["--all with --new-uri", ["migrate", "--all", "--from", "p1", "--to", "p2", "--new-uri", "x.example.com"], /--new-uri/],
    ["--concurrency 0", ["migrate", "--all", "--from", "p1", "--to", "p2", "--concurrency", "0"], /--concurrency/],
    ["--concurrency without --all", ["migrate", "shop.example.com", "--to", "p2", "--concurrency", "2"], /--concurrency/],
    ["neither a site nor --all", ["migrate", "--to", "p2"], /uri/],
  ];
  it.each(cases)("%s: exit 2, one line naming the option, then the usage line", async (_what, args, names) => {
    const run = await runController("/nonexistent/controller.yaml", args);
    expect(run.exitCode).toBe(2);
    expect(run.stdout).toBe("");
    const lines = run.stderr.trimEnd().split("\n");
    expect(lines, run.stderr).toHaveLength(2);
    expect(lines[0]).toMatch(/^quick-migrate migrate: /);
    expect(lines[0]).toMatch(names);
    expect(lines[1]).toBe("usage: quick-migrate migrate [options] [uri]  (quick-migrate migrate --help for examples)");
  });

  it("with --json, the refusal is a result event too", async () => {
    const run = await runController("/nonexistent/controller.yaml", ["migrate", "--all", "--to", "p2", "--json"]);
    expect(run.exitCode).toBe(2);
    expect(run.events).toEqual([expect.objectContaining({ event: "result", outcome: "refused", exitCode: 2, code: "USAGE" })]);
  });

  it("a platform without a sites folder, or --to the same as --from: the batch is refused, exit 2, nothing changed", async () => {
    const s = await setup({ sites: SITES.slice(0, 1) });
    const run = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", "no-such-platform", "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(run.events).toEqual([expect.objectContaining({ event: "batch-result", site: null, outcome: "refused", exitCode: 2, sites: [] })]);
    expect(String(run.events[0]?.message)).toContain("no-such-platform");
    const same = await runController(s.cluster.controllerConfig, ["migrate", "--all", "--from", s.from, "--to", `${s.from}/`, "--json"]);
    expect(same.exitCode, same.stdout + same.stderr).toBe(2);
    expect(same.events).toEqual([expect.objectContaining({ event: "batch-result", outcome: "refused", code: "USAGE", message: expect.stringContaining("the same platform") })]);
    await expectUnchanged(s);
  });
});
