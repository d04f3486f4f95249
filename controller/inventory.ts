// `quick-migrate agents`: every front of the config, asked at once, each within its own bound: is its
// agent reachable (Hello), its versions, root and free space, its health, and the certificate it serves.
// The asking (FrontProbe) is apart from the pure table and exit code, which the unit tests take alone.
import * as grpc from "@grpc/grpc-js";
import { QmError, describeError, errorCode } from "../shared/errors.js";
import type { HelloResponse } from "../shared/generated/quickmigrate/v1/agent.js";
import { AgentConnection, type CallDeadlines, fromServiceError } from "./agentConnection.js";
import { type FrontCertificate, frontCertificate } from "./certificates.js";
import type { ControllerConfig, FrontConfig } from "./config.js";
import { HealthClientCtor } from "../shared/healthProbe.js";

/** What is asked of one front; the real one speaks gRPC and TLS, a test's answers what it is told. */
export interface FrontProbe {
  hello(): Promise<HelloResponse>;
  /** the grpc.health.v1 status of the whole agent ("" service): SERVING, NOT_SERVING, … */
  health(): Promise<string>;
  /** undefined when there is no TLS (plaintext, for development) */
  certificate(): Promise<FrontCertificate | undefined>;
  close(): void;
}

export interface Failure {
  readonly code: string;
  readonly message: string;
}

/** One front as the inventory reports it (the --json form). */
export interface FrontInventory {
  readonly name: string;
  readonly address: string;
  readonly local: boolean;
  /** its agent answered Hello */
  readonly reachable: boolean;
  readonly error?: Failure;
  readonly agentVersion?: string;
  readonly protocolVersion?: number;
  readonly hostname?: string;
  readonly rootId?: string;
  /** absent from an agent older than these fields */
  readonly root?: string;
  readonly rootFreeBytes?: number;
  readonly stateDirFreeBytes?: number;
  readonly health?: string;
  readonly healthError?: Failure;
  /** null in plaintext mode */
  readonly certificate?: { notAfter: string; daysLeft: number; subject: string; verified: boolean; problem?: string } | null;
  readonly certificateError?: Failure;
}

const failure = (err: unknown): Failure => ({ code: errorCode(err), message: describeError(err) });

const DAY_MS = 24 * 60 * 60 * 1000;

/** Asks one front everything at once; never throws: what failed is in the answer. */
export async function inventoryOf(front: Pick<FrontConfig, "name" | "address" | "local">, probe: FrontProbe, now: () => number = Date.now): Promise<FrontInventory> {
  try {
    const [hello, health, certificate] = await Promise.allSettled([probe.hello(), probe.health(), probe.certificate()]);
    const base = { name: front.name, address: front.address, local: front.local };
    const h = hello.status === "fulfilled" ? hello.value : undefined;
    return {
      ...base,
      reachable: h !== undefined,
      ...(hello.status === "rejected" ? { error: failure(hello.reason) } : {}),
      ...(h
        ? {
            agentVersion: h.agentVersion,
            protocolVersion: h.protocolVersion,
            hostname: h.hostname,
            rootId: h.rootId,
            ...(h.root ? { root: h.root } : {}),
            ...(h.rootFreeBytes === undefined ? {} : { rootFreeBytes: h.rootFreeBytes }),
            ...(h.stateDirFreeBytes === undefined ? {} : { stateDirFreeBytes: h.stateDirFreeBytes }),
          }
        : {}),
      ...(health.status === "fulfilled" ? { health: health.value } : { healthError: failure(health.reason) }),
      ...(certificate.status === "rejected"
        ? { certificateError: failure(certificate.reason) }
        : {
            certificate: certificate.value
              ? {
                  notAfter: certificate.value.notAfter.toISOString(),
                  daysLeft: Math.floor((certificate.value.notAfter.getTime() - now()) / DAY_MS),
                  subject: certificate.value.subject,
                  verified: certificate.value.verified,
                  ...(certificate.value.problem === undefined ? {} : { problem: certificate.value.problem }),
                }
              : null,
          }),
    };
  } finally {
    probe.close();
  }
}

