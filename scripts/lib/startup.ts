// The fixed cost of starting quick-migrate's processes, measured through the bin/ wrappers as a host
// runs them: `quick-migrate status` (start, config, exit), and an agent from its start to the first
// SERVING health answer and its resident memory once idle. For the bench and `node dist/scripts/startup.js`.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { probeHealth, type ProbeTarget } from "../../shared/healthProbe.js";
import { makeClusterPki, repoRoot } from "./cluster.js";

export interface StartupOptions {
  /** runs of each figure; each figure is their median (default 9) */
  readonly runs?: number;
  /** mutual TLS between the probe and the agent, as on a host (default true when openssl is installed) */
  readonly tls?: boolean;
  /** how long the agent is left alone after SERVING before its memory is read (default 3000 ms) */
  readonly idleMs?: number;
  /** default `<repo>/bin`: the folder holding quick-migrate and quick-migrate-agent */
  readonly binDir?: string;
}

/** One figure over several runs (milliseconds, or kB for memory). */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly runs: number;
}

export interface StartupFigures {
  /** wall time of `quick-migrate status -c <config>` with an empty state dir (ms) */
  readonly status: Spread;
  /** wall time of `quick-migrate --version` (ms): the start without the config */
  readonly version: Spread;
  /** from spawning the agent to its "agent listening" log line (ms) */
  readonly agentListening: Spread;
  /** from spawning the agent to the first SERVING answer of its health service (ms) */
  readonly agentServing: Spread;
  /** the agent's VmRSS, idleMs after SERVING (kB) */
  readonly agentIdleRssKb: Spread;
  readonly tls: boolean;
  /** `node -e 0`, for scale (ms) */
  readonly bareNode: Spread;
}

function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { median: Math.round(median), min: Math.round(sorted[0] as number), max: Math.round(sorted[sorted.length - 1] as number), runs: sorted.length };
}

/** The environment a host's service manager would give: no NODE_OPTIONS. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

/** Wall time of one run of a command to its exit, in ms; throws on a non-zero exit. */
async function timeCommand(file: string, args: readonly string[]): Promise<number> {
  const started = performance.now();
  const child = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"], env: cleanEnv() });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`${file} ${args.join(" ")}: exit ${code}: ${stderr.trim()}`);
  return ms;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** VmRSS of a process in kB (Linux /proc). */
export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

interface AgentRun {
  readonly listeningMs: number;
  readonly servingMs: number;
  readonly idleRssKb: number;
}

/** Starts one agent, polls its health until SERVING, waits idleMs, reads its memory, stops it. */
async function runAgent(bin: string, dir: string, tls: ProbeTarget["tls"], idleMs: number): Promise<AgentRun> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const config = path.join(dir, "agent.yaml");
  const tlsLine = tls
    ? `tls: { ca: ${dir}/tls/ca.pem, cert: ${dir}/tls/web1.pem, key: ${dir}/tls/web1-key.pem }\nallowedClients: [hostmaster]\n`
    : "insecure: true\n";
  fs.writeFileSync(config, `listen: "${address}"\nroot: ${dir}/root\nstateDir: ${dir}/agent-state\nminFreeBytes: 0\n${tlsLine}${process.getuid?.() === 0 ? "allowRoot: true\n" : ""}`);
  const started = performance.now();
  const child = spawn(bin, ["--config", config], { stdio: ["ignore", "pipe", "pipe"], env: cleanEnv() });
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  let listeningMs = Number.NaN;
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
    if (Number.isNaN(listeningMs) && out.includes('"msg":"agent listening"')) listeningMs = performance.now() - started;
  });
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));
  try {
    let servingMs = Number.NaN;
    while (Number.isNaN(servingMs)) {
      if (child.exitCode !== null) throw new Error(`agent exited with ${child.exitCode}: ${out.trim()}`);
      if (performance.now() - started > 30_000) throw new Error(`agent not SERVING after 30 s: ${out.trim()}`);
      const probe = await probeHealth({ name: "web1", address, ...(tls ? { tls } : {}) }, 1000);
      if (probe.status === "SERVING") servingMs = performance.now() - started;
      else await sleep(5);
    }
    await sleep(idleMs);
    return { listeningMs, servingMs, idleRssKb: rssKb(child.pid as number) };
  } finally {
    child.kill("SIGTERM");
    await exited;
  }
}

