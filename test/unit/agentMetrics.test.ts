// The agent's Prometheus figures and their HTTP endpoint, in process: names and labels, what a call's end
// counts, the gauges read at scrape time, the config that turns them on, and GET /metrics only.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CallAudit } from "../../agent/audit.js";
import { loadAgentConfig } from "../../agent/config.js";
import { AgentMetrics } from "../../agent/metrics.js";
import { MetricsEndpoint } from "../../agent/metricsServer.js";
import { Registry } from "../../agent/registry.js";
import { QmError } from "../../shared/errors.js";
import { createRootLogger } from "../../shared/logger.js";
import { samples } from "../helpers/exposition.js";

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-metrics-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const quiet = createRootLogger("test", "fatal", { write: () => undefined });


function metrics(over: { inFlight?: number; notAfter?: Date | "plaintext" } = {}): AgentMetrics {
  const notAfter = over.notAfter ?? new Date("2030-01-02T03:04:05Z");
  return new AgentMetrics({
    inFlight: () => over.inFlight ?? 0,
    records: new Registry(path.join(tmp, "state")),
    ...(notAfter === "plaintext" ? {} : { certificateNotAfter: () => notAfter }),
  });
}

describe("AgentMetrics", () => {
  it("every name is prefixed quick_migrate_agent_, prom-client's process metrics included", async () => {
    const text = (await metrics().scrape()).body;
    const names = new Set(text.split("\n").filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2] ?? ""));
    expect(names.size).toBeGreaterThan(10);
    for (const n of names) expect(n).toMatch(/^quick_migrate_agent_/);
    expect(names).toContain("quick_migrate_agent_process_cpu_user_seconds_total");
    expect(names).toContain("quick_migrate_agent_nodejs_eventloop_lag_seconds");
  });

  it("counts each call's end once through the audit: by op and result, refusals by reason, durations of calls that ran", async () => {
    const m = metrics();
    const audit = new CallAudit(quiet, m);
    const ok = { op: "apply", client: "hostmaster", peer: "127.0.0.1:1" };
    audit.began(ok);
    audit.end(ok);
    audit.end({ op: "apply", client: "intruder", peer: "127.0.0.1:2" }, new QmError("NOT_ALLOWED", "no"));
    audit.end({ op: "hello", client: "hostmaster", peer: "127.0.0.1:3" }, new QmError("BUSY", "busy"));
    const failed = { op: "rsync", client: "hostmaster", peer: "127.0.0.1:4" };
    audit.began(failed);
    audit.end(failed, new QmError("RSYNC_FAILED", "exit 23"));
    audit.handshake("127.0.0.1:5", "no client certificate", {});
    const s = samples((await m.scrape()).body);
    expect(s.get('quick_migrate_agent_operations_total{op="apply",result="ok"}')).toBe(1);
    expect(s.get('quick_migrate_agent_operations_total{op="apply",result="refused"}')).toBe(1);
    expect(s.get('quick_migrate_agent_operations_total{op="rsync",result="error"}')).toBe(1);
    expect(s.get('quick_migrate_agent_refused_total{op="apply",reason="NOT_ALLOWED"}')).toBe(1);
    expect(s.get('quick_migrate_agent_refused_total{op="hello",reason="BUSY"}')).toBe(1);
    expect(s.get('quick_migrate_agent_refused_total{op="tls-handshake",reason="NOT_ALLOWED"}')).toBe(1);
    expect(s.get('quick_migrate_agent_operation_duration_seconds_count{op="apply"}')).toBe(1);
    expect(s.get('quick_migrate_agent_operation_duration_seconds_count{op="rsync"}')).toBe(1);
    expect(s.get('quick_migrate_agent_operation_duration_seconds_count{op="hello"}'), "a refusal is not timed").toBeUndefined();
  });

  it("rsync bytes each way, from zero", async () => {
    const m = metrics();
    expect(samples((await m.scrape()).body).get('quick_migrate_agent_rsync_bytes_total{direction="in"}')).toBe(0);
    m.bytesMoved("in", 1000);
    m.bytesMoved("out", 20);
    m.bytesMoved("out", 22);
    const s = samples((await m.scrape()).body);
    expect(s.get('quick_migrate_agent_rsync_bytes_total{direction="in"}')).toBe(1000);
    expect(s.get('quick_migrate_agent_rsync_bytes_total{direction="out"}')).toBe(42);
  });

  it("reads in-flight operations, the certificate's expiry and the build at scrape time", async () => {
    const s = samples((await metrics({ inFlight: 3 }).scrape()).body);
    expect(s.get("quick_migrate_agent_operations_in_flight")).toBe(3);
    expect(s.get("quick_migrate_agent_certificate_not_after_timestamp_seconds")).toBe(Date.parse("2030-01-02T03:04:05Z") / 1000);
    const build = [...s.keys()].find((k) => k.startsWith("quick_migrate_agent_build_info"));
    expect(build).toMatch(/version="\d+\.\d+\.\d+.*",protocol="\d+",node="\d+\.\d+\.\d+"/);
    const plaintext = (await metrics({ notAfter: "plaintext" }).scrape()).body;
    expect(plaintext, "no certificate, no series").not.toContain("certificate_not_after");
  });

  it("counts parked data dirs, unfinished migrations and unreadable records from the state dir", async () => {
    const dir = path.join(tmp, "state", "migrations");
    fs.mkdirSync(dir, { recursive: true });
    const record = (id: string, ledger: object[]) => ({
      migration: { id, from: "d7", site: "a.example.com", to: "d8", newSite: "a.example.com", dataDirs: ["files", "private/files"] },
      local: false,
      registeredAt: "2026-01-01T00:00:00Z",
      ledger,
      operations: {},
    });
    fs.writeFileSync(path.join(dir, "m1.json"), JSON.stringify(record("m1", [{ dataDir: "files", kind: "directory", at: "park" }, { dataDir: "private/files", kind: "directory", at: "park" }])));
    fs.writeFileSync(path.join(dir, "m2.json"), JSON.stringify(record("m2", [{ dataDir: "files", kind: "directory", at: "old" }])));
    fs.writeFileSync(path.join(dir, "m3.json"), "{ not json");
    const s = samples((await metrics().scrape()).body);
    expect(s.get("quick_migrate_agent_parked_data_dirs")).toBe(2);
    expect(s.get("quick_migrate_agent_unfinished_migrations")).toBe(1);
    expect(s.get("quick_migrate_agent_records_unreadable")).toBe(1);
  });
});

