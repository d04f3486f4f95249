// The agent's configuration: one schema, defaults here, unknown keys rejected, every problem reported at once.
import * as z from "zod";
import { absPath, checkTransport, hostPort, isLoopback, loadYamlConfig, logLevel, tlsFiles } from "../shared/config.js";
import type { QmError } from "../shared/errors.js";
import { DEFAULT_DATA_DIRS, MAX_DATA_DIRS, checkDataDirSet } from "../shared/names.js";

const schema = z
  .object({
    listen: hostPort,
    root: absPath,
    stateDir: absPath,
    insecure: z.boolean().default(false),
    tls: tlsFiles.optional(),
    /** certificate common names that may run operations; any CA-signed client may ask for health */
    allowedClients: z.array(z.string().min(1)).default([]),
    /** operations (RPCs and rsync streams) running at once; more are refused as busy */
    maxConcurrentOps: z.number().int().min(1).max(1000).default(16),
    /** in seconds: an rsync stream that moves no byte either way for `unresponsive` is ended (as the controller's) */
    timeouts: z
      .object({ unresponsive: z.number().min(1).default(30) })
      .strict()
      .default({ unresponsive: 30 }),
    /**
     * seconds the agent works on one Hello, Preflight, Apply or Inspect before it answers TIMED_OUT and
     * gives its slot back (a client may send no deadline); the controller's timeouts.apply by default
     */
    operationTimeout: z.number().positive().max(86_400).default(300),
    /**
     * the data dirs this front protects, relative to a site folder: a migration listing others is
     * refused, and a site folder holding one of these is never removed, whatever a client says
     */
    dataDirs: z.array(z.string()).min(1).max(MAX_DATA_DIRS).default([...DEFAULT_DATA_DIRS]),
    /**
     * the health service says SERVING only while the root and the state dir each have more than this
     * many bytes free (for an unprivileged user) besides being there and usable: 1 GiB by default
     */
    minFreeBytes: z.number().int().min(0).default(1024 ** 3),
    /** seconds between two looks at the root and the state dir for the health service (a health Check also looks, at most once a second) */
    healthInterval: z.number().min(0.1).max(3600).default(10),
    /**
     * seconds a stopping agent (SIGTERM, SIGINT) waits for the operations in flight before it ends the
     * rsync runs still going; a rename under way is always finished, whatever this says
     */
    stopTimeout: z.number().min(0).max(86_400).default(60),
    /** days the record of a migration that ended here (finished or rolled back) is kept, for audit */
    keepFinished: z.number().min(0).default(30),
    logLevel: logLevel.default("info"),
    /**
     * run as root after all (refused by default): the agent is meant to run as the aegir user, as
     * Aegir's backend does, so that a symlink race in a platform folder gains nothing
     */
    allowRoot: z.boolean().default(false),

    /**
     * Prometheus metrics on http://<listen>/metrics; off when absent. Plain HTTP: on a loopback address
     * (a local Prometheus or node_exporter's neighbour), or elsewhere only with allowRemote: true
     */
    metrics: z
      .object({ listen: hostPort, allowRemote: z.boolean().default(false) })
      .strict()
      .optional(),
  })
  .strict();

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
