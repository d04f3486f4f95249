// The release and its installation, as an operator runs them: `npm run release` makes the tarball (built
// code and production dependencies only), deploy/install.sh installs it into a scratch prefix, bindir,
// etc and unit dir, and the installed commands run from there with nothing but Node on the PATH. Then an
// upgrade, a reinstall, a rollback and an uninstall; and the systemd unit, checked by systemd-analyze.
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asAgentUser, defaultAgentUser, repoRoot } from "../../scripts/lib/cluster.js";
import { hello, insecureClient } from "../helpers/agentRpc.js";

const INSTALL = path.join(repoRoot(), "deploy", "install.sh");
const UNIT = "quick-migrate-agent.service";
const V1 = (JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;
const V2 = `${V1}-next.1`;
const V3 = `${V1}-next.2`;

const hasSystemdAnalyze = spawnSync("systemd-analyze", ["--version"], { stdio: "ignore" }).status === 0;
if (!hasSystemdAnalyze) console.warn("install.test.ts: the unit's checks are skipped: systemd-analyze is missing (apt-get install -y systemd; .ci/run does)");
const systemdRuns = fs.existsSync("/run/systemd/system");
const isRoot = process.getuid?.() === 0;

let base: string;
/** Where install.sh puts things: a scratch copy of /opt/quick-migrate, /usr/local/bin, /etc/quick-migrate and /etc/systemd/system. */
const dirs = () => ({
  prefix: path.join(base, "opt", "quick-migrate"),
  bindir: path.join(base, "usr", "local", "bin"),
  etc: path.join(base, "etc", "quick-migrate"),
  unitdir: path.join(base, "etc", "systemd", "system"),
});
const user = defaultAgentUser();
const userName = user?.name ?? os.userInfo().username;
const dirArgs = () => ["--prefix", dirs().prefix, "--bindir", dirs().bindir, "--etc", dirs().etc, "--unitdir", dirs().unitdir, "--user", userName];

async function install(args: readonly string[]): Promise<{ exitCode: number; out: string }> {
  const r = await execa("bash", [INSTALL, ...args], { reject: false, all: true, stdin: "ignore", timeout: 120_000 });
  return { exitCode: r.exitCode ?? -1, out: String(r.all) };
}

/** An installed command, run from the bindir with nothing but Node and the system on the PATH. */
const onPath = () => [dirs().bindir, path.dirname(process.execPath), "/usr/bin", "/bin"].join(":");
async function installed(bin: string, args: readonly string[]): Promise<string> {
  const r = await execa(bin, args, { env: { PATH: onPath() }, extendEnv: false, stdin: "ignore", timeout: 30_000 });
  return String(r.stdout).trim();
}

const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");
const link = (p: string) => fs.readlinkSync(p);

/**
 * Everything install.sh made, as data: each path with its type, mode, link target or content hash; a
 * version folder by its inode (whether it was extracted again), not its thousands of files.
 */
function snapshot(): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    const rel = path.relative(base, p);
    if (st.isSymbolicLink()) out.push(`${rel} -> ${link(p)}`);
    else if (st.isFile()) out.push(`${rel} ${(st.mode & 0o7777).toString(8)} ${sha256(p)}`);
    else if (st.isDirectory() && path.dirname(p) === dirs().prefix) out.push(`${rel}/ inode ${st.ino}`);
    else if (st.isDirectory()) {
      out.push(`${rel}/ ${(st.mode & 0o7777).toString(8)}`);
      for (const e of fs.readdirSync(p).sort()) walk(path.join(p, e));
    }
  };
  walk(base);
  return out;
}