describe("MetricsEndpoint", () => {
  it("serves GET /metrics, 404 elsewhere, 405 for another method, and stops when closed", async () => {
    const m = metrics();
    const endpoint = await MetricsEndpoint.listen("127.0.0.1:0", m, quiet);
    const url = `http://${endpoint.address}`;
    try {
      const r = await fetch(`${url}/metrics`);
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await r.text()).toContain("quick_migrate_agent_build_info");
      expect((await fetch(`${url}/metrics?x=1`)).status).toBe(200);
      expect((await fetch(`${url}/`)).status).toBe(404);
      expect((await fetch(`${url}/metrics/x`)).status).toBe(404);
      expect((await fetch(`${url}/metrics`, { method: "POST", body: "x" })).status).toBe(405);
    } finally {
      await endpoint.close();
    }
    await expect(fetch(`${url}/metrics`)).rejects.toThrow();
  });

  it("an address that cannot be bound is an error, not a silent agent without metrics", async () => {
    const first = await MetricsEndpoint.listen("127.0.0.1:0", metrics(), quiet);
    try {
      await expect(MetricsEndpoint.listen(first.address, metrics(), quiet)).rejects.toThrow(/EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});

describe("the agent's metrics config", () => {
  const base = `listen: "127.0.0.1:7101"\nroot: /tmp\nstateDir: /tmp/qm-state\ninsecure: true\n`;
  const load = (extra: string) => {
    const file = path.join(tmp, "agent.yaml");
    fs.writeFileSync(file, base + extra);
    return { file, config: loadAgentConfig(file) };
  };

  it("off when absent", async () => {
    expect((await load("").config).metrics).toBeUndefined();
  });

  it("a loopback address; allowRemote false by default", async () => {
    expect((await load('metrics: { listen: "127.0.0.1:9464" }\n').config).metrics).toEqual({ listen: "127.0.0.1:9464", allowRemote: false });
    expect((await load('metrics: { listen: "[::1]:9464" }\n').config).metrics?.listen).toBe("[::1]:9464");
  });

  it("another address only with allowRemote: true", async () => {
    const { file, config } = load('metrics: { listen: "0.0.0.0:9464" }\n');
    await expect(config).rejects.toThrow(`${file}: metrics.listen: 0.0.0.0:9464 is not a loopback address`);
    expect((await load('metrics: { listen: "10.0.0.11:9464", allowRemote: true }\n').config).metrics).toEqual({ listen: "10.0.0.11:9464", allowRemote: true });
  });

  it("unknown keys and a bad address are refused, with the key", async () => {
    const { file, config } = load('metrics: { listen: "9464", port: 9464 }\n');
    const err = await config.then(
      () => undefined,
      (e: unknown) => e as QmError,
    );
    expect(err?.message).toContain(`${file}: metrics.listen: must be host:port`);
    expect(err?.message).toContain(`${file}: metrics: Unrecognized key`);
  });
});
