// Starting the agent process with a bad configuration: it exits non-zero with a clear message.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

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
    const r = await startWith('listen: "127.0.0.1:0"\nroot: /tmp\nstateDir: /tmp/qm-state\ntls: { ca: /nonexistent/ca.pem, cert: /nonexistent/c.pem, key: /nonexistent/k.pem }\nallowedClients: [hostmaster]\n');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/tls\.(ca|cert|key) \/nonexistent\/.*: cannot read: ENOENT/);
  });
});