/** A copy of a release tarball with another version (and, if asked, another README): for what only install.sh decides. */
async function repack(from: string, version: string, readmeLine?: string): Promise<string> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "qm-repack-"));
  try {
    await execa("tar", ["-xzf", from, "-C", work]);
    const [top] = fs.readdirSync(work);
    const dir = path.join(work, `quick-migrate-${version}`);
    if (`quick-migrate-${version}` !== top) fs.renameSync(path.join(work, top as string), dir);
    const pkgFile = path.join(dir, "package.json");
    fs.writeFileSync(pkgFile, `${JSON.stringify({ ...(JSON.parse(fs.readFileSync(pkgFile, "utf8")) as object), version }, null, 2)}\n`);
    if (readmeLine !== undefined) fs.appendFileSync(path.join(dir, "README.md"), `${readmeLine}\n`);
    const out = path.join(base, "tarballs", `repacked-${version}-${readmeLine === undefined ? "plain" : "edited"}`, `quick-migrate-${version}.tar.gz`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await execa("tar", ["--owner=0", "--group=0", "-czf", out, "-C", work, `quick-migrate-${version}`]);
    return out;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

describe("the release tarball, installed, upgraded, rolled back and uninstalled with deploy/install.sh", () => {
  const tarballs: Record<string, string> = {};

  beforeAll(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), "qm-install-"));
    // the agent's user walks through it to the installed code
    fs.chmodSync(base, 0o755);
    const out = path.join(base, "tarballs", "released");
    const started = Date.now();
    const r = await execa("npm", ["run", "release", "--", "--out", out], { cwd: repoRoot(), all: true, reject: false, stdin: "ignore" });
    if (r.exitCode !== 0) throw new Error(`npm run release exited ${String(r.exitCode)}:\n${String(r.all)}`);
    tarballs[V1] = path.join(out, `quick-migrate-${V1}.tar.gz`);
    const mib = (fs.statSync(tarballs[V1] as string).size / 1024 / 1024).toFixed(1);
    console.log(`npm run release: ${mib} MiB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    // the versions an upgrade goes to: the same release with another number
    tarballs[V2] = await repack(tarballs[V1] as string, V2);
  }, 300_000);

  afterAll(() => {
    if (base) fs.rmSync(base, { recursive: true, force: true });
  });

  it("npm run release packs the built code, deploy/ and production dependencies only, in one versioned folder", async () => {
    const tarball = tarballs[V1] as string;
    expect(fs.readFileSync(`${tarball}.sha256`, "utf8")).toBe(`${sha256(tarball)}  quick-migrate-${V1}.tar.gz\n`);
    const entries = String((await execa("tar", ["-tzvf", tarball])).stdout).split("\n");
    const names = entries.map((l) => l.split(/\s+/).slice(5).join(" "));
    const top = `quick-migrate-${V1}/`;
    for (const n of names) expect(n.startsWith(top), n).toBe(true);
    const has = (p: string) => names.includes(top + p);
    for (const p of [
      "bin/quick-migrate",
      "bin/quick-migrate-agent",
      "dist/agent/main.js",
      "dist/controller/main.js",
      "dist/shared/generated/quickmigrate/v1/agent.js",
      // what bin/ runs (scripts/bundle.mjs)
      "dist/bundle/controller.js",
      "dist/bundle/agent.js",
      "dist/bundle/noDebugger.js",
      "deploy/install.sh",
      "deploy/systemd/quick-migrate-agent.service",
      "deploy/tls/make-certs.sh",
      "deploy/agent.example.yaml",
      "deploy/controller.example.yaml",
      "deploy/hooks/drupal7.yaml",
      "deploy/hooks/drupal8.yaml",
      "deploy/hooks/mariadb.yaml",
      "README.md",
      "package.json",
      "package-lock.json",
      "node_modules/@grpc/grpc-js/package.json",
      // the schema the agent serves by gRPC reflection
      "dist/proto/quickmigrate/v1/agent.proto",
    ]) {
      expect(has(p), p).toBe(true);
    }
    for (const dev of ["typescript", "vitest", "@bufbuild/buf", "ts-proto"]) expect(has(`node_modules/${dev}/`), dev).toBe(false);
    const notShipped = (n: string) => n.startsWith(`${top}dist/scripts/`) || (n.startsWith(`${top}dist/`) && n.endsWith(".map")) || n.startsWith(`${top}test/`);
    expect(names.filter(notShipped)).toEqual([]);
    // executable where they must be; everything owned by root
    for (const p of ["bin/quick-migrate", "bin/quick-migrate-agent", "deploy/install.sh", "deploy/tls/make-certs.sh", "deploy/hooks/mariadb-dump.sh", "deploy/hooks/mariadb-restore.sh", "deploy/hooks/drush-dump.sh", "deploy/hooks/drush-restore.sh", "deploy/hooks/drush-updatedb.sh"]) {
      expect(entries.find((l) => l.endsWith(` ${top}${p}`)), p).toMatch(/^-rwxr-xr-x 0\/0 /);
    }
    const packed = JSON.parse(String((await execa("tar", ["-xzOf", tarball, `${top}package.json`])).stdout)) as Record<string, unknown>;
    expect(packed).toMatchObject({ name: "quick-migrate", version: V1 });
    expect(packed.scripts).toBeUndefined();
  });

  it("installs into a scratch prefix: the commands run from the PATH, the configs and the unit are in place", async () => {
    const r = await install([tarballs[V1] as string, "--agent", "--controller", ...dirArgs()]);
    expect(r.exitCode, r.out).toBe(0);
    const d = dirs();
    expect(link(path.join(d.prefix, "current"))).toBe(V1);
    expect(fs.existsSync(path.join(d.prefix, "previous"))).toBe(false);
    for (const bin of ["quick-migrate", "quick-migrate-agent"]) {
      expect(link(path.join(d.bindir, bin))).toBe(path.join(d.prefix, "current", "bin", bin));
      expect(await installed(bin, ["--version"])).toBe(V1);
    }
    expect(await installed("quick-migrate", ["--help"])).toContain("Usage: quick-migrate");
    // the configs: the examples, readable by the agent's group only; the TLS folder for its keys
    const agentYaml = path.join(d.etc, "agent.yaml");
    expect(fs.readFileSync(agentYaml, "utf8")).toBe(fs.readFileSync(path.join(repoRoot(), "deploy", "agent.example.yaml"), "utf8"));
    expect(fs.readFileSync(path.join(d.etc, "controller.yaml"), "utf8")).toBe(fs.readFileSync(path.join(repoRoot(), "deploy", "controller.example.yaml"), "utf8"));
    expect(fs.statSync(agentYaml).mode & 0o777).toBe(0o640);
    expect(fs.statSync(path.join(d.etc, "tls")).mode & 0o777).toBe(0o750);
    if (isRoot && user !== undefined) {
      expect(fs.statSync(agentYaml).gid).toBe(user.gid);
      expect(fs.statSync(path.join(d.etc, "tls")).gid).toBe(user.gid);
      expect(fs.statSync(path.join(d.prefix, V1, "dist", "agent", "main.js")).uid, "the code is root's, not the agent's").toBe(0);
    }
    // the unit, with this install's paths and user put in
    const unit = fs.readFileSync(path.join(d.unitdir, UNIT), "utf8");
    expect(unit).toContain(`ExecStart=${d.prefix}/current/bin/quick-migrate-agent --config ${agentYaml}\n`);
    expect(unit).toContain(`User=${userName}\n`);
    expect(unit).toContain("ReadWritePaths=/var/aegir/platforms\n");
  });

  it("the installed agent serves, from the installed code, as the agent's user", async () => {
    const work = path.join(base, "agent-run");
    fs.mkdirSync(path.join(work, "root"), { recursive: true });
    fs.mkdirSync(path.join(work, "state"));
    fs.writeFileSync(path.join(work, "agent.yaml"), `listen: "127.0.0.1:0"\nroot: ${work}/root\nstateDir: ${work}/state\ninsecure: true\n`);
    const ids = asAgentUser(path.join(work, "root"), path.join(work, "state"));
    fs.chmodSync(work, 0o755);
    const child = execa("quick-migrate-agent", ["--config", path.join(work, "agent.yaml")], {
      ...ids,
      env: { PATH: onPath() },
      extendEnv: false,
      reject: false,
      stdin: "ignore",
      timeout: 30_000,
    });
    let out = "";
    const listening = new Promise<string>((resolve) => {
      child.stdout?.on("data", (c: Buffer) => {
        out += c.toString();
        const address = /"address":"([^"]+)","[^\n]*"msg":"agent listening"/.exec(out)?.[1];
        if (address !== undefined) resolve(address);
      });
    });
    // an answer means it is past its start (the listening line is logged before its signal handlers are set)
    const client = insecureClient(await listening);
    const answer = await hello(client, { protocolVersion: 2, controllerVersion: "install-test" });
    client.close();
    expect(answer, JSON.stringify(answer)).toMatchObject({ ok: true });
    child.kill("SIGTERM");
    const r = await child;
    expect(out, String(r.stderr)).toContain(`"version":"${V1}"`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
  });

  it.skipIf(!hasSystemdAnalyze)("the unit passes systemd-analyze verify, and its security exposure is below 3.0", async () => {
    const d = dirs();
    const unitFile = path.join(d.unitdir, UNIT);
    // the installed unit is the release's with the scratch paths and user put in, nothing else changed
    const shipped = fs.readFileSync(path.join(repoRoot(), "deploy", "systemd", UNIT), "utf8").split("\n");
    const rendered = fs.readFileSync(unitFile, "utf8").split("\n");
    expect(rendered.length).toBe(shipped.length);
    const changed = shipped.flatMap((line, i) => (line === rendered[i] ? [] : [line.replace(/=.*/, "")]));
    expect(changed).toEqual(["Documentation", "ExecStart", ...(userName === "aegir" ? [] : ["User", "Group"])]);
    // verify checks that ExecStart exists: it does, in the scratch prefix (the unit as shipped names /opt/quick-migrate)
    const verify = await execa("systemd-analyze", ["verify", unitFile], { reject: false, all: true });
    expect(verify.exitCode, String(verify.all)).toBe(0);
    expect(String(verify.all), "no warnings either").toBe("");
    const security = await execa("systemd-analyze", ["security", "--offline=yes", unitFile], { reject: false, all: true, env: { SYSTEMD_COLORS: "0" } });
    const figure = /Overall exposure level for .*: (\d+\.\d+)/.exec(String(security.all))?.[1];
    const open = String(security.all)
      .split("\n")
      .filter((l) => l.startsWith("✗"))
      .map((l) => `  ${l.replace(/\s{2,}/g, "  ").trim()}`);
    console.log(`systemd-analyze security --offline=yes ${UNIT}: exposure ${figure ?? "?"}; what is left open:\n${open.join("\n")}`);
    expect(figure, String(security.all)).toBeDefined();
    expect(Number(figure)).toBeLessThan(3.0);
  });

  it("an upgrade switches current to the new version and keeps the previous one; an edited config stays", async () => {
    const d = dirs();
    const agentYaml = path.join(d.etc, "agent.yaml");
    fs.appendFileSync(agentYaml, "# edited by the operator\n");
    const edited = fs.readFileSync(agentYaml, "utf8");
    const r = await install([tarballs[V2] as string, "--agent", "--controller", ...dirArgs()]);
    expect(r.exitCode, r.out).toBe(0);
    expect(link(path.join(d.prefix, "current"))).toBe(V2);
    expect(link(path.join(d.prefix, "previous"))).toBe(V1);
    expect(fs.existsSync(path.join(d.prefix, V1, "bin", "quick-migrate"))).toBe(true);
    for (const bin of ["quick-migrate", "quick-migrate-agent"]) expect(await installed(bin, ["--version"])).toBe(V2);
    expect(fs.readFileSync(agentYaml, "utf8")).toBe(edited);
    expect(r.out).toContain(`kept ${agentYaml}`);
  });

  it("installing the same tarball again changes nothing", async () => {
    const before = snapshot();
    const r = await install([tarballs[V2] as string, "--agent", "--controller", ...dirArgs()]);
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toContain(`${V2} is installed in ${dirs().prefix}/${V2} already`);
    expect(snapshot()).toEqual(before);
  });

  it("another tarball with an installed version's number is refused, before anything changes, unless --force", async () => {
    const other = await repack(tarballs[V2] as string, V2, "rebuilt");
    const before = snapshot();
    const refused = await install([other, "--agent", ...dirArgs()]);
    expect(refused.exitCode).toBe(2);
    expect(refused.out).toContain(`${dirs().prefix}/${V2} is installed from another tarball than ${other} (--force replaces it)`);
    expect(snapshot()).toEqual(before);
    const forced = await install([other, "--agent", "--force", ...dirArgs()]);
    expect(forced.exitCode, forced.out).toBe(0);
    expect(fs.readFileSync(path.join(dirs().prefix, "current", "README.md"), "utf8")).toMatch(/rebuilt\n$/);
    expect(link(path.join(dirs().prefix, "previous"))).toBe(V1);
  });

  it("a command in the bindir that is not this install's stops it before anything changes", async () => {
    const otherBin = path.join(base, "other-bin");
    fs.mkdirSync(otherBin);
    fs.writeFileSync(path.join(otherBin, "quick-migrate"), "#!/bin/sh\necho not ours\n", { mode: 0o755 });
    const before = snapshot();
    const r = await install([tarballs[V1] as string, ...dirArgs(), "--bindir", otherBin]);
    expect(r.exitCode).toBe(2);
    expect(r.out).toContain(`${otherBin}/quick-migrate exists and is not a link into ${dirs().prefix}: remove it first`);
    expect(snapshot()).toEqual(before);
    fs.rmSync(otherBin, { recursive: true });
  });

  it("a third version removes the oldest; --rollback switches back to the previous one and forth", async () => {
    const d = dirs();
    tarballs[V3] = await repack(tarballs[V1] as string, V3);
    const r = await install([tarballs[V3] as string, "--agent", ...dirArgs()]);
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toContain(`removed the older version ${V1}`);
    expect(fs.readdirSync(d.prefix).filter((e) => !e.startsWith(".")).sort()).toEqual([V2, V3, "current", "previous"].sort());
    expect(await installed("quick-migrate", ["--version"])).toBe(V3);

    const back = await install(["--rollback", ...dirArgs()]);
    expect(back.exitCode, back.out).toBe(0);
    expect(link(path.join(d.prefix, "current"))).toBe(V2);
    expect(link(path.join(d.prefix, "previous"))).toBe(V3);
    expect(await installed("quick-migrate-agent", ["--version"])).toBe(V2);
    const forth = await install(["--rollback", ...dirArgs()]);
    expect(forth.exitCode, forth.out).toBe(0);
    expect(link(path.join(d.prefix, "current"))).toBe(V3);
  });

  // where systemd runs, --enable would enable the unit for real (and fail: it is not in systemd's unit path)
  it.skipIf(systemdRuns)("--enable without systemd running says so and installs all the same", async () => {
    const r = await install([tarballs[V3] as string, "--agent", "--enable", ...dirArgs()]);
    expect(r.exitCode, r.out).toBe(0);
    expect(r.out).toContain("systemd is not running here: not enabled. Where it runs: systemctl daemon-reload && systemctl enable --now quick-migrate-agent");
    expect(link(path.join(dirs().prefix, "current"))).toBe(V3);
  });

  it("--uninstall removes the commands, the unit, the prefix and the unedited config; never an edited config, the keys or the state", async () => {
    const d = dirs();
    fs.writeFileSync(path.join(d.etc, "tls", "web1-key.pem"), "a key\n", { mode: 0o600 });
    const state = path.join(base, "var", "lib", "quick-migrate");
    fs.mkdirSync(path.join(state, "migrations"), { recursive: true });
    fs.writeFileSync(path.join(state, "migrations", "m1.json"), "{}\n");

    const r = await install(["--uninstall", "--prefix", d.prefix]);
    expect(r.exitCode, r.out).toBe(0);
    expect(fs.existsSync(d.prefix)).toBe(false);
    for (const bin of ["quick-migrate", "quick-migrate-agent"]) expect(fs.existsSync(path.join(d.bindir, bin))).toBe(false);
    expect(fs.existsSync(path.join(d.unitdir, UNIT))).toBe(false);
    expect(fs.existsSync(path.join(d.etc, "controller.yaml")), "unedited since it was made").toBe(false);
    expect(fs.readFileSync(path.join(d.etc, "agent.yaml"), "utf8")).toContain("# edited by the operator");
    expect(r.out).toContain(`kept ${d.etc}/agent.yaml: it was edited`);
    expect(fs.readFileSync(path.join(d.etc, "tls", "web1-key.pem"), "utf8")).toBe("a key\n");
    expect(fs.readFileSync(path.join(state, "migrations", "m1.json"), "utf8")).toBe("{}\n");

    const again = await install(["--uninstall", "--prefix", d.prefix]);
    expect(again.exitCode).toBe(2);
    expect(again.out).toContain(`nothing installed by install.sh in ${d.prefix}`);
  });
});
