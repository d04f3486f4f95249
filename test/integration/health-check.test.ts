// The Nagios/Icinga checks (issue 10 item 4), run as a monitoring system runs them, against real agents
// over mutual TLS: `quick-migrate health` from the hostmaster (every front) and `quick-migrate-agent
// health` on a front (its own agent). Their exit code and status line for all up, one down, one slow,
// one NOT_SERVING, a certificate expiring soon, a bad config and bad arguments.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ClusterFront, runAgentCommand, runController } from "../../scripts/lib/cluster.js";
import { waitUntil } from "../helpers/agentLog.js";
import { type Scenario, setupScenario } from "../helpers/scenario.js";
import { type CertPair, installPair, makeCerts } from "../helpers/tls.js";

let s: Scenario;
let web1Port: number;
const undo: Array<() => void | Promise<void>> = [];

/** A port nothing listens on now (the agent of web1 gets a fixed one: its own check dials its `listen`). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

beforeAll(async () => {
  web1Port = await freePort();
  s = await setupScenario({ fronts: [{ name: "web1", agentConfig: { listen: `127.0.0.1:${web1Port}` } }, { name: "web2" }, { name: "web3" }], tls: true });
});

afterEach(async () => {
  for (const u of undo.splice(0).reverse()) await u();
});

afterAll(async () => {
  await s?.cleanup();
});

const front = (name: string): ClusterFront => s.cluster.front(name);
const pki = () => {
  if (!s.pki) throw new Error("no PKI");
  return s.pki;
};

async function health(args: string[] = []): Promise<{ exitCode: number; lines: string[]; stdout: string }> {
  const run = await runController(s.cluster.controllerConfig, ["health", ...args]);
  expect(run.stderr, "nothing on stderr").toBe("");
  return { exitCode: run.exitCode, lines: run.stdout.trimEnd().split("\n"), stdout: run.stdout };
}

async function agentHealth(f: ClusterFront, args: string[] = []): Promise<{ exitCode: number; lines: string[] }> {
  const run = await runAgentCommand(f, ["health", ...args]);
  expect(run.stderr, "nothing on stderr").toBe("");
  return { exitCode: run.exitCode, lines: run.stdout.trimEnd().split("\n") };
}

/** `'name'=<ms>ms;warn;crit;0;` for each name, as the perfdata of the status line */
const perf = (names: string[], warn = 500, crit = 2000, down: string[] = []): string =>
  names.map((n) => (down.includes(n) ? `'${n}'=U;${warn};${crit};0;` : `'${n}'=\\d+\\.\\dms;${warn};${crit};0;`)).join(" ");

function rootAway(f: ClusterFront): void {
  const away = `${f.root}.away`;
  fs.renameSync(f.root, away);
  undo.push(() => fs.renameSync(away, f.root));
}

/** Is there an established TCP connection to 127.0.0.1:port (the client's side, in /proc/net/tcp)? */
function connectedTo(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return fs
    .readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .some((l) => {
      const [, , remote, st] = l.trim().split(/\s+/);
      return remote === `0100007F:${hex}` && st === "01";
    });
}

/** Replaces a pair of certificate files (keeping their owner), putting the old ones back after the test; waits for the agent's reload. */
async function installFor(test: CertPair, target: CertPair, reloadedBy?: ClusterFront): Promise<void> {
  const saved = path.join(s.baseDir, `saved-${path.basename(target.cert, ".pem")}-${Date.now()}`);
  fs.mkdirSync(saved);
  const keep: CertPair = { name: target.name, cert: path.join(saved, "c.pem"), key: path.join(saved, "k.pem") };
  fs.copyFileSync(target.cert, keep.cert);
  fs.copyFileSync(target.key, keep.key);
  const reloads = () => (reloadedBy ? fs.readFileSync(reloadedBy.logFile, "utf8").split("tls material reloaded").length - 1 : 0);
  const before = reloads();
  installPair(test, target);
  if (reloadedBy) await waitUntil(() => reloads() > before, `${reloadedBy.name} reloading its certificate`);
  undo.push(async () => {
    const was = reloads();
    installPair(keep, target);
    if (reloadedBy) await waitUntil(() => reloads() > was, `${reloadedBy.name} reloading its certificate back`);
  });
}

