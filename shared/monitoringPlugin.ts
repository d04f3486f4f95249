// The health checks' verdict and output, as the Monitoring Plugins guidelines want them (Nagios,
// Icinga): one status line `SERVICE STATE - text | perfdata`, one line per agent after it, exit 0 OK,
// 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Shared by `quick-migrate health` (every front) and
// `quick-migrate-agent health` (the local agent). Pure: the probes are healthProbe.ts's.
import { InvalidArgumentError } from "commander";

export type PluginState = "OK" | "WARNING" | "CRITICAL" | "UNKNOWN";

export const PLUGIN_EXIT: Readonly<Record<PluginState, number>> = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 };

const SEVERITY: Readonly<Record<PluginState, number>> = { OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3 };

/** A certificate that expires within this many days makes the check CRITICAL; within the other, WARNING. */
export const CERT_CRITICAL_DAYS = 14;
export const CERT_WARNING_DAYS = 30;

export interface Thresholds {
  /** an answer slower than this is a WARNING */
  readonly warnMs: number;
  /** the deadline of each check: no answer within it is CRITICAL */
  readonly critMs: number;
}

/** What probing one agent's health service found. */
export interface HealthProbe {
  readonly name: string;
  readonly address: string;
  /** from the start of the connection to the answer (or the failure) */
  readonly latencyMs: number;
  /** the status answered: SERVING, NOT_SERVING, ... */
  readonly status?: string;
  /** how the call failed instead: the gRPC status name and its details */
  readonly error?: { readonly code: string; readonly details: string };
  /** the certificate the agent presented (absent in plaintext, or when no handshake was made) */
  readonly certificate?: CertificateSeen;
}

export interface CertificateSeen {
  /** when it stops being valid (ISO 8601) */
  readonly validTo: string;
}

/** A certificate of this side's own, looked at in its file (the controller's client certificate). */
export interface OwnCertificate extends CertificateSeen {
  /** names it in the output: "controller certificate (hostmaster)" */
  readonly what: string;
}

export interface Problem {
  readonly state: PluginState;
  readonly text: string;
}

export interface HostReport {
  readonly name: string;
  readonly address: string;
  readonly state: PluginState;
  readonly status: string;
  readonly latencyMs: number | null;
  readonly error?: { readonly code: string; readonly details: string };
  readonly certificate?: { readonly validTo: string; readonly daysLeft: number };
  readonly problems: readonly string[];
}

export interface PluginReport {
  readonly service: string;
  readonly state: PluginState;
  readonly exitCode: number;
  /** the first line: `SERVICE STATE - text | perfdata` */
  readonly summary: string;
  /** the lines after it, one per agent and per own certificate */
  readonly details: readonly string[];
  readonly hosts: readonly HostReport[];
  readonly certificates: ReadonlyArray<OwnCertificate & { readonly daysLeft: number }>;
}

const DAY_MS = 24 * 60 * 60 * 1000;

const daysLeft = (validTo: string, now: number): number => Math.floor((Date.parse(validTo) - now) / DAY_MS);

const day = (iso: string): string => iso.slice(0, 10);

/** The problem of a certificate that expires soon, or none. */
function certificateProblem(what: string, validTo: string, now: number): Problem | undefined {
  const left = daysLeft(validTo, now);
  const text = left < 0 ? `${what} expired ${day(validTo)}` : `${what} expires ${day(validTo)} (in ${left} days)`;
  if (left < CERT_CRITICAL_DAYS) return { state: "CRITICAL", text };
  if (left < CERT_WARNING_DAYS) return { state: "WARNING", text };
  return undefined;
}

