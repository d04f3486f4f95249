// `quick-migrate health`: every front's agent checked from the hostmaster, as a Nagios/Icinga plugin —
// its health service, how fast it answers, the certificate it presents, and the controller's own.
import { X509Certificate } from "node:crypto";
import { type ProbeTarget, certificateValidTo, probeHealth, readTlsFiles } from "../shared/healthProbe.js";
import { type OwnCertificate, type PluginReport, type Thresholds, judge, thresholdsProblem, unknown } from "../shared/monitoringPlugin.js";
import { type ControllerConfig, loadControllerConfig } from "./config.js";

export const HEALTH_SERVICE = "QUICK-MIGRATE";

/** Checks every front at once; a config or certificate file that cannot be used is UNKNOWN. */
export async function checkFronts(configFile: string, t: Thresholds): Promise<PluginReport> {
  const bad = thresholdsProblem(t);
  if (bad) return unknown(HEALTH_SERVICE, bad);
  let config: ControllerConfig;
  let tls: ProbeTarget["tls"];
  let own: OwnCertificate[] = [];
  try {
    config = await loadControllerConfig(configFile);
    // plaintext (development): no certificate to check
    tls = config.insecure || !config.tls ? undefined : await readTlsFiles(config.tls);
    if (tls) {
      const cn = /^CN=(.*)$/m.exec(new X509Certificate(tls.cert).subject)?.[1] ?? "?";
      own = [{ what: `controller certificate (${cn})`, validTo: certificateValidTo(tls.cert) }];
    }
  } catch (err) {
    // every problem of the config, one after the other on the status line
    return unknown(HEALTH_SERVICE, err instanceof Error ? err.message : String(err));
  }
  const probes = await Promise.all(config.fronts.map((f) => probeHealth({ name: f.name, address: f.address, ...(tls ? { tls } : {}) }, t.critMs)));
  return judge(HEALTH_SERVICE, probes, own, t, Date.now());
}