describe("quick-migrate health (every front, from the hostmaster)", () => {
  it("all up: OK, exit 0, `3/3 agents serving`, perfdata per front; one line per front and the controller's certificate after it", async () => {
    const r = await health();
    expect(r.exitCode, r.stdout).toBe(0);
    expect(r.lines[0]).toMatch(new RegExp(`^QUICK-MIGRATE OK - 3/3 agents serving \\| ${perf(["web1", "web2", "web3"])}$`));
    expect(r.lines.slice(1)).toEqual([
      expect.stringMatching(new RegExp(`^web1 \\(127\\.0\\.0\\.1:${web1Port}\\): SERVING in \\d+\\.\\d ms; certificate valid until \\d{4}-\\d\\d-\\d\\dT[\\d:]+Z \\(\\d+ days\\)$`)),
      expect.stringMatching(/^web2 \(127\.0\.0\.1:\d+\): SERVING in /),
      expect.stringMatching(/^web3 \(127\.0\.0\.1:\d+\): SERVING in /),
      expect.stringMatching(/^controller certificate \(hostmaster\): valid until \d{4}-.* \(\d+ days\)$/),
    ]);
  });

  it("--json: one JSON object, the same state and exit code", async () => {
    const r = await health(["--json"]);
    expect(r.exitCode).toBe(0);
    expect(r.lines).toHaveLength(1);
    const doc = JSON.parse(r.stdout) as { state: string; exitCode: number; summary: string; hosts: Array<{ name: string; status: string; certificate?: { daysLeft: number } }> };
    expect(doc).toMatchObject({ service: "QUICK-MIGRATE", state: "OK", exitCode: 0, summary: expect.stringMatching(/^QUICK-MIGRATE OK - 3\/3 agents serving \| /) });
    expect(doc.hosts.map((h) => [h.name, h.status])).toEqual([
      ["web1", "SERVING"],
      ["web2", "SERVING"],
      ["web3", "SERVING"],
    ]);
    expect(doc.hosts[0]?.certificate?.daysLeft).toBeGreaterThan(30);
  });

  it("one NOT_SERVING (its root gone): CRITICAL, exit 2, naming it", async () => {
    rootAway(front("web3"));
    const r = await health();
    expect(r.exitCode, r.stdout).toBe(2);
    expect(r.lines[0]).toMatch(new RegExp(`^QUICK-MIGRATE CRITICAL - web3 NOT_SERVING; 2/3 agents serving \\| ${perf(["web1", "web2", "web3"])}$`));
  });

  it("one slow (frozen for a while): WARNING, exit 1, naming it and how slow", async () => {
    const web2 = front("web2");
    const pid = web2.process?.pid as number;
    const port = Number(web2.address.split(":")[1]);
    process.kill(pid, "SIGSTOP");
    undo.push(() => void process.kill(pid, "SIGCONT"));
    // (a generous --warn-ms: the other fronts must stay under it on a busy machine)
    const run = health(["--warn-ms", "1000", "--crit-ms", "20000"]);
    // the kernel completes the TCP handshake for a stopped process: once the check is connected, it waits
    await waitUntil(() => connectedTo(port), "the check connected to web2");
    await new Promise((r) => setTimeout(r, 2000));
    process.kill(pid, "SIGCONT");
    const r = await run;
    expect(r.exitCode, r.lines.join("\n")).toBe(1);
    expect(r.lines[0]).toMatch(new RegExp(`^QUICK-MIGRATE WARNING - web2 slow \\((\\d+)\\.\\d ms > 1000 ms\\); 3/3 agents serving \\| ${perf(["web1", "web2", "web3"], 1000, 20000)}$`));
    expect(Number(/web2 slow \((\d+)/.exec(r.lines[0] ?? "")?.[1])).toBeGreaterThanOrEqual(2000);
  });

  it("one down (its agent stopped): CRITICAL, exit 2, naming it and why; its perfdata U", async () => {
    const web2 = front("web2");
    const address = web2.address;
    await s.cluster.stopAgent("web2");
    undo.push(() => s.cluster.startAgent("web2"));
    const r = await health();
    expect(r.exitCode, r.lines.join("\n")).toBe(2);
    expect(r.lines[0]).toBe(
      `QUICK-MIGRATE CRITICAL - web2 down (connect ECONNREFUSED ${address}); 2/3 agents serving | ${r.lines[0]?.split(" | ")[1] ?? ""}`,
    );
    expect(r.lines[0]).toMatch(new RegExp(` \\| ${perf(["web1", "web2", "web3"], 500, 2000, ["web2"])}$`));
  });

  it("a bad config or bad arguments: UNKNOWN, exit 3, the reason on the status line (--json too)", async () => {
    const bad = path.join(s.baseDir, "bad-controller.yaml");
    fs.writeFileSync(bad, "root: relative/path\nstateDir: /tmp\ninsecure: true\n");
    const run = await runController(bad, ["health"]);
    expect(run.exitCode).toBe(3);
    expect(run.stdout).toBe(`QUICK-MIGRATE UNKNOWN - ${bad}: root: must be an absolute path; ${bad}: fronts: Invalid input: expected array, received undefined`);
    const json = await runController(bad, ["health", "--json"]);
    expect(json.exitCode).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ state: "UNKNOWN", exitCode: 3, summary: expect.stringMatching(/^QUICK-MIGRATE UNKNOWN - .*root: must be an absolute path/) });
    for (const [args, why] of [
      [["--warn-ms", "soon"], "option '--warn-ms <ms>' argument 'soon' is invalid"],
      [["--crit-ms", "0"], "option '--crit-ms <ms>' argument '0' is invalid"],
      [["--warn-ms", "3000"], "--warn-ms 3000 is above --crit-ms 2000"],
      [["--verbose"], "unknown option '--verbose'"],
      [["extra"], "too many arguments for 'health'"],
    ] as const) {
      const r = await runController(s.cluster.controllerConfig, ["health", ...args]);
      expect(r.exitCode, `${args.join(" ")}: ${r.stdout}${r.stderr}`).toBe(3);
      expect(r.stdout.startsWith(`QUICK-MIGRATE UNKNOWN - ${why}`), r.stdout).toBe(true);
    }
  });

  it("a front's certificate expiring within 14 days: CRITICAL naming it and the date; the controller's within 30: WARNING", async () => {
    const days10 = path.join(s.baseDir, "certs-10-days");
    await makeCerts(["--ca-dir", pki().dir, "--days", "10", days10, pki().controller.name, "web1"]);
    await installFor({ name: "web1", cert: path.join(days10, "web1.pem"), key: path.join(days10, "web1-key.pem") }, pki().fronts.web1 as CertPair, front("web1"));
    const r = await health();
    expect(r.exitCode, r.lines.join("\n")).toBe(2);
    expect(r.lines[0]).toMatch(/^QUICK-MIGRATE CRITICAL - web1 certificate expires \d{4}-\d\d-\d\d \(in 9 days\); 3\/3 agents serving \| /);
    // the agent's own check sees the certificate it serves too
    const local = await agentHealth(front("web1"));
    expect(local.exitCode).toBe(2);
    expect(local.lines[0]).toMatch(/^QUICK-MIGRATE-AGENT CRITICAL - web1 certificate expires \d{4}-\d\d-\d\d \(in 9 days\); 1\/1 agents serving \| /);
    for (const u of undo.splice(0).reverse()) await u();

    const days20 = path.join(s.baseDir, "certs-20-days");
    await makeCerts(["--ca-dir", pki().dir, "--days", "20", days20, pki().controller.name]);
    await installFor({ name: "hostmaster", cert: path.join(days20, "controller.pem"), key: path.join(days20, "controller-key.pem") }, pki().controller);
    const w = await health();
    expect(w.exitCode, w.lines.join("\n")).toBe(1);
    expect(w.lines[0]).toMatch(/^QUICK-MIGRATE WARNING - controller certificate \(hostmaster\) expires \d{4}-\d\d-\d\d \(in 19 days\); 3\/3 agents serving \| /);
  });
});