/** A failed call in a few words: what a monitoring screen has room for. */
export function failureText(error: { code: string; details: string }, critMs: number): string {
  if (error.code === "DEADLINE_EXCEEDED") return `no answer within ${critMs} ms`;
  const details = error.details
    .replace(/^No connection established\.\s*Last error:\s*/i, "")
    .replace(/\s*Resolution note:.*$/, "")
    .replace(/\s*\((\d{4}-\d\d-\d\dT)?\d\d:\d\d:\d\d(\.\d+)?Z?\)/, "")
    .replace(/^Error:\s*/, "")
    .trim()
    .replace(/\.$/, "");
  const text = details === "" ? error.code : details;
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

const ms = (v: number): string => v.toFixed(1);

/** Labels are quoted; a quote inside one is doubled (guidelines, perfdata). */
const label = (name: string): string => `'${name.replace(/'/g, "''")}'`;

function worst(states: readonly PluginState[]): PluginState {
  return states.reduce<PluginState>((w, s) => (SEVERITY[s] > SEVERITY[w] ? s : w), "OK");
}

/**
 * The verdict on every probe, and the plugin's output. CRITICAL: an agent down, refusing, or not
 * SERVING, or a certificate expiring within CERT_CRITICAL_DAYS; WARNING: an answer slower than warnMs
 * or a certificate expiring within CERT_WARNING_DAYS; OK otherwise. The text lists the problems,
 * CRITICAL first, then how many agents are serving.
 */
export function judge(service: string, probes: readonly HealthProbe[], own: readonly OwnCertificate[], t: Thresholds, now: number): PluginReport {
  const problems: Problem[] = [];
  const hosts = probes.map((p): HostReport => {
    const mine: Problem[] = [];
    if (p.error) mine.push({ state: "CRITICAL", text: `${p.name} down (${failureText(p.error, t.critMs)})` });
    else if (p.status !== "SERVING") mine.push({ state: "CRITICAL", text: `${p.name} ${p.status ?? "UNKNOWN"}` });
    else if (p.latencyMs > t.warnMs) mine.push({ state: "WARNING", text: `${p.name} slow (${ms(p.latencyMs)} ms > ${t.warnMs} ms)` });
    const cert = p.certificate ? certificateProblem(`${p.name} certificate`, p.certificate.validTo, now) : undefined;
    if (cert) mine.push(cert);
    problems.push(...mine);
    return {
      name: p.name,
      address: p.address,
      state: worst(mine.map((m) => m.state)),
      status: p.error ? "DOWN" : (p.status ?? "UNKNOWN"),
      latencyMs: p.error ? null : Math.round(p.latencyMs * 10) / 10,
      ...(p.error ? { error: p.error } : {}),
      ...(p.certificate ? { certificate: { validTo: p.certificate.validTo, daysLeft: daysLeft(p.certificate.validTo, now) } } : {}),
      problems: mine.map((m) => m.text),
    };
  });
  const certificates = own.map((c) => ({ ...c, daysLeft: daysLeft(c.validTo, now) }));
  for (const c of own) {
    const problem = certificateProblem(c.what, c.validTo, now);
    if (problem) problems.push(problem);
  }
  const state = worst(problems.map((p) => p.state));
  const serving = hosts.filter((h) => h.status === "SERVING").length;
  const ordered = [...problems.filter((p) => p.state === "CRITICAL"), ...problems.filter((p) => p.state !== "CRITICAL")];
  const text = [ordered.map((p) => p.text).join(", "), `${serving}/${hosts.length} agents serving`].filter((x) => x !== "").join("; ");
  const perfdata = hosts.map((h) => `${label(h.name)}=${h.latencyMs === null ? "U" : `${ms(h.latencyMs)}ms`};${t.warnMs};${t.critMs};0;`).join(" ");
  const details = [
    ...hosts.map((h) => {
      const answer = h.error ? `down: ${failureText(h.error, t.critMs)}` : `${h.status} in ${ms(h.latencyMs ?? 0)} ms`;
      const cert = h.certificate ? `; certificate valid until ${h.certificate.validTo} (${h.certificate.daysLeft} days)` : "";
      return `${h.name} (${h.address}): ${answer}${cert}`;
    }),
    ...certificates.map((c) => `${c.what}: valid until ${c.validTo} (${c.daysLeft} days)`),
  ];
  return {
    service,
    state,
    exitCode: PLUGIN_EXIT[state],
    summary: `${service} ${state} - ${text}${perfdata === "" ? "" : ` | ${perfdata}`}`,
    details,
    hosts,
    certificates,
  };
}

/** The report of a check that could not be made (bad arguments, a config that does not load). */
export function unknown(service: string, message: string): PluginReport {
  return { service, state: "UNKNOWN", exitCode: PLUGIN_EXIT.UNKNOWN, summary: `${service} UNKNOWN - ${message.split("\n").join("; ")}`, details: [], hosts: [], certificates: [] };
}

/** What the plugin prints: its lines, or one JSON object. */
export function render(report: PluginReport, json: boolean): string {
  if (json) {
    const { service, state, exitCode, summary, hosts, certificates } = report;
    return `${JSON.stringify({ service, state, exitCode, summary, hosts, certificates })}\n`;
  }
  return `${[report.summary, ...report.details].join("\n")}\n`;
}

/** A command-line error of a plugin command: reported as UNKNOWN (exit 3), not as the CLI's usage error. */
export class PluginUsageError extends Error {
  override readonly name = "PluginUsageError";
}

/**
 * Ends the process on a plugin command's usage error: UNKNOWN (exit 3), the reason on the first line and,
 * unless `--json` is on the command line, the command's usage line after it.
 */
export function exitOnPluginUsageError(service: string, err: PluginUsageError, usage: string): never {
  const report = unknown(service, err.message);
  const json = process.argv.includes("--json");
  process.stdout.write(`${render(report, json)}${json ? "" : `${usage}\n`}`);
  process.exit(report.exitCode);
}

/** `--warn-ms` and `--crit-ms`: whole milliseconds, at least 1 (commander's argument parser: it names the option). */
export function parseMs(value: string): number {
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new InvalidArgumentError("expected whole milliseconds, 1 or more.");
  return Number(value);
}

/** Why the thresholds cannot be used together, or undefined. */
export function thresholdsProblem(t: Thresholds): string | undefined {
  return t.warnMs > t.critMs ? `--warn-ms ${t.warnMs} is above --crit-ms ${t.critMs}` : undefined;
}
