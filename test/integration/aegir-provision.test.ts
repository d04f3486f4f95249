// The Aegir backend (deploy/aegir/provision_quick_migrate) against the real controller on a local cluster:
// drush and Aegir cannot be installed here, so test/php/relay-test.php loads the command with a stand-in
// of the drush functions it calls, and prints what was called. Every PHP file under deploy/aegir is linted.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeDrushHooks, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectMigrated, expectUnchanged, setupScenario, siteDir } from "../helpers/scenario.js";

const PHP = spawnSync("php", ["--version"]).status === 0;
if (!PHP) console.warn("php is not installed (apt-get install -y php-cli): the Aegir tests are skipped");

const BIN = path.join(repoRoot(), "bin", "quick-migrate");
const TARGET = "@platform_drupal799";

type Call = { fn: string; type?: string; code?: string; message?: string; alias?: string; command?: string; args?: string[]; options?: Record<string, unknown> };
type PhpRun = { calls: Call[]; result: { exit: number; id: string | null; journal: string | null; action: string } };

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

function phpFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => /\.(php|inc|module|install)$/.test(f)).map((f) => path.join(dir, f));
}

/** provision-quick_migrate as the task runs it, on the scenario's site, to its target platform */
function runTask(s: Scenario, opts: { newUri?: string; env?: Record<string, string> } = {}): PhpRun {
  const spec = {
    bin: BIN,
    config: s.cluster.controllerConfig,
    uri: s.site,
    from: path.join(s.cluster.masterRoot, s.from),
    to: path.join(s.cluster.masterRoot, s.to),
    target: TARGET,
    ...(opts.newUri ? { new_uri: opts.newUri } : {}),
  };
  const out = execFileSync("php", [path.join(repoRoot(), "test", "php", "relay-test.php"), JSON.stringify(spec)], {
    env: { ...process.env, QM_LOG_LEVEL: "warn", ...opts.env },
    encoding: "utf8",
    timeout: 120_000,
  });
  return JSON.parse(out) as PhpRun;
}

const errors = (r: PhpRun) => r.calls.filter((c) => c.fn === "drush_set_error");
const hostmasterCalls = (r: PhpRun) => r.calls.filter((c) => c.fn === "drush_invoke_process" || c.fn === "provision_backend_invoke");

