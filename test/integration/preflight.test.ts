// Refusals before any change: each exits 2 (4 for a held lock) with one line naming the host and path,
// and leaves every tree on every host byte-identical.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { type Scenario, expectRefused, setupScenario, siteDir } from "../helpers/scenario.js";

const isRoot = process.getuid?.() === 0;
const mounts: string[] = [];
let scenario: Scenario | undefined;

afterEach(async () => {
  for (const m of mounts.splice(0)) execFileSync("umount", [m]);
  await scenario?.cleanup();
  scenario = undefined;
});

async function twoFronts(opts: Partial<Parameters<typeof setupScenario>[0]> = {}): Promise<Scenario> {
  scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"], ...opts });
  return scenario;
}

function mountTmpfs(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]);
  mounts.unshift(dir);
}

describe("preflight refusals", () => {
  it("target already present on one front", async () => {
    const s = await twoFronts();
    fs.mkdirSync(siteDir(s.cluster.frontRoot("web2"), s.to, s.site));
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toMatch(new RegExp(`web2: target site folder ${s.to}/sites/${s.site} already exists`));
    expect(message).not.toMatch(/web1:/);
  });

  it("source missing on one front", async () => {
    const s = await twoFronts();
    fs.rmSync(siteDir(s.cluster.frontRoot("web1"), s.from, s.site), { recursive: true });
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`web1: site folder ${s.from}/sites/${s.site} does not exist`);
  });

  it("an agent down", async () => {
    const s = await twoFronts();
    await s.cluster.stopAgent("web2");
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toMatch(/web2: agent unreachable/);
  });

  it("target platform missing on a front", async () => {
    const s = await twoFronts({ targetPlatformOn: ["hostmaster", "web1"] });
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`web2: target platform ${s.to} is missing (no ${s.to}/sites folder)`);
  });

  it.skipIf(!isRoot)("a data dir on another filesystem than its park area (needs root for mount)", async () => {
    const s = await twoFronts();
    mountTmpfs(path.join(s.cluster.frontRoot("web1"), ".quick-migrate-park"));
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`web1: data dir ${s.from}/sites/${s.site}/files is on another filesystem than the park area`);
  });

  it.skipIf(!isRoot)("a data dir that is a mount point (needs root for mount)", async () => {
    const s = await twoFronts();
    mountTmpfs(path.join(siteDir(s.cluster.frontRoot("web1"), s.from, s.site), "private", "files"));
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`web1: data dir ${s.from}/sites/${s.site}/private/files is a mount point`);
  });

  it("a data dir that is a relative symlink which would dangle in the new site folder (a deeper target platform)", async () => {
    const s = await twoFronts({ to: "d10/web" });
    const root = s.cluster.frontRoot("web1");
    const files = path.join(siteDir(root, s.from, s.site), "files");
    fs.mkdirSync(path.join(root, "storage", "files"), { recursive: true });
    fs.rmSync(files, { recursive: true });
    // resolves from drupal-7.98/sites/<site>/, not from d10/web/sites/<site>/
    fs.symlinkSync("../../../storage/files", files);
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toBe(
      `preflight refused: web1: data dir ${s.from}/sites/${s.site}/files is a relative symlink (→ ../../../storage/files) that would dangle in d10/web/sites/${s.site}: ${path.join(root, "d10", "storage", "files")} does not exist; make it absolute or move its target first`,
    );
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.events.at(-1)).toMatchObject({ exitCode: 2, code: "DANGLING_SYMLINK" });
  });

  it("unknown site", async () => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", "nosuch.example.com", "--to", s.to]);
    expect(message).toContain("unknown site nosuch.example.com");
  });

  it.each([
    ["a slash", "a/b.example.com"],
    ["..", ".."],
    ["../", "../etc"],
    ["an underscore and !", "bad_name!.com"],
    ["a leading -", "-rf.example.com"],
    ["a newline", "x\ny.com"],
    ["10,000 characters", "a".repeat(10_000)],
  ])("invalid URI with %s", async (_, uri) => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", "--from", s.from, "--to", s.to, "--json", "--", uri]);
    expect(message).toMatch(/^invalid site /);
  });

  it("invalid --new-uri", async () => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to, "--new-uri", "x/../y"]);
    expect(message).toMatch(/^invalid new site /);
  });

  it.each(["../drupal-7.99", "drupal-7.99/../../etc", "a//b", "./drupal-7.99", "drupal-7.99/."])("platform with .. or empty parts %j", async (to) => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", s.site, "--to", to]);
    expect(message).toMatch(/^invalid target platform /);
  });

  it("a platform outside the root", async () => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", s.site, "--to", "/etc"]);
    expect(message).toContain(`target platform /etc is outside the root ${s.cluster.masterRoot}`);
  });

  it("an absolute platform under the root is accepted", async () => {
    const s = await twoFronts();
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", path.join(s.cluster.masterRoot, s.to), "--dry-run", "--json"]);
    expect(run.exitCode, run.stdout).toBe(0);
    expect(run.events[0]).toMatchObject({ event: "plan", to: s.to });
  });

  it("same source and target", async () => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.from]);
    expect(message).toContain(`source and target are the same: ${s.from}/sites/${s.site}`);
  });

  it("a site locked by another migration exits 4 and names the holder", async () => {
    const s = await twoFronts();
    fs.mkdirSync(path.join(s.cluster.masterState, "locks"), { recursive: true });
    fs.writeFileSync(path.join(s.cluster.masterState, "locks", `${s.site}.lock`), "20260101T000000Z-abcdef\n");
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to], 4);
    expect(message).toBe(`site ${s.site} is locked by migration 20260101T000000Z-abcdef`);
  });

  it("a usage error with --json still ends with a result event", async () => {
    const s = await twoFronts();
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to, "--json", "--frobnicate"]);
    expect(message).toContain("--frobnicate");
  });

  it("a config with unknown keys is refused, naming file and key", async () => {
    const s = await twoFronts();
    fs.appendFileSync(s.cluster.controllerConfig, "frobnicate: 1\n");
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to]);
    expect(run.exitCode).toBe(2);
    expect(run.stdout).toContain(`${s.cluster.controllerConfig}: (top level): Unrecognized key: "frobnicate"`);
  });
});
