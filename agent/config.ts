// The agent's configuration: one schema, defaults here, unknown keys rejected, every problem reported at once.
import * as z from "zod/mini";
import { absPath, checkTransport, hostPort, isLoopback, loadYamlConfig, logLevel, tlsFiles } from "../shared/config.js";
import type { QmError } from "../shared/errors.js";
import { DEFAULT_DATA_DIRS, MAX_DATA_DIRS, checkDataDirSet } from "../shared/names.js";

const schema = z.strictObject({
  listen: hostPort,
  root: absPath,
  stateDir: absPath,
  insecure: z._default(z.boolean(), false),
  tls: z.optional(tlsFiles),
  /** certificate common names that may run operations; any CA-signed client may ask for health */
  allowedClients: z._default(z.array(z.string().check(z.minLength(1))), []),
  /** operations (RPCs and rsync streams) running at once; more are refused as busy */
  maxConcurrentOps: z._default(z.int().check(z.minimum(1), z.maximum(1000)), 16),
  /** in seconds: an rsync stream that moves no byte either way for `unresponsive` is ended (as the controller's) */
  timeouts: z._default(z.strictObject({ unresponsive: z._default(z.number().check(z.minimum(1)), 30) }), { unresponsive: 30 }),
  /**
   * seconds the agent works on one Hello, Preflight, Apply or Inspect before it answers TIMED_OUT and
   * gives its slot back (a client may send no deadline); the controller's timeouts.apply by default
   */
  operationTimeout: z._default(z.number().check(z.positive(), z.maximum(86_400)), 300),
  /**
   * the data dirs this front protects, relative to a site folder: a migration listing others is
   * refused, and a site folder holding one of these is never removed, whatever a client says
   */
  dataDirs: z._default(z.array(z.string()).check(z.minLength(1), z.maxLength(MAX_DATA_DIRS)), [...DEFAULT_DATA_DIRS]),
  /**
   * the health service says SERVING only while the root and the state dir each have more than this
   * many bytes free (for an unprivileged user) besides being there and usable: 1 GiB by default
   */
  minFreeBytes: z._default(z.int().check(z.minimum(0)), 1024 ** 3),
  /** seconds between two looks at the root and the state dir for the health service (a health Check also looks, at most once a second) */
  healthInterval: z._default(z.number().check(z.minimum(0.1), z.maximum(3600)), 10),
  /**
   * seconds a stopping agent (SIGTERM, SIGINT) waits for the operations in flight before it ends the
   * rsync runs still going; a rename under way is always finished, whatever this says
   */
  stopTimeout: z._default(z.number().check(z.minimum(0), z.maximum(86_400)), 60),
  /** days the record of a migration that ended here (finished or rolled back) is kept, for audit */
  keepFinished: z._default(z.number().check(z.minimum(0)), 30),
  logLevel: z._default(logLevel, "info"),
  /**
   * run as root after all (refused by default): the agent is meant to run as the aegir user, as
   * Aegir's backend does, so that a symlink race in a platform folder gains nothing
   */
  allowRoot: z._default(z.boolean(), false),

  /**
   * Prometheus metrics on http://<listen>/metrics; off when absent. Plain HTTP: on a loopback address
   * (a local Prometheus or node_exporter's neighbour), or elsewhere only with allowRemote: true
   */
  metrics: z.optional(z.strictObject({ listen: hostPort, allowRemote: z._default(z.boolean(), false) })),
});

export type AgentConfig = Readonly<z.infer<typeof schema>>;

export { DEFAULT_AGENT_CONFIG } from "./configFile.js";

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  return loadYamlConfig(file, schema, (c, problem) => {
    checkTransport(c, problem);
    if (c.tls && c.allowedClients.length === 0) problem("allowedClients", "name at least one client certificate common name (the controller's)");
    try {
      checkDataDirSet(c.dataDirs);
    } catch (err) {
      problem("dataDirs", (err as QmError).message);
    }
    if (c.insecure && !isLoopback(c.listen)) {
      problem("listen", `insecure (plaintext) mode is only allowed on a loopback address, not ${c.listen}`);
    }
    if (c.metrics && !c.metrics.allowRemote && !isLoopback(c.metrics.listen)) {
      problem("metrics.listen", `${c.metrics.listen} is not a loopback address: the metrics are plain HTTP to whoever can reach it; set metrics.allowRemote: true to mean it`);
    }
  });
}

export { isLoopback } from "../shared/config.js";