describe.skipIf(!PHP)("Aegir provision command", () => {
  it("every PHP file passes php -l", () => {
    const files = [...phpFiles(path.join(repoRoot(), "deploy", "aegir")), ...phpFiles(path.join(repoRoot(), "test", "php"))];
    expect(files.map((f) => path.basename(f)).sort()).toEqual(["hosting_quick_migrate.drush.inc", "hosting_quick_migrate.module", "module-test.php", "provision_quick_migrate.drush.inc", "quick_migrate.inc", "relay-test.php"]);
    for (const f of files) {
      const r = spawnSync("php", ["-l", f], { encoding: "utf8" });
      expect(r.status, `${f}: ${r.stdout}${r.stderr}`).toBe(0);
    }
  });

  it("relays every event and, after exit 0 only, saves, verifies and imports the site's context", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }));
    const r = runTask(s);
    expect(errors(r), JSON.stringify(r.calls, null, 1)).toEqual([]);
    expect(r.result).toMatchObject({ exit: 0, action: "migrate" });
    const id = String(r.result.id);
    expect(r.result.journal).toBe(path.join(s.cluster.masterState, "migrations", id));
    const messages = r.calls.map((c) => c.message ?? "");
    expect(messages).toContain("Step push-site started");
    for (const host of ["web1", "web2"]) expect(messages.some((m) => m.startsWith(`push-site: ${host} acknowledged`))).toBe(true);
    await expectMigrated(s);

    // the hostmaster side, in order, after the success line
    const done = r.calls.findIndex((c) => c.type === "success" && c.message?.includes(`Quick migrate ${id} done`) && c.message.includes(String(r.result.journal)));
    expect(done).toBeGreaterThan(0);
    const after = hostmasterCalls(r);
    expect(after.map((c) => [c.fn, c.alias, c.command, c.args])).toEqual([
      ["drush_invoke_process", "@none", "provision-save", [`@${s.site}`]],
      ["provision_backend_invoke", `@${s.site}`, "provision-verify", []],
      ["provision_backend_invoke", "@hostmaster", "hosting-import", [`@${s.site}`]],
    ]);
    expect(r.calls.indexOf(after[0] as Call)).toBeGreaterThan(done);
    expect(after[0]?.options).toMatchObject({ platform: TARGET, root: path.join(s.cluster.masterRoot, s.to), uri: s.site, db_server: "@server_localhost" });
  });

  it("with a new URI: the new alias is saved and verified, the old one deleted", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }], hooks: fakeDrushHooks() }));
    const r = runTask(s, { newUri: "new.example.com" });
    expect(errors(r), JSON.stringify(r.calls, null, 1)).toEqual([]);
    await expectMigrated(s, { newSite: "new.example.com" });
    expect(hostmasterCalls(r).map((c) => [c.command, c.args, c.options?.delete ?? c.options?.uri])).toEqual([
      ["provision-save", ["@new.example.com"], "new.example.com"],
      ["provision-save", [`@${s.site}`], true],
      ["provision-verify", [], undefined],
    ]);
  });

  it("a failed acknowledgement becomes a task error naming the host; rolled back, nothing saved", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], hooks: fakeDrushHooks() }));
    const web2 = s.cluster.fronts.find((f) => f.name === "web2");
    const sites = path.join(web2?.root ?? "", s.to, "sites");
    fs.chmodSync(sites, 0o555);
    try {
      const r = runTask(s);
      expect(r.result.exit, JSON.stringify(r.calls, null, 1)).toBe(1);
      const errs = errors(r);
      expect(errs.some((e) => e.message?.startsWith("push-site: web2 failed (")), JSON.stringify(errs, null, 1)).toBe(true);
      expect(errs.at(-1)?.code).toBe("QUICK_MIGRATE_ROLLED_BACK");
      expect(errs.at(-1)?.message).toContain("nothing changed in the hostmaster");
      expect(hostmasterCalls(r)).toEqual([]);
    } finally {
      fs.chmodSync(sites, 0o755);
    }
    await expectUnchanged(s);
  });

  it("exit 3 names the operator's command; the retried task resumes instead of migrating twice", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], hooks: fakeDrushHooks() }));
    // maintenanceOff fails: after the point of no return, so the controller stops with exit 3
    const first = runTask(s, { env: { QM_FAKE_DRUSH_FAIL: "0" } });
    expect(first.result).toMatchObject({ exit: 3, action: "migrate" });
    const id = String(first.result.id);
    const last = errors(first).at(-1);
    expect(last?.code).toBe("QUICK_MIGRATE_NEEDS_ATTENTION");
    expect(last?.message).toContain(`"${BIN} resume ${id}"`);
    expect(errors(first).some((e) => e.message?.startsWith("maintenance-off: hostmaster failed (HOOK_FAILED)"))).toBe(true);
    expect(hostmasterCalls(first)).toEqual([]);

    const retry = runTask(s);
    expect(errors(retry), JSON.stringify(retry.calls, null, 1)).toEqual([]);
    expect(retry.result).toMatchObject({ exit: 0, action: "resume", id });
    expect(retry.calls.some((c) => c.message === `An unfinished migration of ${s.site} is in the journal: resuming ${id} instead of starting another`)).toBe(true);
    expect(hostmasterCalls(retry).map((c) => c.command)).toEqual(["provision-save", "provision-verify", "hosting-import"]);
    await expectMigrated(s);
    const status = await runController(s.cluster.controllerConfig, ["status", "--json"]);
    expect(JSON.parse(status.stdout)).toMatchObject([{ id, state: "migrated" }]);
  });

  it("exit 4 and an ending without a result name the commands to run", () => {
    const inc = path.join(repoRoot(), "deploy", "aegir", "provision_quick_migrate", "quick_migrate.inc");
    const code = `function dt($s, $a = array()) { return strtr($s, $a); } require ${JSON.stringify(inc)};
      $locked = quick_migrate_exit_error(4, array('result' => array('message' => 'shop.example.com is locked by migration 20261126T000000Z-abc123 (needs-attention)')), 'qm');
      $killed = quick_migrate_exit_error(-1, array('id' => 'X', 'stderr' => 'Killed'), 'qm');
      echo json_encode(array($locked, $killed, quick_migrate_exit_error(0, array())));`;
    const [locked, killed, none] = JSON.parse(execFileSync("php", ["-r", code], { encoding: "utf8" })) as [[string, string], [string, string], null];
    expect(locked[0]).toBe("QUICK_MIGRATE_LOCKED");
    expect(locked[1]).toContain('"qm resume 20261126T000000Z-abc123" or "qm rollback 20261126T000000Z-abc123"');
    expect(killed[0]).toBe("QUICK_MIGRATE_NO_RESULT");
    expect(killed[1]).toContain('Run "qm status"');
    expect(none).toBeNull();
  });

  it("an unfinished migration elsewhere is not resumed by a task that asks something else", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }], hooks: fakeDrushHooks() }));
    const first = runTask(s, { newUri: "other.example.com", env: { QM_FAKE_DRUSH_FAIL: "0" } });
    expect(first.result.exit).toBe(3);
    const id = String(first.result.id);
    const r = runTask(s);
    expect(r.result).toMatchObject({ exit: 2, action: "refuse" });
    expect(errors(r).at(-1)?.message).toContain(`Not resuming: unfinished migration ${id} (needs-attention)`);
    expect(errors(r).at(-1)?.message).toContain(`"${BIN} rollback ${id}"`);
    expect(hostmasterCalls(r)).toEqual([]);
    expect(fs.existsSync(siteDir(s.cluster.masterRoot, s.to, "other.example.com"))).toBe(true);
  });
});