/** Measures the start figures (see StartupFigures) in a temporary folder it removes. */
export async function measureStartup(opts: StartupOptions = {}): Promise<StartupFigures> {
  const runs = opts.runs ?? 9;
  const idleMs = opts.idleMs ?? 3000;
  const binDir = opts.binDir ?? path.join(repoRoot(), "bin");
  const useTls = opts.tls ?? hasOpenssl();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-startup-"));
  try {
    fs.mkdirSync(path.join(dir, "root"));
    fs.mkdirSync(path.join(dir, "state"));
    let tls: ProbeTarget["tls"];
    if (useTls) {
      makeClusterPki(path.join(dir, "tls"), "hostmaster", ["web1=127.0.0.1"]);
      const read = (f: string) => fs.readFileSync(path.join(dir, "tls", f));
      tls = { ca: read("ca.pem"), cert: read("controller.pem"), key: read("controller-key.pem") };
    }
    const controllerConfig = path.join(dir, "controller.yaml");
    fs.writeFileSync(
      controllerConfig,
      `root: ${dir}/root\nstateDir: ${dir}/state\n` +
        (useTls ? `tls: { ca: ${dir}/tls/ca.pem, cert: ${dir}/tls/controller.pem, key: ${dir}/tls/controller-key.pem }\n` : "insecure: true\n") +
        `fronts:\n  - { name: web1, address: "127.0.0.1:7101" }\n`,
    );
    const controller = path.join(binDir, "quick-migrate");
    const agent = path.join(binDir, "quick-migrate-agent");
    // one unmeasured run of each warms the page cache
    await timeCommand(controller, ["status", "-c", controllerConfig]);
    const bare: number[] = [];
    const status: number[] = [];
    const version: number[] = [];
    for (let i = 0; i < runs; i++) {
      bare.push(await timeCommand(process.execPath, ["-e", "0"]));
      status.push(await timeCommand(controller, ["status", "-c", controllerConfig]));
      version.push(await timeCommand(controller, ["--version"]));
    }
    await runAgent(agent, dir, tls, 0);
    const agentRuns: AgentRun[] = [];
    for (let i = 0; i < runs; i++) agentRuns.push(await runAgent(agent, dir, tls, idleMs));
    return {
      status: spread(status),
      version: spread(version),
      agentListening: spread(agentRuns.map((r) => r.listeningMs)),
      agentServing: spread(agentRuns.map((r) => r.servingMs)),
      agentIdleRssKb: spread(agentRuns.map((r) => r.idleRssKb)),
      tls: useTls,
      bareNode: spread(bare),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The figures as table lines. */
export function formatStartup(f: StartupFigures): string[] {
  const row = (label: string, s: Spread, unit: string) => `${label.padEnd(42)} ${String(s.median).padStart(6)} ${unit}  (min ${s.min}, max ${s.max}, ${s.runs} runs)`;
  return [
    row("node -e 0", f.bareNode, "ms"),
    row("quick-migrate --version", f.version, "ms"),
    row("quick-migrate status", f.status, "ms"),
    row(`agent start → "agent listening" (${f.tls ? "TLS" : "plaintext"})`, f.agentListening, "ms"),
    row(`agent start → health SERVING (${f.tls ? "TLS" : "plaintext"})`, f.agentServing, "ms"),
    row("agent resident memory, idle", { ...f.agentIdleRssKb, median: Math.round(f.agentIdleRssKb.median / 1024), min: Math.round(f.agentIdleRssKb.min / 1024), max: Math.round(f.agentIdleRssKb.max / 1024) }, "MB"),
  ];
}
