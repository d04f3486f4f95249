// The health checks' verdict and lines (Monitoring Plugins guidelines): the status line, its perfdata,
// the exit code for every case the issue names, and the certificates' expiry.
import { describe, expect, it } from "vitest";
import { type HealthProbe, PLUGIN_EXIT, failureText, judge, parseMs, render, thresholdsProblem, unknown } from "../../shared/monitoringPlugin.js";

const NOW = Date.parse("2030-01-01T00:00:00Z");
const T = { warnMs: 500, critMs: 2000 };
const inDays = (days: number): string => new Date(NOW + days * 86_400_000 + 3_600_000).toISOString().replace(/\.\d{3}Z$/, "Z");

const up = (name: string, latencyMs = 2.14, extra: Partial<HealthProbe> = {}): HealthProbe => ({
  name,
  address: `10.0.0.1:7101`,
  latencyMs,
  status: "SERVING",
  certificate: { validTo: inDays(400) },
  ...extra,
});

describe("judge", () => {
  it("all up: OK, `n/n agents serving`, one perfdata item per agent", () => {
    const r = judge("QUICK-MIGRATE", [up("web1"), up("web2", 3), up("web3", 10.06)], [{ what: "controller certificate (hostmaster)", validTo: inDays(400) }], T, NOW);
    expect(r.state).toBe("OK");
    expect(r.exitCode).toBe(0);
    expect(r.summary).toBe("QUICK-MIGRATE OK - 3/3 agents serving | 'web1'=2.1ms;500;2000;0; 'web2'=3.0ms;500;2000;0; 'web3'=10.1ms;500;2000;0;");
    expect(r.details).toEqual([
      `web1 (10.0.0.1:7101): SERVING in 2.1 ms; certificate valid until ${inDays(400)} (400 days)`,
      `web2 (10.0.0.1:7101): SERVING in 3.0 ms; certificate valid until ${inDays(400)} (400 days)`,
      `web3 (10.0.0.1:7101): SERVING in 10.1 ms; certificate valid until ${inDays(400)} (400 days)`,
      `controller certificate (hostmaster): valid until ${inDays(400)} (400 days)`,
    ]);
  });

  it("one down: CRITICAL naming it, its perfdata value U", () => {
    const down = { name: "web2", address: "10.0.0.2:7101", latencyMs: 1.2, error: { code: "UNAVAILABLE", details: "No connection established. Last error: Error: connect ECONNREFUSED 10.0.0.2:7101. Resolution note: " } };
    const r = judge("QUICK-MIGRATE", [up("web1"), down, up("web3")], [], T, NOW);
    expect(r.exitCode).toBe(2);
    expect(r.summary).toBe(
      "QUICK-MIGRATE CRITICAL - web2 down (connect ECONNREFUSED 10.0.0.2:7101); 2/3 agents serving | 'web1'=2.1ms;500;2000;0; 'web2'=U;500;2000;0; 'web3'=2.1ms;500;2000;0;",
    );
    expect(r.hosts[1]).toMatchObject({ name: "web2", state: "CRITICAL", status: "DOWN", latencyMs: null });
  });

  it("no answer within --crit-ms: CRITICAL, `no answer within N ms`", () => {
    const r = judge("QUICK-MIGRATE", [{ name: "web1", address: "a:1", latencyMs: 2000.3, error: { code: "DEADLINE_EXCEEDED", details: "Deadline exceeded after 2.001s" } }], [], T, NOW);
    expect(r.summary).toMatch(/^QUICK-MIGRATE CRITICAL - web1 down \(no answer within 2000 ms\); 0\/1 agents serving \| 'web1'=U;500;2000;0;$/);
  });

  it("one slow: WARNING naming it and how slow", () => {
    const r = judge("QUICK-MIGRATE", [up("web1"), up("web2", 812.34)], [], T, NOW);
    expect(r.exitCode).toBe(1);
    expect(r.summary).toBe("QUICK-MIGRATE WARNING - web2 slow (812.3 ms > 500 ms); 2/2 agents serving | 'web1'=2.1ms;500;2000;0; 'web2'=812.3ms;500;2000;0;");
  });

  it("one NOT_SERVING: CRITICAL naming it; its latency is still perfdata", () => {
    const r = judge("QUICK-MIGRATE", [up("web1", 5, { status: "NOT_SERVING" }), up("web2")], [], T, NOW);
    expect(r.exitCode).toBe(2);
    expect(r.summary).toBe("QUICK-MIGRATE CRITICAL - web1 NOT_SERVING; 1/2 agents serving | 'web1'=5.0ms;500;2000;0; 'web2'=2.1ms;500;2000;0;");
  });

  it("CRITICAL problems come first, then the warnings; the worst state wins", () => {
    const r = judge("QUICK-MIGRATE", [up("web1", 900), up("web2", 3, { status: "NOT_SERVING" })], [], T, NOW);
    expect(r.state).toBe("CRITICAL");
    expect(r.summary).toMatch(/^QUICK-MIGRATE CRITICAL - web2 NOT_SERVING, web1 slow \(900\.0 ms > 500 ms\); 1\/2 agents serving \| /);
  });

  it("a certificate expiring within 14 days is CRITICAL, within 30 WARNING, expired CRITICAL; the controller's own too", () => {
    const cert = (days: number) => up("web1", 2, { certificate: { validTo: inDays(days) } });
    expect(judge("Q", [cert(13)], [], T, NOW).summary).toMatch(new RegExp(`^Q CRITICAL - web1 certificate expires ${inDays(13).slice(0, 10)} \\(in 13 days\\); 1/1 agents serving`));
    expect(judge("Q", [cert(14)], [], T, NOW).state).toBe("WARNING");
    expect(judge("Q", [cert(29)], [], T, NOW).summary).toMatch(/^Q WARNING - web1 certificate expires .* \(in 29 days\); /);
    expect(judge("Q", [cert(30)], [], T, NOW).state).toBe("OK");
    expect(judge("Q", [cert(-2)], [], T, NOW).summary).toMatch(/^Q CRITICAL - web1 certificate expired \d{4}-\d\d-\d\d; /);
    const own = judge("Q", [up("web1")], [{ what: "controller certificate (hostmaster)", validTo: inDays(3) }], T, NOW);
    expect(own.summary).toMatch(/^Q CRITICAL - controller certificate \(hostmaster\) expires .* \(in 3 days\); 1\/1 agents serving \| /);
  });

  it("plaintext (no certificate seen): no certificate check", () => {
    const r = judge("Q", [{ name: "web1", address: "127.0.0.1:1", latencyMs: 1, status: "SERVING" }], [], T, NOW);
    expect(r.state).toBe("OK");
    expect(r.details).toEqual(["web1 (127.0.0.1:1): SERVING in 1.0 ms"]);
  });

  it("quotes labels, doubling a quote inside one", () => {
    expect(judge("Q", [up("it's")], [], T, NOW).summary).toContain("'it''s'=2.1ms;500;2000;0;");
  });
});

