// The certificate a front's agent serves, read over a TLS connection of its own (node:tls, not gRPC):
// its expiry, and whether the controller's CA and the front's name accept it. An expired or wrong
// certificate is still read and reported, not refused: that is when its dates matter most.
import { readFileSync } from "node:fs";
import { type PeerCertificate, checkServerIdentity, connect } from "node:tls";
import type { FrontConfig } from "./config.js";

export interface FrontCertificate {
  /** the certificate's notAfter */
  readonly notAfter: Date;
  readonly subject: string;
  readonly fingerprint256: string;
  /** signed by the controller's CA, in its dates, and naming the front */
  readonly verified: boolean;
  /** why it is not verified */
  readonly problem?: string;
}

export interface ClientTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/**
 * Connects to `front` with the controller's CA and client certificate and reads the certificate it
 * presents, within `timeoutMs`. The name checked is the front's `name`, as the controller's gRPC
 * channel checks it (whatever address it dials).
 */
export function frontCertificate(front: Pick<FrontConfig, "name" | "address">, tls: ClientTls, timeoutMs: number): Promise<FrontCertificate> {
  const m = /^(.*):(\d+)$/.exec(front.address);
  const host = (m?.[1] ?? front.address).replace(/^\[|\]$/g, "");
  const port = Number(m?.[2]);
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      servername: front.name,
      ca: readFileSync(tls.ca),
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      // the agent speaks HTTP/2 only; the connection is closed as soon as the certificate is read
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake within ${timeoutMs / 1000} s`)));
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      const peer: PeerCertificate = socket.getPeerCertificate();
      const authorizationError = socket.authorized ? undefined : String(socket.authorizationError);
      socket.destroy();
      if (!peer || !peer.valid_to) {
        reject(new Error("the agent presented no certificate"));
        return;
      }
      const identity = checkServerIdentity(front.name, peer);
      const problem = authorizationError ?? (identity ? `it does not name ${front.name}: ${identity.message}` : undefined);
      resolve({
        notAfter: new Date(peer.valid_to),
        subject: typeof peer.subject?.CN === "string" ? `CN=${peer.subject.CN}` : JSON.stringify(peer.subject ?? {}),
        fingerprint256: peer.fingerprint256,
        verified: problem === undefined,
        ...(problem === undefined ? {} : { problem }),
      });
    });
  });
}
