// The agent's TLS material, watched with chokidar: a replaced certificate, key or CA takes effect for
// new connections without a restart (in-flight calls keep their connection). A new file that does not
// parse, or a key that does not match its certificate, or a certificate the CA did not sign, is
// rejected with a log line and the previous material stays in force.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { experimental } from "@grpc/grpc-js";
import { type FSWatcher, watch } from "chokidar";
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";

type CertificateProvider = experimental.CertificateProvider;
type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export interface TlsPaths {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface TlsMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  /** the certificate's serial number, for logs */
  readonly serial: string;
  /** when the certificate expires (its notAfter), for the metrics */
  readonly notAfter: Date;
}

/** Reads and checks the three files; throws CONFIG_INVALID naming the file that is wrong. */
export async function loadTlsMaterial(paths: TlsPaths): Promise<TlsMaterial> {
  const read = async (what: keyof TlsPaths) => {
    try {
      return await readFile(paths[what]);
    } catch (err) {
      throw new QmError("CONFIG_INVALID", `tls.${what} ${paths[what]}: cannot read: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`, { path: paths[what] });
    }
  };
  const [ca, cert, key] = await Promise.all([read("ca"), read("cert"), read("key")]);
  const parse = <T>(what: keyof TlsPaths, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw new QmError("CONFIG_INVALID", `tls.${what} ${paths[what]}: not a valid PEM ${what === "key" ? "private key" : "certificate"}: ${describeError(err)}`, { path: paths[what] });
    }
  };
  const caCert = parse("ca", () => new X509Certificate(ca));
  const x509 = parse("cert", () => new X509Certificate(cert));
  const privateKey = parse("key", () => createPrivateKey(key));
  if (!x509.checkPrivateKey(privateKey)) {
    throw new QmError("CONFIG_INVALID", `tls.key ${paths.key} does not match the certificate ${paths.cert}`, { path: paths.key });
  }
  if (!x509.verify(caCert.publicKey)) {
    throw new QmError("CONFIG_INVALID", `tls.cert ${paths.cert} is not signed by the CA ${paths.ca}`, { path: paths.cert });
  }
  return { ca, cert, key, serial: x509.serialNumber, notAfter: new Date(x509.validTo) };
}

export class WatchedTls implements CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly paths: TlsPaths,
    private material: TlsMaterial,
    private readonly log: Logger,
  ) {}

  static async open(paths: TlsPaths, log: Logger): Promise<WatchedTls> {
    const tls = new WatchedTls(paths, await loadTlsMaterial(paths), log);
    tls.watcher = watch([paths.ca, paths.cert, paths.key], { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 } });
    tls.watcher.on("all", () => tls.scheduleReload());
    await new Promise<void>((resolve) => tls.watcher?.once("ready", () => resolve()));
    return tls;
  }

  get serial(): string {
    return this.material.serial;
  }

  /** the expiry of the certificate served now */
  get notAfter(): Date {
    return this.material.notAfter;
  }

  /** Several files are usually replaced together (cert and key): wait for the writes to settle. */
  private scheduleReload(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), 150);
  }

  async reload(): Promise<boolean> {
    try {
      const next = await loadTlsMaterial(this.paths);
      if (next.ca.equals(this.material.ca) && next.cert.equals(this.material.cert) && next.key.equals(this.material.key)) return true;
      this.material = next;
      for (const l of this.caListeners) l({ caCertificate: next.ca });
      for (const l of this.identityListeners) l({ certificate: next.cert, privateKey: next.key });
      this.log.info({ serial: next.serial }, "tls material reloaded: new connections use it");
      return true;
    } catch (err) {
      this.log.warn({ err, serial: this.material.serial }, "tls material rejected: the previous one stays in force");
      return false;
    }
  }

  // grpc-js registers its watcher only after adding these listeners: the current material is handed
  // over on the next tick, or the server would never see it
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    setImmediate(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: this.material.ca });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    setImmediate(() => {
      if (this.identityListeners.has(listener)) listener({ certificate: this.material.cert, privateKey: this.material.key });
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    await this.watcher?.close();
  }
}
