// One call of an agent's standard health service (grpc.health.v1 Check of service ""), on a connection
// of its own: how long it took from the start of the connection to the answer, what was answered, and
// the certificate the agent presented. Used by both health checks (monitoringPlugin.ts judges).
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type PeerCertificate, checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { HealthCheckResponse, HealthService, healthCheckResponse_ServingStatusToJSON } from "./generated/grpc/health/v1/health.js";
import type { HealthProbe } from "./monitoringPlugin.js";

export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/** The standard grpc.health.v1.Health client's calls (statuses come back as their names). */
export interface HealthClient extends grpc.Client {
  check(
    req: { service: string },
    md: grpc.Metadata,
    opts: Partial<grpc.CallOptions>,
    cb: (err: grpc.ServiceError | null, res?: { status: HealthStatus }) => void,
  ): grpc.ClientUnaryCall;
  watch(req: { service: string }, md: grpc.Metadata, opts: Partial<grpc.CallOptions>): grpc.ClientReadableStream<{ status: HealthStatus }>;
}

/** A method of the health service whose answers carry the status by its name (SERVING…), not its number. */
function statusByName<Req>(method: grpc.MethodDefinition<Req, HealthCheckResponse>) {
  return { ...method, responseDeserialize: (bytes: Buffer) => ({ status: healthCheckResponse_ServingStatusToJSON(HealthCheckResponse.decode(bytes).status) }) };
}

/**
 * The health client, from the code generated from the standard health proto (the agent serves it from
 * the same): used by both health checks, the inventory and the tests. Statuses come back as names, as
 * grpc-health-check's client gives them; unlike it, no .proto is parsed when it is loaded.
 */
export const HealthClientCtor = grpc.makeGenericClientConstructor(
  { check: statusByName(HealthService.check), watch: statusByName(HealthService.watch) } as unknown as grpc.ServiceDefinition,
  "Health",
) as unknown as new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => HealthClient;

export interface ProbeTarget {
  /** names the agent in the output, and is the name its certificate must carry */
  readonly name: string;
  readonly address: string;
  /** PEM contents: the CA to check the agent with, and the client certificate to present; absent: plaintext */
  readonly tls?: { readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer };
}

/** Reads the PEM files of a TLS config (`tls.ca`, `tls.cert`, `tls.key`); a file that cannot be read is named, with `hint` after. */
export async function readTlsFiles(files: { readonly ca: string; readonly cert: string; readonly key: string }, hint = ""): Promise<NonNullable<ProbeTarget["tls"]>> {
  const read = (key: "ca" | "cert" | "key") =>
    readFile(files[key]).catch((err: unknown) => {
      throw new Error(`tls.${key} ${files[key]}: cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}${hint}`);
    });
  const [ca, cert, key] = await Promise.all([read("ca"), read("cert"), read("key")]);
  return { ca, cert, key };
}

/** A certificate's end of validity as ISO 8601. */
export function validToIso(cert: { validTo: string } | { valid_to: string }): string {
  const text = "validTo" in cert ? cert.validTo : cert.valid_to;
  return new Date(Date.parse(text)).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The end of validity of the certificate in a PEM file's content. */
export function certificateValidTo(pem: Buffer): string {
  return validToIso(new X509Certificate(pem));
}

/** Checks the agent's health; `deadlineMs` bounds the whole of it, connection included. Never throws. */
export function probeHealth(target: ProbeTarget, deadlineMs: number): Promise<HealthProbe> {
  let served: PeerCertificate | undefined;
  const credentials = target.tls
    ? grpc.credentials.createSsl(target.tls.ca, target.tls.key, target.tls.cert, {
        // the same check of the name as always, with a look at the certificate on the way
        checkServerIdentity: (host, cert) => {
          served = cert;
          return checkServerIdentity(host, cert);
        },
      })
    : grpc.credentials.createInsecure();
  const client = new HealthClientCtor(target.address, credentials, {
    // the agent's certificate must name it as configured, whatever its address (as for operations)
    "grpc.ssl_target_name_override": target.name,
    "grpc.default_authority": target.name,
  });
  const started = performance.now();
  return new Promise((resolve) => {
    client.check({ service: "" }, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
      const latencyMs = performance.now() - started;
      client.close();
      const certificate = served ? { certificate: { validTo: validToIso(served) } } : {};
      const base = { name: target.name, address: target.address, latencyMs, ...certificate };
      if (err) resolve({ ...base, error: { code: grpc.status[err.code] ?? String(err.code), details: err.details } });
      else resolve({ ...base, status: res?.status ?? "UNKNOWN" });
    });
  });
}
