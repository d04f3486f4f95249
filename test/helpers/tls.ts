// Test PKIs made by the real deploy/tls/make-certs.sh, and clients that present what a test wants:
// no TLS, TLS without a client certificate, a certificate from another CA, a CN that is not allowed.
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { execa } from "execa";
import { type HealthStatus, HealthClientCtor } from "../../shared/healthProbe.js";
import { repoRoot } from "../../scripts/lib/cluster.js";
import { AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";

export const MAKE_CERTS = path.join(repoRoot(), "deploy", "tls", "make-certs.sh");

export interface CertPair {
  /** the certificate's CN */
  readonly name: string;
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  /** the folder make-certs.sh filled: ca.pem, ca-key.pem, controller.pem, <front>.pem, ... */
  readonly dir: string;
  readonly ca: string;
  readonly caKey: string;
  /** controller.pem: a client certificate with CN = the controller's name */
  readonly controller: CertPair;
  /** one server certificate per front (SAN DNS:<name>, plus the address when given) */
  readonly fronts: Readonly<Record<string, CertPair>>;
  /** client certificates signed by the CA for `extraClients` */
  readonly clients: Readonly<Record<string, CertPair>>;
  /** a client certificate signed by the CA whose CN ("intruder") no agent allows */
  readonly notAllowed: CertPair;
  /** an independent CA and a client certificate it signed, with the controller's CN */
  readonly otherCa: { readonly dir: string; readonly ca: string; readonly client: CertPair };
}

export interface TestPkiOptions {
  /** the controller's CN; default "hostmaster" */
  controller?: string;
  fronts: Array<{ name: string; address?: string }>;
  /** more client certificates signed by the CA, CN = each name */
  extraClients?: string[];
}

export const NOT_ALLOWED_CN = "intruder";

/** Runs make-certs.sh with `args`; throws with its output when it fails. Returns its stdout. */
export async function makeCerts(args: readonly string[]): Promise<string> {
  const r = await execa("bash", [MAKE_CERTS, ...args], { reject: false, stdin: "ignore" });
  if (r.exitCode !== 0) throw new Error(`make-certs.sh ${args.join(" ")} exited ${String(r.exitCode)}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const pair = (dir: string, base: string, name = base): CertPair => ({ name, cert: path.join(dir, `${base}.pem`), key: path.join(dir, `${base}-key.pem`) });

/** A PKI in `dir` (created) for the given fronts, plus an "other CA" in `dir`-other-ca. */
export async function makeTestPki(dir: string, opts: TestPkiOptions): Promise<TestPki> {
  const controller = opts.controller ?? "hostmaster";
  const extra = opts.extraClients ?? [];
  await makeCerts([dir, controller, ...opts.fronts.map((f) => (f.address === undefined ? f.name : `${f.name}=${f.address}`))]);
  await makeCerts(["--client-only", dir, NOT_ALLOWED_CN, ...extra]);
  // the same controller CN, but from a CA no agent trusts
  const otherDir = `${dir.replace(/\/+$/, "")}-other-ca`;
  await makeCerts([otherDir, controller]);
  return {
    dir,
    ca: path.join(dir, "ca.pem"),
    caKey: path.join(dir, "ca-key.pem"),
    controller: pair(dir, "controller", controller),
    fronts: Object.fromEntries(opts.fronts.map((f) => [f.name, pair(dir, f.name)])),
    clients: Object.fromEntries(extra.map((c) => [c, pair(dir, c)])),
    notAllowed: pair(dir, NOT_ALLOWED_CN),
    otherCa: { dir: otherDir, ca: path.join(otherDir, "ca.pem"), client: pair(otherDir, "controller", controller) },
  };
}

/**
 * A new certificate and key for `front`, signed by the PKI's CA, made in a fresh folder `into` (not
 * yet installed: see installPair).
 */
export async function renewFront(pki: TestPki, front: string, into: string, address?: string): Promise<CertPair> {
  await makeCerts(["--ca-dir", pki.dir, into, pki.controller.name, address === undefined ? front : `${front}=${address}`]);
  return pair(into, front);
}

/** Puts a new pair in place of an old one as an operator would: copy next to it, then rename over it. */
export function installPair(from: CertPair, to: CertPair): void {
  for (const what of ["key", "cert"] as const) {
    const tmp = `${to[what]}.new`;
    fs.copyFileSync(from[what], tmp);
    keepOwner(to[what], tmp);
    fs.renameSync(tmp, to[what]);
  }
}

/** Writes a file by rename, so that a watcher never sees it half-written. */
export function replaceFile(file: string, content: string | Buffer): void {
  const tmp = `${file}.new`;
  fs.writeFileSync(tmp, content);
  keepOwner(file, tmp);
  fs.renameSync(tmp, file);
}

/** The replacement gets the replaced file's owner (an agent running as its own user must still read it). */
function keepOwner(replaced: string, replacement: string): void {
  const st = fs.statSync(replaced, { throwIfNoEntry: false });
  if (st) fs.chownSync(replacement, st.uid, st.gid);
}

// ---- clients -------------------------------------------------------------------------------------

/** Client TLS: the CA to check the agent with, and optionally a client certificate. */
export function sslCredentials(ca: string, client?: CertPair): grpc.ChannelCredentials {
  if (client === undefined) return grpc.credentials.createSsl(fs.readFileSync(ca));
  return grpc.credentials.createSsl(fs.readFileSync(ca), fs.readFileSync(client.key), fs.readFileSync(client.cert));
}

/** Channel options that check the agent's certificate against `name`, whatever address is dialled (as the controller does). */
export function targetName(name: string): grpc.ChannelOptions {
  return { "grpc.ssl_target_name_override": name, "grpc.default_authority": name };
}

export function agentClient(address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}): AgentClient {
  return new AgentClient(address, credentials, options);
}


export type { HealthStatus };

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: grpc.status; details: string };

/** Health/Check for `service` ("" = the whole agent). */
export function healthCheck(address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}, service = ""): Promise<Outcome<HealthStatus>> {
  const client = new HealthClientCtor(address, credentials, options);
  return new Promise((resolve) => {
    client.check({ service }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => {
      client.close();
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res?.status ?? "UNKNOWN" });
    });
  });
}

export interface HealthWatch {
  /** the first status the agent sent, or how the call ended without one */
  readonly first: Promise<Outcome<HealthStatus>>;
  /** every status the agent sent so far, in order */
  readonly seen: readonly HealthStatus[];
  /** how the call ended */
  readonly ended: Promise<{ code: grpc.status; details: string }>;
  /** cancels the call and closes its client (its own connection) */
  cancel(): void;
}

/** Opens a Health/Watch stream for `service` on a client (and connection) of its own. */
export function healthWatch(address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}, service = ""): HealthWatch {
  const client = new HealthClientCtor(address, credentials, options);
  const call = client.watch({ service }, new grpc.Metadata(), {});
  let error: grpc.ServiceError | undefined;
  const ended = new Promise<{ code: grpc.status; details: string }>((resolve) => {
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("status", (st: grpc.StatusObject) => setImmediate(() => resolve({ code: error?.code ?? st.code, details: error?.details ?? st.details })));
  });
  const seen: HealthStatus[] = [];
  call.on("data", (res: { status: HealthStatus }) => seen.push(res.status));
  const first = new Promise<Outcome<HealthStatus>>((resolve) => {
    call.once("data", (res: { status: HealthStatus }) => resolve({ ok: true, value: res.status }));
    void ended.then((e) => resolve({ ok: false, code: e.code, details: e.details }));
  });
  return {
    first,
    seen,
    ended,
    cancel: () => {
      call.cancel();
      client.close();
    },
  };
}

/** The certificate an agent presents to a new TLS connection (node:tls directly, not gRPC). */
export function peerCertificate(address: string, ca: string, client: CertPair, servername: string): Promise<tls.PeerCertificate> {
  const port = Number(/:(\d+)$/.exec(address)?.[1]);
  const host = address.replace(/:\d+$/, "");
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      servername,
      ca: fs.readFileSync(ca),
      cert: fs.readFileSync(client.cert),
      key: fs.readFileSync(client.key),
      ALPNProtocols: ["h2"],
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no TLS handshake with ${address} in 10 s`)));
    socket.once("secureConnect", () => {
      const cert = socket.getPeerCertificate();
      socket.destroy();
      resolve(cert);
    });
    socket.once("error", reject);
  });
}

/** The SHA-256 fingerprint of a PEM certificate file, in the form node:tls reports (`AB:CD:...`). */
export function fingerprintOf(certFile: string): string {
  return new X509Certificate(fs.readFileSync(certFile)).fingerprint256;
}
