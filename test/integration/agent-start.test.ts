// Starting the agent process with a bad configuration: it exits non-zero with a clear message.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { repoRoot, runController } from "../../scripts/lib/cluster.js";
import { expectMigrated, setupScenario } from "../helpers/scenario.js";

const agentMain = path.join(repoRoot(), "dist", "agent", "main.js");

async function startWith(yaml: string): Promise<{ exitCode: number | undefined; stderr: string; file: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-agent-start-"));
  const file = path.join(dir, "agent.yaml");
  fs.writeFileSync(file, yaml);
  const r = await execa(process.execPath, [agentMain, "--config", file], { reject: false, timeout: 15_000 });
  fs.rmSync(dir, { recursive: true, force: true });
  return { exitCode: r.exitCode, stderr: String(r.stderr), file };
}

describe("quick-migrate-agent refuses to start", () => {
  it("in insecure mode on an address that is not loopback", async () => {
    const r = await startWith('listen: "10.1.2.3:7101"\nroot: /tmp\nstateDir: /tmp/qm-state\ninsecure: true\n');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${r.file}: listen: insecure (plaintext) mode is only allowed on a loopback address, not 10.1.2.3:7101`);
  });

  it("with TLS files that do not exist, naming the file", async () => {
    // (allowRoot: the tests may run as root, and that refusal would come first)
    const r = await startWith('listen: "127.0.0.1:0"\nroot: /tmp\nstateDir: /tmp/qm-state\ntls: { ca: /nonexistent/ca.pem, cert: /nonexistent/c.pem, key: /nonexistent/k.pem }\nallowedClients: [hostmaster]\nallowRoot: true\n');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/tls\.(ca|cert|key) \/nonexistent\/.*: cannot read: ENOENT/);
  });
});

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)("the agent's user (needs root to switch users)", () => {
  it("refuses to start as root without allowRoot, saying why and what to do", async () => {
    const r = await startWith('listen: "127.0.0.1:0"\nroot: /tmp\nstateDir: /tmp/qm-state\ninsecure: true\n');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${r.file}: allowRoot: refusing to run as root: run the agent as the aegir user`);
  });

  it("refuses `parked restore` as root without allowRoot, naming the way to run it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-parked-root-"));
    const file = path.join(dir, "agent.yaml");
    fs.writeFileSync(file, `listen: "127.0.0.1:0"\nroot: ${dir}\nstateDir: ${dir}/state\ninsecure: true\n`);
    const r = await execa(process.execPath, [agentMain, "parked", "restore", "m1", "--config", file], { reject: false, timeout: 15_000 });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain("refusing to run as root: run it as the agent's user, e.g. sudo -u aegir quick-migrate-agent parked restore m1");
  });

  it("starts as root with allowRoot: true, with a warning", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-agent-root-"));
    const file = path.join(dir, "agent.yaml");
    fs.mkdirSync(path.join(dir, "root"));
    fs.writeFileSync(file, `listen: "127.0.0.1:0"\nroot: ${dir}/root\nstateDir: ${dir}/state\ninsecure: true\nallowRoot: true\n`);
    const child = execa(process.execPath, [agentMain, "--config", file], { reject: false, buffer: true, timeout: 15_000 });
    let out = "";
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("agent listening")) child.kill("SIGTERM");
    });
    await child;
    fs.rmSync(dir, { recursive: true, force: true });
    expect(out).toMatch(/"level":40.*running as root \(allowRoot: true\)/);
    expect(out).toContain("agent listening");
  });

  it("runs the test cluster's agents as the unprivileged test user, owning their roots", async () => {
    const s = await setupScenario({ fronts: [{ name: "web1" }] });
    try {
      const pid = s.cluster.front("web1").process?.pid as number;
      const uid = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
      expect(Number(uid)).toBe(s.cluster.agentUser?.uid);
      expect(s.cluster.agentUser?.uid).not.toBe(0);
      expect(fs.statSync(path.join(s.cluster.frontRoot("web1"), s.from, "sites", s.site, "files")).uid).toBe(s.cluster.agentUser?.uid);
      const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
      expect(run.exitCode, run.stdout + run.stderr).toBe(0);
      await expectMigrated(s);
    } finally {
      await s.cleanup();
    }
  });
});
