// Full migrations on a real local cluster: agent processes on 127.0.0.1, the real rsync through the
// agent channel, real trees with real symlinks; every host's final tree checked file by file.
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { execa } from "execa";
import { fakeDrushHooks, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged, rescan, setupScenario, siteDir } from "../helpers/scenario.js";

const STEPS = [
  "preflight",
  "lock",
  "maintenance-on",
  "db-dump",
  "master-park-data",
  "fronts-park-data",
  "fetch-site",
  "master-move-site",
  "push-site",
  "fronts-restore-data",
  "fronts-remove-old",
  "maintenance-off",
  "finish",
];

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

describe("quick-migrate migrate", () => {
  it("migrates across two fronts, one with files on shared storage, and reports every host's acknowledgement", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    const linkBefore = fs.readlinkSync(path.join(siteDir(s.cluster.frontRoot("web2"), s.from, s.site), "files"));

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--from", s.from, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);

    const [plan, ...rest] = run.events;
    expect(plan).toMatchObject({ event: "plan", site: s.site, newSite: s.site, from: s.from, to: s.to });
    const id = plan?.migrationId;
    expect(typeof id).toBe("string");
    for (const e of run.events) expect(e.migrationId).toBe(id);
    expect((plan?.steps as Array<{ name: string }>).map((st) => st.name)).toEqual(STEPS);
    const ends = rest.filter((e) => e.event === "step-end");
    expect(ends.map((e) => e.step)).toEqual(STEPS);
    for (const e of ends) expect(e.ok, String(e.step)).toBe(true);
    const acks = (step: string) => rest.filter((e) => e.event === "ack" && e.step === step).map((e) => e.host).sort();
    expect(acks("preflight")).toEqual(["hostmaster", "web1", "web2"]);
    expect(acks("fronts-park-data")).toEqual(["web1", "web2"]);
    expect(acks("fetch-site")).toEqual(["web1"]);
    expect(acks("push-site")).toEqual(["web1", "web2"]);
    expect(acks("fronts-restore-data")).toEqual(["web1", "web2"]);
    expect(acks("fronts-remove-old")).toEqual(["web1", "web2"]);
    expect(acks("master-park-data")).toEqual(["hostmaster"]);
    expect(ends.find((e) => e.step === "fronts-park-data")).toMatchObject({ acked: 2, expected: 2 });
    expect(rest.at(-1)).toMatchObject({ event: "result", outcome: "migrated", exitCode: 0 });

    await expectMigrated(s);
    const link = path.join(siteDir(s.cluster.frontRoot("web2"), s.to, s.site), "files");
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(link)).toBe(linkBefore);
    // the journal holds the plan and every event, one JSON line each
    const journal = path.join(s.cluster.masterState, "migrations", String(id));
    expect(JSON.parse(fs.readFileSync(path.join(journal, "plan.json"), "utf8")).plan.migration.id).toBe(id);
    const logged = fs.readFileSync(path.join(journal, "events.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(logged.filter((e) => e.event === "intent").length).toBeGreaterThan(10);
    expect(logged.at(-1)).toMatchObject({ event: "result", outcome: "migrated" });
    // the lock is released
    expect(fs.readdirSync(path.join(s.cluster.masterState, "locks"))).toEqual([]);
    // each agent audited one line per operation: client, operation, migration, site, result
    const audit = fs
      .readFileSync(s.cluster.front("web1").logFile, "utf8")
      .split("\n")
      .filter((l) => l.includes('"msg":"operation"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const ops = audit.filter((a) => a.migrationId === id).map((a) => [a.op, a.action ?? a.step ?? "", a.site, a.result, a.client]);
    expect(ops).toEqual([
      ["preflight", "", s.site, "ok", "(plaintext)"],
      ["apply", "park-data", s.site, "ok", "(plaintext)"],
      ["rsync", "fetch-site", s.site, "ok", "(plaintext)"],
      ["rsync", "push-site", s.site, "ok", "(plaintext)"],
      ["apply", "restore-data", s.site, "ok", "(plaintext)"],
      ["apply", "remove-old-site", s.site, "ok", "(plaintext)"],
    ]);
  });

  it("a reader of its output that goes away (a closed pipe) does not stop the migration: it finishes, exit 0", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    const controller = [process.execPath, path.join(repoRoot(), "dist", "controller", "main.js"), "migrate", s.site, "--to", s.to, "--json", "--config", s.cluster.controllerConfig];
    // `head` reads one byte and exits: every later write to stdout (and the logs on stderr) meets EPIPE
    const quoted = controller.map((a) => `'${a}'`).join(" ");
    const r = await execa("bash", ["-c", `${quoted} 2>&1 | head -c 1 >/dev/null; echo "$\{PIPESTATUS[0]}"`], { env: { QM_LOG_LEVEL: "debug" }, reject: false });
    expect(r.stdout.trim(), r.stderr).toBe("0");
    await expectMigrated(s);
    const status = await runController(s.cluster.controllerConfig, ["status", "--json"]);
    expect(JSON.parse(status.stdout)).toMatchObject([{ state: "migrated" }]);
  });

  it("migrates across three fronts and renames the site with --new-uri", async () => {
    const s = (scenario = await setupScenario({
      fronts: [{ name: "web1" }, { name: "web2" }, { name: "web3" }],
      symlinkFiles: ["web3"],
      noPrivateFiles: ["web2"],
    }));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--new-uri", "new.example.com", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.at(-1)).toMatchObject({ outcome: "migrated", exitCode: 0 });
    const ends = run.events.filter((e) => e.event === "step-end" && e.step === "fronts-restore-data");
    expect(ends[0]).toMatchObject({ acked: 3, expected: 3 });
    await expectMigrated(s, { newSite: "new.example.com" });
    for (const f of s.cluster.fronts) {
      expect(fs.existsSync(siteDir(f.root, s.to, s.site)), `${f.name}: no folder under the old name`).toBe(false);
    }
  });

  it("a data dir that is a symlink stays the very same link: absolute (shared storage) and relative (resolving from the new folder too)", async () => {
    const setup = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    const web1 = setup.cluster.frontRoot("web1");
    const files = path.join(siteDir(web1, setup.from, setup.site), "files");
    fs.mkdirSync(path.join(web1, "storage", "files"), { recursive: true });
    fs.writeFileSync(path.join(web1, "storage", "files", "upload.txt"), "shared by the link\n");
    fs.rmSync(files, { recursive: true });
    fs.symlinkSync("../../../storage/files", files);
    const s = await rescan(setup);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    const moved = path.join(siteDir(web1, s.to, s.site), "files");
    expect(fs.readlinkSync(moved)).toBe("../../../storage/files");
    expect(fs.readFileSync(path.join(moved, "upload.txt"), "utf8")).toBe("shared by the link\n");
    expect(fs.readlinkSync(path.join(siteDir(s.cluster.frontRoot("web2"), s.to, s.site), "files"))).toBe(path.join(s.sharedStorage, "web2", "files"));
  });

  it("parks and restores the hostmaster's own data when it is also a web front, never deleting it", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "master", local: true }, { name: "web1" }] }));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    const skipped = (step: string) => run.events.find((e) => e.event === "step-end" && e.step === step)?.skipped;
    expect(skipped("master-park-data")).toBeTruthy();
    expect(skipped("fetch-site")).toBeTruthy();
    expect(run.events.filter((e) => e.event === "ack" && e.step === "push-site").map((e) => e.host)).toEqual(["web1"]);
    expect(run.events.filter((e) => e.event === "ack" && e.step === "fronts-restore-data").map((e) => e.host).sort()).toEqual(["master", "web1"]);
    await expectMigrated(s);
  });

  it("a hostmaster that is a front, fetching from another front, leaves no staging copy (settings.php and its credentials) behind", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "master", local: true }, { name: "web1" }] }));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--fetch-from", "web1", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.filter((e) => e.event === "ack" && e.step === "fetch-site").map((e) => e.host)).toEqual(["web1"]);
    // expectMigrated checks every park area, the hostmaster's included (it is front master's root)
    await expectMigrated(s, { fetchFrom: "web1" });
    expect(fs.existsSync(path.join(s.cluster.masterRoot, ".quick-migrate-park")), "no park area left on the hostmaster").toBe(false);
  });

  it.each(["updatedb", "--platform=drupal-7.99"])(
    "a hostmaster that is a front, fetching from another front, leaves no staging copy behind after a rollback (%s failing)",
    async (failOn) => {
      const h = fakeDrushHooks();
      const s = (scenario = await setupScenario({
        fronts: [{ name: "master", local: true }, { name: "web1" }],
        hooks: { ...h, deploy: [...(h.deploy ?? []), "--platform={to}"] },
      }));
      const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--fetch-from", "web1", "--json"], {
        env: { QM_FAKE_DRUSH_FAIL: failOn },
      });
      expect(run.exitCode, run.stdout + run.stderr).toBe(1);
      // the fetched copy was moved into place before the hook failed: the rollback moved it back and removed it
      expect(run.events.some((e) => e.event === "ack" && e.step === "fetch-site" && e.undo && e.ok)).toBe(true);
      await expectUnchanged(s);
      expect(fs.existsSync(path.join(s.cluster.masterRoot, ".quick-migrate-park")), "no park area left on the hostmaster").toBe(false);
    },
  );

  it("fetches from the front named by --fetch-from", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    // a change only web2 has: it must reach every host
    const extra = path.join(siteDir(s.cluster.frontRoot("web2"), s.from, s.site), "local.settings.php");
    fs.appendFileSync(extra, "// edited on web2\n");
    const s2: Scenario = { ...s, codeBefore: new Map(s.codeBefore) };
    const { manifest } = await import("../../scripts/lib/manifest.js");
    const { excludePaths } = await import("../../scripts/lib/manifest.js");
    s2.codeBefore.set("web2", excludePaths(await manifest(siteDir(s.cluster.frontRoot("web2"), s.from, s.site)), ["files", "private/files"]));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--fetch-from", "web2", "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.events.filter((e) => e.event === "ack" && e.step === "fetch-site").map((e) => e.host)).toEqual(["web2"]);
    await expectMigrated(s2, { fetchFrom: "web2" });
  });

  it("runs the hooks with placeholders and QM_* variables, without a shell", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }], hooks: fakeDrushHooks() }));
    const log = path.join(s.baseDir, "drush.log");
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_FAKE_DRUSH_LOG: log } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    const id = String(run.events[0]?.migrationId);
    const calls = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { argv: string[]; env: Record<string, string> });
    const dump = path.join(s.cluster.masterState, "migrations", id, "db-dump.sql");
    expect(calls.map((c) => c.argv.slice(0, 2).join(" "))).toEqual([
      `@${s.site} vset`,
      `@${s.site} sql-dump`,
      `@${s.site} provision-verify`,
      `@${s.site} updatedb`,
      `@${s.site} vset`,
    ]);
    expect(calls[1]?.argv).toContain(`--result-file=${dump}`);
    expect(fs.existsSync(dump)).toBe(true);
    expect(calls[2]?.env).toMatchObject({
      QM_SITE: s.site,
      QM_NEW_SITE: s.site,
      QM_FROM: s.from,
      QM_TO: s.to,
      QM_FROM_PATH: siteDir(s.cluster.masterRoot, s.from, s.site),
      QM_TO_PATH: siteDir(s.cluster.masterRoot, s.to, s.site),
      QM_DUMP: dump,
      QM_MIGRATION_ID: id,
    });
    await expectMigrated(s);
  });

  it("migrates a site again, back to its first platform: the hostmaster's copy has no data dirs any more", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    const there = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(there.exitCode, there.stdout + there.stderr).toBe(0);
    const back = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--from", s.to, "--to", s.from, "--json"]);
    expect(back.exitCode, back.stdout + back.stderr).toBe(0);
    expect(back.events.find((e) => e.event === "ack" && e.step === "master-park-data")?.detail).toBe("files: absent, private/files: absent");
    await expectMigrated({ ...s, from: s.to, to: s.from });
  });

  it("--dry-run prints the plan per host and changes nothing", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web1"] }));
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--dry-run"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`web1: park files: ${s.from}/sites/${s.site}/files → .quick-migrate-park/`);
    expect(run.stdout).toContain(`web2: restore private/files: .quick-migrate-park/`);
    // the hostmaster's copy is not live: its stale folder is set aside and the fetched one takes the new place
    expect(run.stdout).toMatch(new RegExp(`hostmaster: copy the site folder from web1: web1:${s.from}/sites/${s.site}/ → \\.quick-migrate-park/[^/]+/\\.site-staging/`));
    expect(run.stdout).toMatch(new RegExp(`hostmaster: set the stale site folder aside: ${s.from}/sites/${s.site} → \\.quick-migrate-park/[^/]+/\\.stale-site`));
    expect(run.stdout).toMatch(new RegExp(`hostmaster: put the fetched site folder in place: \\.quick-migrate-park/[^/]+/\\.site-staging → ${s.to}/sites/${s.site}`));
    expect(run.stdout).toContain("undo: remove the staging folder");
    await expectUnchanged(s);
    expect(fs.existsSync(path.join(s.cluster.masterState, "migrations"))).toBe(false);
  });
});
