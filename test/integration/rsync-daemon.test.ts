// A hostile holder of an allowed client certificate, with the real rsync binary and a remote shell of
// its own (test/helpers/rogue-rsh.mjs: the agent's Rsync stream opened directly, no controller), against
// an agent running as root (its rsync daemon chrooted into the site folder) and one running unprivileged
// as production does (no chroot): filter rules sent by the client, deletes, devices, setuid files and
// symlinks reach no data dir and nothing outside the site folder. Needs root (mknod, another user).
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClusterFront, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { type Manifest, diffManifests, excludePaths, manifest, summarizeDiff } from "../../scripts/lib/manifest.js";
import type { AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";
import { insecureClient, preflight, rsyncStarts } from "../helpers/agentRpc.js";
import { DATA_DIRS, type Scenario, expectMigrated, setupScenario, siteDir } from "../helpers/scenario.js";
import { agentClient, sslCredentials, targetName } from "../helpers/tls.js";
import { readRecordFile } from "../helpers/agentRecord.js";

const ROGUE = path.join(repoRoot(), "test", "helpers", "rogue-rsh.mjs");
const NOBODY = { uid: 65534, gid: 65534 };
const MIGRATION = "rogue-1";
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn("rsync-daemon.test.ts: skipped, needs root (mknod, an agent running as another user)");

/** Whether `nobody` can run the agent from this checkout (node, dist/ and node_modules readable to it). */
function nobodyCanRunAgent(): boolean {
  if (!isRoot) return false;
  const generated = path.join(repoRoot(), "dist", "shared", "generated", "quickmigrate", "v1", "agent.js");
  const probe = spawnSync(process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(generated)});`], { ...NOBODY, stdio: "ignore", timeout: 30_000 });
  return probe.status === 0;
}
const unprivileged = nobodyCanRunAgent();
if (isRoot && !unprivileged) console.warn("rsync-daemon.test.ts: the unprivileged agent's tests are skipped: user nobody cannot read node, dist/ or node_modules here");

/** Every entry of a tree made someone's (the unprivileged agent's), without following links. */
function chownTree(dir: string, who: { uid: number; gid: number }): void {
  execFileSync("chown", ["-R", "-h", `${who.uid}:${who.gid}`, dir]);
}

/**
 * Puts web1's record of the migration where the step order allows an rsync of either step (the data
 * parked, no push begun), as the agent keeps it (agent/stepOrder.ts): these tests are about confinement,
 * not the order, and parking the data for real would take away the data dirs whose exclusion they check.
 */
function putInParkedState(stateDir: string, id: string): void {
  const file = path.join(stateDir, "migrations", `${id}.json`);
  const record = readRecordFile(file);
  fs.writeFileSync(file, JSON.stringify({ ...record, state: { stages: [{ step: "fronts-park-data", status: "done" }] } }, null, 2));
}

function expectSame(what: string, before: Manifest | undefined, after: Manifest): void {
  expect(before, `${what}: no manifest before`).toBeDefined();
  const diff = diffManifests(before as Manifest, after);
  expect(diff, `${what} changed:\n${summarizeDiff(diff)}`).toEqual([]);
}

interface Target {
  readonly s: Scenario;
  readonly web1: ClusterFront;
  readonly env: Record<string, string>;
  /** a folder outside every root that the agent's user could write: only the confinement keeps it as it is */
  readonly outside: string;
  readonly oldSite: string;
  readonly newSite: string;
  /** the folders rsync may touch are these; everything else of the front's root is compared whole */
  rootBefore: Manifest;
  oldSiteBefore: Manifest;
  newDataBefore: Map<string, Manifest>;
}

interface RunResult {
  readonly exitCode: number | undefined;
  readonly output: string;
}

describe.skipIf(!isRoot).each([
  ["as root: the daemon chrooted into the site folder", true],
  ...(unprivileged ? [["unprivileged: no chroot, rsync sanitises", false] as [string, boolean]] : []),
])("a hostile client with the real rsync, agent %s", (_mode, privileged) => {
  let t: Target;
  let work: string;
  let client: AgentClient;

  beforeAll(async () => {
    const s = await setupScenario(privileged ? { fronts: [{ name: "web1" }], tls: true, agentUser: "root" } : { fronts: [{ name: "web1", user: NOBODY }] });
    const web1 = s.cluster.front("web1");
    if (!privileged) chownTree(web1.root, NOBODY);
    const outside = path.join(s.baseDir, "outside");
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "canary.txt"), "outside canary\n");
    fs.writeFileSync(path.join(web1.root, "canary.txt"), "root canary\n");
    fs.writeFileSync(path.join(web1.root, s.from, "sites", "canary.txt"), "sites canary\n");
    chownTree(outside, privileged ? { uid: 0, gid: 0 } : NOBODY);
    fs.chmodSync(s.baseDir, 0o755);

    const pki = s.pki;
    client = pki ? agentClient(web1.address, sslCredentials(pki.ca, pki.controller), targetName("web1")) : insecureClient(web1.address);
    const reg = await preflight(client, { migration: { id: MIGRATION, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] }, register: true, local: false });
    expect(reg.ok && reg.value.problems, JSON.stringify(reg)).toEqual([]);

    // data in the new site folder too, as after fronts-restore-data: a push must neither write nor delete it
    const newSite = siteDir(web1.root, s.to, s.site);
    for (const d of DATA_DIRS) {
      fs.mkdirSync(path.join(newSite, d), { recursive: true });
      fs.writeFileSync(path.join(newSite, d, "keep.txt"), `data of ${d}\n`);
    }
    if (!privileged) chownTree(path.join(web1.root, s.to), NOBODY);

    work = path.join(s.baseDir, "rogue");
    fs.mkdirSync(work);
    const env: Record<string, string> = {
      QM_ROGUE_ADDRESS: web1.address,
      QM_ROGUE_MIGRATION: MIGRATION,
      ...(pki ? { QM_ROGUE_CA: pki.ca, QM_ROGUE_CERT: pki.controller.cert, QM_ROGUE_KEY: pki.controller.key } : {}),
    };
    const oldSite = siteDir(web1.root, s.from, s.site);
    t = {
      s,
      web1,
      env,
      outside,
      oldSite,
      newSite,
      rootBefore: excludePaths(await manifest(web1.root), [`${s.to}/sites/${s.site}`]),
      oldSiteBefore: await manifest(oldSite),
      newDataBefore: new Map(await Promise.all(DATA_DIRS.map(async (d): Promise<[string, Manifest]> => [d, await manifest(path.join(newSite, d))]))),
    };
  });

  afterAll(async () => {
    client?.close();
    await t?.s.cleanup();
  });

  /** rsync with the rogue remote shell; `args` are its options, source and destination. */
  async function rogue(step: "fetch-site" | "push-site", args: string[], handBuilt?: string[]): Promise<RunResult> {
    putInParkedState(t.web1.stateDir, MIGRATION);
    const r = await execa("rsync", ["--rsh", `"${process.execPath}" "${ROGUE}"`, ...args], {
      env: { ...t.env, QM_ROGUE_STEP: step, ...(handBuilt ? { QM_ROGUE_ARGS: JSON.stringify(handBuilt) } : {}) },
      reject: false,
      all: true,
      timeout: 60_000,
    });
    return { exitCode: r.exitCode, output: r.all ?? "" };
  }

  /** A fresh local folder for a fetch to write into. */
  function local(name: string): string {
    const dir = path.join(work, name);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir);
    return dir;
  }

  /** A local tree to push: the site's code, plus what `extra` adds. */
  function pushTree(name: string, extra: (dir: string) => void = () => undefined): string {
    const dir = local(name);
    fs.cpSync(t.oldSite, dir, { recursive: true, filter: (src) => !DATA_DIRS.some((d) => src === path.join(t.oldSite, d)) });
    extra(dir);
    return dir;
  }

  /** Nothing outside the two site folders changed, the old one is as it was, the new one's data dirs are too. */
  async function expectConfined(what: string): Promise<void> {
    expectSame(`${what}: web1's root outside the new site folder`, t.rootBefore, excludePaths(await manifest(t.web1.root), [`${t.s.to}/sites/${t.s.site}`]));
    expectSame(`${what}: the old site folder`, t.oldSiteBefore, await manifest(t.oldSite));
    for (const d of DATA_DIRS) expectSame(`${what}: data dir ${d} of the new site folder`, t.newDataBefore.get(d), await manifest(path.join(t.newSite, d)));
    expect(fs.readdirSync(t.outside), `${what}: the folder outside the root`).toEqual(["canary.txt"]);
    expect(fs.readFileSync(path.join(t.outside, "canary.txt"), "utf8")).toBe("outside canary\n");
  }

  /** Every path of a local tree, relative. */
  const paths = async (dir: string): Promise<string[]> => [...(await manifest(dir)).keys()].filter((p) => p !== ".");

  it("a fetch with include rules for the data dirs: the site's code arrives, no data dir and nothing from outside the site folder", async () => {
    const got = local("fetch-include");
    // --delete-excluded is the receiving client's own: it deletes on that side only
    const r = await rogue("fetch-site", ["-rlptgo", "--include=/files/**", "--filter=+ /files", "--include=/private/**", "--filter=+ /private/files/***", "--include=*", "--delete", "--delete-excluded", "web1::site/", `${got}/`]);
    expect(r.exitCode, r.output).toBe(0);
    const got1 = await paths(got);
    expect(got1).toContain("settings.php");
    expect(got1.filter((p) => DATA_DIRS.some((d) => p === d || p.startsWith(`${d}/`)))).toEqual([]);
    expect(got1.filter((p) => p.endsWith("canary.txt"))).toEqual([]);
    await expectConfined("fetch with include rules");
  });

  it.each([
    ["a data dir", "web1::site/files/"],
    ["the files in a data dir", "web1::site/files/*"],
    ["the private data dir", "web1::site/private/files/"],
    ["the folder above", "web1::site/../"],
    ["the platform", "web1::site/../../"],
    ["an absolute path", "web1::site//etc/"],
  ])("a fetch naming %s gets no data and nothing from outside the site folder", async (_what, source) => {
    const got = local("fetch-path");
    const r = await rogue("fetch-site", ["-rlptgo", source, `${got}/`]);
    const names = await paths(got);
    expect(names.filter((p) => DATA_DIRS.some((d) => p === d || p.startsWith(`${d}/`)) || p.endsWith("canary.txt") || p === "passwd"), r.output).toEqual([]);
    // what did arrive (the module's root, where .. and / lead) is the site's code
    expect(names.filter((p) => !fs.existsSync(path.join(t.oldSite, p))), r.output).toEqual([]);
    await expectConfined(`fetch of ${source}`);
  });

  it.each([
    ["--remove-source-files", ["--remove-source-files"]],
    ["-L (follow links)", ["-L"]],
    ["--copy-unsafe-links", ["--copy-unsafe-links"]],
    ["-k (follow links to folders)", ["-k"]],
    ["-D", ["-D"]],
    ["-X", ["-X"]],
  ])("a fetch with %s is refused, nothing read or removed", async (_what, opts) => {
    const got = local("fetch-refused");
    const r = await rogue("fetch-site", ["-rlptgo", ...opts, "web1::site/", `${got}/`]);
    expect(r.exitCode, r.output).not.toBe(0);
    expect(r.output).toMatch(/refuse/);
    expect(await paths(got)).toEqual([]);
    await expectConfined(`fetch with ${opts.join(" ")}`);
  });

  it("a push with include rules for the data dirs and --delete: the code arrives, the front's data dirs are neither written nor deleted", async () => {
    const src = pushTree("push-include", (dir) => {
      for (const d of DATA_DIRS) {
        fs.mkdirSync(path.join(dir, d), { recursive: true });
        fs.writeFileSync(path.join(dir, d, "evil.php"), "<?php evil();\n");
      }
      fs.writeFileSync(path.join(dir, "new-code.php"), "<?php // pushed\n");
    });
    const r = await rogue("push-site", ["-rlptgo", "--include=/files/**", "--filter=+ /files", "--filter=+ /private/files/***", "--include=*", "--delete", `${src}/`, "web1::site/"]);
    // the daemon refuses the data dirs (exit 23: some files were not transferred), the rest arrives
    expect([0, 23], r.output).toContain(r.exitCode);
    expect(fs.readFileSync(path.join(t.newSite, "new-code.php"), "utf8")).toBe("<?php // pushed\n");
    await expectConfined("push with include rules");
  });

  it("a push of a tree without data dirs, with --delete: the front's data dirs stay", async () => {
    const src = pushTree("push-delete");
    const r = await rogue("push-site", ["-rlptgo", "--delete", `${src}/`, "web1::site/"]);
    expect(r.exitCode, r.output).toBe(0);
    expect(fs.existsSync(path.join(t.newSite, "new-code.php")), "--delete removed what the tree lacks").toBe(false);
    await expectConfined("push with --delete");
  });

  it.each([
    ["--delete-excluded", ["--delete", "--delete-excluded"]],
    ["--delete-after", ["--delete-after"]],
    ["--delete-before", ["--delete-before"]],
    ["--remove-source-files", ["--remove-source-files"]],
    ["-D (devices and specials)", ["-D"]],
    ["--specials", ["--specials"]],
    ["-X (extended attributes: file capabilities)", ["-X"]],
    ["-A (ACLs)", ["-A"]],
    ["--super", ["--super"]],
    ["--inplace (writes through a hard link)", ["--inplace"]],
    ["-K (follow folder links on the front)", ["-K"]],
    ["--backup-dir outside", ["--backup", `--backup-dir=${path.sep}tmp`]],
    ["--temp-dir outside", [`--temp-dir=${path.sep}tmp`]],
    ["--partial-dir outside", ["--partial-dir=../../../outside"]],
    ["--link-dest", ["--link-dest=../../../"]],
    ["-H (hard links)", ["-H"]],
    ["--chmod giving setuid", ["--chmod=u+s"]],
  ])("a push with %s is refused, nothing written", async (_what, opts) => {
    const src = pushTree("push-refused", (dir) => fs.writeFileSync(path.join(dir, "refused.php"), "x"));
    const r = await rogue("push-site", ["-rlptgo", ...opts, `${src}/`, "web1::site/"]);
    if (opts[0] === "--chmod=u+s") {
      // --chmod is the sender's own business (never sent): what arrives has no setuid bit
      expect(r.exitCode, r.output).toBe(0);
      expect(fs.statSync(path.join(t.newSite, "refused.php")).mode & 0o6000).toBe(0);
      fs.rmSync(path.join(t.newSite, "refused.php"));
    } else {
      expect(r.exitCode, r.output).not.toBe(0);
      expect(r.output).toMatch(/refuse/);
      expect(fs.existsSync(path.join(t.newSite, "refused.php"))).toBe(false);
    }
    await expectConfined(`push with ${opts.join(" ")}`);
  });

  it("a device node and a FIFO in the pushed tree are not made; setuid and setgid bits of files are dropped, a folder keeps its setgid bit", async () => {
    const src = pushTree("push-special", (dir) => {
      execFileSync("mknod", [path.join(dir, "null-dev"), "c", "1", "3"]);
      execFileSync("mkfifo", [path.join(dir, "fifo")]);
      for (const [name, mode] of [
        ["suid.sh", 0o4755],
        ["sgid.sh", 0o2755],
        ["both.sh", 0o6755],
      ] as const) {
        fs.writeFileSync(path.join(dir, name), "#!/bin/sh\nid\n");
        fs.chmodSync(path.join(dir, name), mode);
      }
      fs.mkdirSync(path.join(dir, "shared"));
      fs.chmodSync(path.join(dir, "shared"), 0o2775);
    });
    // the client's own archive without devices: it skips them itself
    const r = await rogue("push-site", ["-rlptgo", `${src}/`, "web1::site/"]);
    expect(r.exitCode, r.output).toBe(0);
    // with them, asked for explicitly: refused
    const d = await rogue("push-site", ["-rlptgoD", `${src}/`, "web1::site/"]);
    expect(d.exitCode, d.output).not.toBe(0);
    const d2 = await rogue("push-site", ["-rlptgo", "--devices", "--specials", `${src}/`, "web1::site/"]);
    expect(d2.exitCode, d2.output).not.toBe(0);
    expect(fs.existsSync(path.join(t.newSite, "null-dev"))).toBe(false);
    expect(fs.existsSync(path.join(t.newSite, "fifo"))).toBe(false);
    for (const name of ["suid.sh", "sgid.sh", "both.sh"]) {
      expect((fs.statSync(path.join(t.newSite, name)).mode & 0o7777).toString(8), name).toBe("755");
    }
    expect((fs.statSync(path.join(t.newSite, "shared")).mode & 0o7777).toString(8)).toBe("2775");
    await expectConfined("push of specials");
  });

  it("a symlink pointing outside stays a symlink, and nothing is written through it", async () => {
    const src = pushTree("push-link", (dir) => {
      fs.symlinkSync(t.outside, path.join(dir, "evil"));
      fs.symlinkSync("../../../../../outside", path.join(dir, "up"));
    });
    const r = await rogue("push-site", ["-rlptgo", `${src}/`, "web1::site/"]);
    expect(r.exitCode, r.output).toBe(0);
    const evil = path.join(t.newSite, "evil");
    expect(fs.lstatSync(evil).isSymbolicLink()).toBe(true);
    // in a chroot the value is kept (it cannot lead out); without one rsync stores it sanitised
    expect(fs.readlinkSync(evil)).toBe(privileged ? t.outside : t.outside.replace(/^\//, ""));
    expect(fs.lstatSync(path.join(t.newSite, "up")).isSymbolicLink()).toBe(true);

    // the same names as folders with something in them: through the links, or replacing them
    const src2 = pushTree("push-through", (dir) => {
      for (const name of ["evil", "up"]) {
        fs.mkdirSync(path.join(dir, name));
        fs.writeFileSync(path.join(dir, name, "pwned.php"), "<?php pwned();\n");
      }
    });
    const k = await rogue("push-site", ["-rlptgoK", `${src2}/`, "web1::site/"]);
    expect(k.exitCode, k.output).not.toBe(0);
    expect(fs.lstatSync(evil).isSymbolicLink(), "-K was refused: the link is as it was").toBe(true);
    await expectConfined("push through a link with -K");
    const plain = await rogue("push-site", ["-rlptgo", `${src2}/`, "web1::site/"]);
    expect(plain.exitCode, plain.output).toBe(0);
    // the receiver replaces a link by the folder, never writes into its target
    expect(fs.lstatSync(evil).isDirectory()).toBe(true);
    expect(fs.readdirSync(evil)).toEqual(["pwned.php"]);
    await expectConfined("push replacing links by folders");
  });

  it("hand-built remote shell arguments are refused before rsync starts", async () => {
    const starts = rsyncStarts(t.web1.logFile);
    for (const handBuilt of [
      ["rsync", "--server", "--daemon", `--config=${path.join(t.outside, "evil.conf")}`, "."],
      ["rsync", "--server", "-logtpre.iLsfxCIvu", "--delete", ".", `${t.s.to}/sites/${t.s.site}/`],
      ["sh", "-c", "id > /tmp/qm-pwned"],
    ]) {
      const src = pushTree("push-hand");
      const r = await rogue("push-site", ["-rlptgo", `${src}/`, "web1::site/"], handBuilt);
      expect(r.exitCode, r.output).not.toBe(0);
      expect(r.output).toMatch(/TUNNEL_REFUSED/);
    }
    expect(rsyncStarts(t.web1.logFile)).toBe(starts);
    await expectConfined("hand-built arguments");
  });
});

describe.skipIf(!unprivileged)("an unprivileged agent (no chroot) in a whole migration", () => {
  let s: Scenario | undefined;
  afterAll(async () => {
    await s?.cleanup();
  });

  it("migrates a site across a root front and an unprivileged one: every tree as expected", async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2", user: NOBODY }], agentUser: "root" });
    chownTree(s.cluster.frontRoot("web2"), NOBODY);
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    const log = fs.readFileSync(s.cluster.front("web2").logFile, "utf8");
    expect(log).toMatch(/"chroot":false,"msg":"rsync server start"/);
  });
});
