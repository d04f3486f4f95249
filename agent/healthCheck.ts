// `quick-migrate-agent health`: this front's own agent checked as a Nagios/Icinga plugin (NRPE, an
// Icinga agent), the way `quick-migrate health` checks every front from the hostmaster: its health
// service at its listen address, how fast it answers, and the certificate it presents. Over TLS the
// agent's own certificate is the client certificate (make-certs.sh gives fronts clientAuth for this;
// any CA-signed client may ask for health), so it runs as the agent's user, who can read the key.
import { X509Certificate } from "node:crypto";
import { type ProbeTarget, probeHealth, readTlsFiles } from "../shared/healthProbe.js";
import { type PluginReport, type Thresholds, judge, thresholdsProblem, unknown } from "../shared/monitoringPlugin.js";
import { type AgentConfig, loadAgentConfig } from "./config.js";

export const AGENT_HEALTH_SERVICE = "QUICK-MIGRATE-AGENT";

const CLIENT_AUTH_OID = "1.3.6.1.5.5.7.3.2";

/** Where to reach the agent listening on `listen` from this host: a wildcard address is dialled on loopback. */
export function localAddress(listen: string): string {
  return listen.replace(/^0\.0\.0\.0:/, "127.0.0.1:").replace(/^\[::\]:/, "[::1]:");
}

/** The name the agent's certificate carries (its first DNS name, else its CN): what its TLS is checked against. */
function certificateName(cert: X509Certificate): string | undefined {
  const dns = /(?:^|,\s*)DNS:([^,\s]+)/.exec(cert.subjectAltName ?? "")?.[1];
  return dns ?? /^CN=(.*)$/m.exec(cert.subject)?.[1];
}

async function target(config: AgentConfig): Promise<ProbeTarget> {
  const address = localAddress(config.listen);
  if (/:0$/.test(address)) throw new Error(`listen ${config.listen}: the agent's port is chosen when it starts (port 0); give it a fixed port to check it`);
  if (config.insecure || !config.tls) return { name: "agent", address };
  const tls = config.tls;
  const { ca, cert, key } = await readTlsFiles(tls, " (run the check as the agent's user)");
  const x509 = new X509Certificate(cert);
  // no extendedKeyUsage at all allows every use; one without clientAuth cannot be presented to the agent
  const usages = x509.keyUsage as string[] | undefined;
  if (usages !== undefined && !usages.includes(CLIENT_AUTH_OID)) {
    throw new Error(
      `tls.cert ${tls.cert} is not usable as a client certificate (no clientAuth in its extendedKeyUsage): make it again with deploy/tls/make-certs.sh --force, which gives fronts clientAuth`,
    );
  }
  return { name: certificateName(x509) ?? "agent", address, tls: { ca, cert, key } };
}

/** Checks the agent of `configFile`; a config or file that cannot be used is UNKNOWN. */
export async function checkLocalAgent(configFile: string, t: Thresholds): Promise<PluginReport> {
  const bad = thresholdsProblem(t);
  if (bad) return unknown(AGENT_HEALTH_SERVICE, bad);
  let probeTarget: ProbeTarget;
  try {
    probeTarget = await target(await loadAgentConfig(configFile));
  } catch (err) {
    return unknown(AGENT_HEALTH_SERVICE, err instanceof Error ? err.message : String(err));
  }
  return judge(AGENT_HEALTH_SERVICE, [await probeHealth(probeTarget, t.critMs)], [], t, Date.now());
}