/** 0 when every front's agent answered, 1 when one did not. */
export function inventoryExitCode(list: readonly FrontInventory[]): number {
  return list.every((f) => f.reachable) ? 0 : 1;
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function certificateColumn(f: FrontInventory): string {
  if (f.certificateError) return "?";
  if (f.certificate === null) return "(plaintext)";
  if (!f.certificate) return "-";
  const c = f.certificate;
  const when = c.daysLeft < 0 ? `expired ${-c.daysLeft} days ago` : `${c.daysLeft} days`;
  return `${c.notAfter.slice(0, 10)} (${when})${c.verified ? "" : " !"}`;
}

/** The human table, then one line per problem, then a summary. Pure. */
export function formatInventory(list: readonly FrontInventory[]): string[] {
  const header = ["FRONT", "ADDRESS", "REACHABLE", "AGENT", "PROTOCOL", "HOSTNAME", "ROOT", "ROOT FREE", "STATE FREE", "HEALTH", "CERTIFICATE EXPIRES"];
  const rows = list.map((f) => [
    f.local ? `${f.name} (local)` : f.name,
    f.address,
    f.reachable ? "yes" : "no",
    f.agentVersion ?? "-",
    f.protocolVersion === undefined ? "-" : String(f.protocolVersion),
    f.hostname ?? "-",
    f.root ?? "-",
    formatBytes(f.rootFreeBytes),
    formatBytes(f.stateDirFreeBytes),
    f.health ?? "?",
    certificateColumn(f),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ");
  const out = [line(header), ...rows.map(line)];
  for (const f of list) {
    if (f.error) out.push(`  ${f.name}: ${f.error.code}: ${f.error.message}`);
    if (f.healthError && !f.error) out.push(`  ${f.name}: health: ${f.healthError.code}: ${f.healthError.message}`);
    if (f.certificateError && !f.error) out.push(`  ${f.name}: certificate: ${f.certificateError.message}`);
    if (f.certificate && !f.certificate.verified) out.push(`  ${f.name}: certificate ${f.certificate.subject} not accepted: ${f.certificate.problem ?? "?"}`);
  }
  const down = list.filter((f) => !f.reachable).length;
  out.push(`${list.length} front${list.length === 1 ? "" : "s"}: ${list.length - down} reachable${down > 0 ? `, ${down} not` : ""}`);
  return out;
}

// ---- the real probe ----------------------------------------------------------------------------------

/**
 * Hello and health on one connection to the agent, and the certificate on a TLS connection of its
 * own; each bounded by timeouts.hello (and a connection that never comes by timeouts.unresponsive).
 */
export function realProbe(front: FrontConfig, config: ControllerConfig, credentials: grpc.ChannelCredentials, deadlines: CallDeadlines): FrontProbe {
  const connection = new AgentConnection(front, credentials, deadlines);
  const health = new HealthClientCtor(front.address, credentials, { channelOverride: connection.channel });
  const { tls } = config;
  return {
    hello: () => connection.hello(),
    health: () =>
      new Promise((resolve, reject) => {
        health.check({ service: "" }, new grpc.Metadata(), { deadline: Date.now() + deadlines.helloMs }, (err, res) => {
          if (err) reject(fromServiceError(front.name, err));
          else resolve(res?.status ?? "UNKNOWN");
        });
      }),
    certificate: async () =>
      config.insecure || !tls
        ? undefined
        : frontCertificate(front, tls, deadlines.helloMs).catch((err: unknown) => {
            throw new QmError("UNREACHABLE", `its certificate could not be read: ${describeError(err)}`, { host: front.name }, { cause: err });
          }),
    // the health client shares the connection's channel: closing the connection closes both
    close: () => connection.close(),
  };
}
