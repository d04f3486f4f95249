// `quick-migrate agents` without a network: what each front's answers (or failures) become, in the
// table and in --json, and the exit code.
import { describe, expect, it } from "vitest";
import type { FrontCertificate } from "../../controller/certificates.js";
import { type FrontProbe, formatBytes, formatInventory, inventoryExitCode, inventoryOf } from "../../controller/inventory.js";
import { QmError } from "../../shared/errors.js";
import type { HelloResponse } from "../../shared/generated/quickmigrate/v1/agent.js";

const NOW = Date.parse("2026-06-01T00:00:00Z");
const hello: HelloResponse = {
  protocolVersion: 2,
  agentVersion: "0.1.0",
  hostname: "web1.example.net",
  rootId: "0123456789abcdef0123456789abcdef",
  root: "/var/aegir/platforms",
  rootFreeBytes: 5 * 1024 ** 3,
  stateDirFreeBytes: 1536 * 1024 ** 2,
};
const certificate: FrontCertificate = { notAfter: new Date("2027-06-01T00:00:00Z"), subject: "CN=web1", fingerprint256: "AB:CD", verified: true };

function probe(over: Partial<{ hello: () => Promise<HelloResponse>; health: () => Promise<string>; certificate: () => Promise<FrontCertificate | undefined> }> = {}): FrontProbe & { closed: boolean } {
  const p = {
    closed: false,
    hello: over.hello ?? (async () => hello),
    health: over.health ?? (async () => "SERVING"),
    certificate: over.certificate ?? (async () => certificate),
    close() {
      p.closed = true;
    },
  };
  return p;
}

const front = (name: string, local = false) => ({ name, address: `10.0.0.${name.slice(-1)}:7101`, local });
const down = () => probe({
  hello: async () => Promise.reject(new QmError("UNREACHABLE", "agent unreachable: connect ECONNREFUSED 10.0.0.2:7101", { host: "web2" })),
  health: async () => Promise.reject(new Error("No connection established")),
  certificate: async () => Promise.reject(new Error("connect ECONNREFUSED 10.0.0.2:7101")),
});

describe("inventoryOf", () => {
  it("a front that answers everything", async () => {
    const p = probe();
    const f = await inventoryOf(front("web1"), p, () => NOW);
    expect(f).toEqual({
      name: "web1",
      address: "10.0.0.1:7101",
      local: false,
      reachable: true,
      agentVersion: "0.1.0",
      protocolVersion: 2,
      hostname: "web1.example.net",
      rootId: hello.rootId,
      root: "/var/aegir/platforms",
      rootFreeBytes: 5 * 1024 ** 3,
      stateDirFreeBytes: 1536 * 1024 ** 2,
      health: "SERVING",
      certificate: { notAfter: "2027-06-01T00:00:00.000Z", daysLeft: 365, subject: "CN=web1", verified: true },
    });
    expect(p.closed).toBe(true);
  });

  it("a front that is down: not reachable, with the error's code, and its probe closed all the same", async () => {
    const p = down();
    const f = await inventoryOf(front("web2"), p, () => NOW);
    expect(f).toMatchObject({ name: "web2", reachable: false, error: { code: "UNREACHABLE", message: "agent unreachable: connect ECONNREFUSED 10.0.0.2:7101" } });
    expect(f.agentVersion).toBeUndefined();
    expect(f.healthError).toBeDefined();
    expect(f.certificateError).toBeDefined();
    expect(p.closed).toBe(true);
  });

  it("an older agent (no root, no free space), plaintext (no certificate), an expired certificate not accepted", async () => {
    const old = await inventoryOf(front("web3"), probe({ hello: async () => ({ ...hello, root: "", rootFreeBytes: undefined, stateDirFreeBytes: undefined }), certificate: async () => undefined }), () => NOW);
    expect(old.root).toBeUndefined();
    expect(old.rootFreeBytes).toBeUndefined();
    expect(old.certificate).toBeNull();
    const expired = await inventoryOf(
      front("web4"),
      probe({ certificate: async () => ({ ...certificate, notAfter: new Date("2026-05-20T00:00:00Z"), verified: false, problem: "certificate has expired" }) }),
      () => NOW,
    );
    expect(expired.certificate).toEqual({ notAfter: "2026-05-20T00:00:00.000Z", daysLeft: -12, subject: "CN=web1", verified: false, problem: "certificate has expired" });
  });
});

describe("the table and the exit code", () => {
  it("all up: exit 0, one row per front, a summary", async () => {
    const list = [await inventoryOf(front("web1"), probe(), () => NOW), await inventoryOf(front("web2", true), probe({ health: async () => "NOT_SERVING" }), () => NOW)];
    expect(inventoryExitCode(list)).toBe(0);
    const lines = formatInventory(list);
    expect(lines[0]).toMatch(/^FRONT\s+ADDRESS\s+REACHABLE\s+AGENT\s+PROTOCOL\s+HOSTNAME\s+ROOT\s+ROOT FREE\s+STATE FREE\s+HEALTH\s+CERTIFICATE EXPIRES$/);
    expect(lines[1]).toMatch(/^web1\s+10\.0\.0\.1:7101\s+yes\s+0\.1\.0\s+2\s+web1\.example\.net\s+\/var\/aegir\/platforms\s+5\.0 GiB\s+1\.5 GiB\s+SERVING\s+2027-06-01 \(365 days\)$/);
    expect(lines[2]).toMatch(/^web2 \(local\)\s+.*NOT_SERVING/);
    expect(lines.at(-1)).toBe("2 fronts: 2 reachable");
    // the columns line up
    const at = (l: string | undefined) => l?.indexOf("ROOT FREE") ?? -1;
    expect(lines[1]?.indexOf("5.0 GiB")).toBe(at(lines[0]));
  });

  it("one front down: exit 1, its row says no, its error on a line of its own", async () => {
    const list = [await inventoryOf(front("web1"), probe(), () => NOW), await inventoryOf(front("web2"), down(), () => NOW)];
    expect(inventoryExitCode(list)).toBe(1);
    const lines = formatInventory(list);
    expect(lines[2]).toMatch(/^web2\s+10\.0\.0\.2:7101\s+no\s+-\s+-\s+-\s+-\s+-\s+-\s+\?\s+\?$/);
    expect(lines).toContain("  web2: UNREACHABLE: agent unreachable: connect ECONNREFUSED 10.0.0.2:7101");
    expect(lines.filter((l) => l.startsWith("  web2:")), "one line for the front that is down, not one per probe").toHaveLength(1);
    expect(lines.at(-1)).toBe("2 fronts: 1 reachable, 1 not");
  });

  it("a certificate the controller would not accept is flagged", async () => {
    const list = [await inventoryOf(front("web1"), probe({ certificate: async () => ({ ...certificate, verified: false, problem: "self-signed certificate" }) }), () => NOW)];
    const lines = formatInventory(list);
    expect(lines[1]).toMatch(/2027-06-01 \(365 days\) !$/);
    expect(lines).toContain("  web1: certificate CN=web1 not accepted: self-signed certificate");
  });

  it("bytes in binary units", () => {
    expect([formatBytes(undefined), formatBytes(0), formatBytes(1023), formatBytes(1024), formatBytes(3.5 * 1024 ** 4)]).toEqual(["-", "0 B", "1023 B", "1.0 KiB", "3.5 TiB"]);
  });
});