describe("the rest of the plugin", () => {
  it("UNKNOWN: exit 3, a config's problems on the one status line", () => {
    const r = unknown("QUICK-MIGRATE", "/etc/qm.yaml: fronts: required\n/etc/qm.yaml: root: required");
    expect(r).toMatchObject({ state: "UNKNOWN", exitCode: 3, summary: "QUICK-MIGRATE UNKNOWN - /etc/qm.yaml: fronts: required; /etc/qm.yaml: root: required" });
    expect(render(r, false)).toBe(`${r.summary}\n`);
  });

  it("--json: one JSON object with the same state, exit code and line", () => {
    const r = judge("QUICK-MIGRATE", [up("web1")], [], T, NOW);
    const out = render(r, true);
    expect(out.trim().split("\n")).toHaveLength(1);
    expect(JSON.parse(out)).toMatchObject({ service: "QUICK-MIGRATE", state: "OK", exitCode: 0, summary: r.summary, hosts: [{ name: "web1", status: "SERVING", latencyMs: 2.1 }] });
  });

  it("exit codes are the guidelines'", () => {
    expect(PLUGIN_EXIT).toEqual({ OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 });
  });

  it("failureText keeps the cause, not grpc-js's wrapping", () => {
    expect(failureText({ code: "UNAVAILABLE", details: "No connection established. Last error: Error: certificate has expired (12:00:01.123)" }, 2000)).toBe("certificate has expired");
    expect(failureText({ code: "UNAVAILABLE", details: "No connection established. Last error: Failed to connect (2026-11-26T05:27:34.192Z). Resolution note: " }, 2000)).toBe(
      "Failed to connect",
    );
    expect(failureText({ code: "UNAVAILABLE", details: "" }, 2000)).toBe("UNAVAILABLE");
    expect(failureText({ code: "INTERNAL", details: "x".repeat(300) }, 2000)).toHaveLength(120);
  });

  it("--warn-ms and --crit-ms are whole milliseconds, warn not above crit", () => {
    expect(parseMs("250")).toBe(250);
    for (const bad of ["0", "-1", "1.5", "abc", ""]) expect(() => parseMs(bad), bad).toThrow(/whole milliseconds/);
    expect(thresholdsProblem({ warnMs: 3000, critMs: 2000 })).toBe("--warn-ms 3000 is above --crit-ms 2000");
    expect(thresholdsProblem({ warnMs: 2000, critMs: 2000 })).toBeUndefined();
  });
});
