// Two hosts of one migration that serve one root are refused at preflight (exit 2, nothing changed):
// two fronts pointed at one directory, a hostmaster that is a front without local: true, and a front
// marked local: true that is another machine. Each agent keeps its root's identity in
// <root>/.quick-migrate-root-id, made at its first start and never rewritten.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import YAML from "yaml";
import { type Cluster, asAgentUser, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { hello, insecureClient } from "../helpers/agentRpc.js";
import { type Scenario, expectMigrated, expectRefused, setupScenario } from "../helpers/scenario.js";

const ROOT_ID_FILE = ".quick-migrate-root-id";
const isRoot = process.getuid?.() === 0;
let scenario: Scenario | undefined;
const mounts: string[] = [];

afterEach(async () => {
  for (const m of mounts.splice(0)) execFileSync("umount", [m]);
  await scenario?.cleanup();
  scenario = undefined;
});

const rootIdOf = (root: string): string => fs.readFileSync(path.join(root, ROOT_ID_FILE), "utf8").trim();

/** Restarts a front's agent with another root in its own config (the controller's config is unchanged). */
async function pointAgentAt(cluster: Cluster, name: string, root: string): Promise<void> {
  const f = cluster.front(name);
  await cluster.stopAgent(name);
  const config = YAML.parse(fs.readFileSync(f.configFile, "utf8")) as Record<string, unknown>;
  fs.writeFileSync(f.configFile, YAML.stringify({ ...config, root }));
  await cluster.startAgent(name);
}

/** Edits the fronts of the controller's config, as an operator would. */
function editFronts(cluster: Cluster, edit: (front: Record<string, unknown>) => void): void {
  const config = YAML.parse(fs.readFileSync(cluster.controllerConfig, "utf8")) as { fronts: Record<string, unknown>[] };
  config.fronts.forEach(edit);
  fs.writeFileSync(cluster.controllerConfig, YAML.stringify(config));
}

describe("roots shared by two hosts of one migration", () => {
  it("two fronts whose agents serve one root (one NFS export): exit 2 naming both, nothing changed, nothing registered", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], symlinkFiles: ["web2"] }));
    const web1 = s.cluster.front("web1");
    const web2 = s.cluster.front("web2");
    await pointAgentAt(s.cluster, "web2", web1.root);
    const id = rootIdOf(web1.root);
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toMatch(/^preflight refused: /);
    expect(message).toContain(`web2: shares one root with web1 (root id ${id}: one directory, or one NFS export mounted on both)`);
    expect(message).toContain("list only one of them under fronts in the controller config");
    // the host that reports it is named once, by the prefix; the other host is not reported as well
    expect(message).not.toMatch(/web2: web2|web1: /);
    expect(fs.existsSync(path.join(web2.stateDir, "migrations")), "web2's agent registered nothing").toBe(false);
  });

  it("the hostmaster is a web front but its entry lacks local: true: exit 2, saying to mark it local", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "master", local: true }, { name: "web1" }] }));
    editFronts(s.cluster, (f) => delete f.local);
    const id = rootIdOf(s.cluster.masterRoot);
    expect(id, "the hostmaster's front's agent made the hostmaster root's id").toBe(rootIdOf(s.cluster.front("master").root));
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`master: shares one root with the hostmaster, ${s.cluster.masterRoot} (root id ${id}), but is not marked local: true`);
    expect(message).toContain("mark it local: true in the controller config");
    expect(message).not.toMatch(/master: master/);
  });

  it("a front marked local: true whose root is not the hostmaster's: exit 2, saying to remove local", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    editFronts(s.cluster, (f) => {
      if (f.name === "web1") f.local = true;
    });
    const message = await expectRefused(s, ["migrate", s.site, "--to", s.to]);
    expect(message).toContain(`web1: marked local: true, but its agent's root is not the hostmaster's root ${s.cluster.masterRoot}`);
    expect(message).not.toMatch(/web1: web1/);
    expect(message).toContain(`(root id ${rootIdOf(s.cluster.frontRoot("web1"))}; the hostmaster's none: no agent has served it)`);
    expect(message).toContain("remove local: true from its entry");
    expect(message).not.toMatch(/web2:/);
  });

  it("fronts with roots of their own migrate; the id files are there, untouched, the same after a restart", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] }));
    const stat = (f: string) => fs.statSync(path.join(s.cluster.frontRoot(f), ROOT_ID_FILE));
    const before = { web1: stat("web1"), web2: stat("web2"), id1: rootIdOf(s.cluster.frontRoot("web1")), id2: rootIdOf(s.cluster.frontRoot("web2")) };
    expect(before.id1).toMatch(/^[0-9a-f]{32}$/);
    expect(before.id1).not.toBe(before.id2);
    expect(fs.existsSync(path.join(s.cluster.masterRoot, ROOT_ID_FILE)), "the controller only reads its root's id").toBe(false);

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    await s.cluster.stopAgent("web1");
    await s.cluster.startAgent("web1");
    for (const f of ["web1", "web2"] as const) {
      expect(stat(f).ino, `${f}: the same file`).toBe(before[f].ino);
      expect(stat(f).mtimeMs, `${f}: never rewritten`).toBe(before[f].mtimeMs);
    }
    expect(rootIdOf(s.cluster.frontRoot("web1"))).toBe(before.id1);
    const c = insecureClient(s.cluster.front("web1").address);
    try {
      const h = await hello(c, { protocolVersion: 1, controllerVersion: "test" });
      expect(h).toMatchObject({ ok: true, value: { rootId: before.id1 } });
    } finally {
      c.close();
    }
  });

  it.skipIf(!isRoot)("an agent whose root is read-only refuses to start, saying so (needs root for mount)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-ro-root-"));
    const root = path.join(dir, "root");
    fs.mkdirSync(root);
    execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", root]);
    mounts.push(root);
    const config = path.join(dir, "agent.yaml");
    fs.mkdirSync(path.join(dir, "state"));
    fs.writeFileSync(config, YAML.stringify({ listen: "127.0.0.1:0", root, stateDir: path.join(dir, "state"), insecure: true }));
    try {
      const r = await execa(process.execPath, [path.join(repoRoot(), "dist", "agent", "main.js"), "--config", config], { reject: false, timeout: 15_000, ...asAgentUser(path.join(dir, "state")) });
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(String(r.stderr)).toContain(`quick-migrate-agent: cannot create ${path.join(root, ROOT_ID_FILE)}, the identity of the root: EROFS: the root ${root} must be writable by the user the agent runs as`);
    } finally {
      execFileSync("umount", [mounts.pop() as string]);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