describe("quick-migrate-agent health (the front's own agent)", () => {
  it("serving: OK, exit 0, its latency as perfdata and its certificate after", async () => {
    const r = await agentHealth(front("web1"));
    expect(r.exitCode, r.lines.join("\n")).toBe(0);
    expect(r.lines[0]).toMatch(new RegExp(`^QUICK-MIGRATE-AGENT OK - 1/1 agents serving \\| ${perf(["web1"])}$`));
    expect(r.lines[1]).toMatch(new RegExp(`^web1 \\(127\\.0\\.0\\.1:${web1Port}\\): SERVING in \\d+\\.\\d ms; certificate valid until `));
  });

  it("NOT_SERVING (its root gone): CRITICAL, exit 2", async () => {
    rootAway(front("web1"));
    const r = await agentHealth(front("web1"));
    expect(r.exitCode).toBe(2);
    expect(r.lines[0]).toMatch(new RegExp(`^QUICK-MIGRATE-AGENT CRITICAL - web1 NOT_SERVING; 0/1 agents serving \\| ${perf(["web1"])}$`));
  });

  it("stopped: CRITICAL, exit 2, naming why", async () => {
    await s.cluster.stopAgent("web1");
    undo.push(() => s.cluster.startAgent("web1"));
    const r = await agentHealth(front("web1"));
    expect(r.exitCode).toBe(2);
    expect(r.lines[0]).toBe(`QUICK-MIGRATE-AGENT CRITICAL - web1 down (connect ECONNREFUSED 127.0.0.1:${web1Port}); 0/1 agents serving | 'web1'=U;500;2000;0;`);
  });

  it("UNKNOWN, exit 3: a listen port chosen at start, a missing config, bad arguments", async () => {
    const r = await agentHealth(front("web2"));
    expect(r.exitCode).toBe(3);
    expect(r.lines).toEqual(["QUICK-MIGRATE-AGENT UNKNOWN - listen 127.0.0.1:0: the agent's port is chosen when it starts (port 0); give it a fixed port to check it"]);
    const missing = await runAgentCommand({ ...front("web1"), configFile: path.join(s.baseDir, "missing.yaml") }, ["health"]);
    expect([missing.exitCode, missing.stdout]).toEqual([3, `QUICK-MIGRATE-AGENT UNKNOWN - ${path.join(s.baseDir, "missing.yaml")}: cannot read config: ENOENT`]);
    const args = await runAgentCommand(front("web1"), ["health", "--crit-ms", "fast"]);
    // the status line, then the right form (as a plugin's usage error prints it)
    expect([args.exitCode, args.stdout]).toEqual([
      3,
      "QUICK-MIGRATE-AGENT UNKNOWN - option '--crit-ms <ms>' argument 'fast' is invalid. expected whole milliseconds, 1 or more.\nusage: quick-migrate-agent health [options]  (quick-migrate-agent health --help for examples)",
    ]);
  });

  it("a front certificate without clientAuth (made before make-certs.sh gave fronts clientAuth): UNKNOWN, exit 3, saying how to fix it", async () => {
    const dir = path.join(s.baseDir, "server-only");
    fs.mkdirSync(dir);
    const ext = path.join(dir, "ext.cnf");
    fs.writeFileSync(ext, "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:web1\n");
    const key = path.join(dir, "web1-key.pem");
    const cert = path.join(dir, "web1.pem");
    execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], { stdio: "pipe" });
    execFileSync("openssl", ["req", "-new", "-key", key, "-subj", "/CN=web1", "-out", path.join(dir, "web1.csr")], { stdio: "pipe" });
    execFileSync("openssl", ["x509", "-req", "-in", path.join(dir, "web1.csr"), "-CA", pki().ca, "-CAkey", pki().caKey, "-set_serial", "0x51", "-days", "100", "-extfile", ext, "-out", cert], { stdio: "pipe" });
    const web1 = pki().fronts.web1 as CertPair;
    await installFor({ name: "web1", cert, key }, web1, front("web1"));
    const r = await agentHealth(front("web1"));
    expect(r.exitCode).toBe(3);
    expect(r.lines).toEqual([
      `QUICK-MIGRATE-AGENT UNKNOWN - tls.cert ${web1.cert} is not usable as a client certificate (no clientAuth in its extendedKeyUsage): make it again with deploy/tls/make-certs.sh --force, which gives fronts clientAuth`,
    ]);
    // the hostmaster's check of that front is not affected: its own certificate is the client's
    expect((await health()).exitCode).toBe(0);
  });
});
