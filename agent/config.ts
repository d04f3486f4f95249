// The agent's configuration: one schema, defaults here, unknown keys rejected, every problem reported at once.
import { z } from "zod";
import { absPath, checkTransport, hostPort, isLoopback, loadYamlConfig, logLevel, tlsFiles } from "../shared/config.js";

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
    logLevel: logLevel.default("info"),
  })
  .strict();

export type AgentConfig = Readonly<z.infer<typeof schema>>;

export const DEFAULT_AGENT_CONFIG = "/etc/quick-migrate/agent.yaml";

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  return loadYamlConfig(file, schema, (c, problem) => {
    checkTransport(c, problem);
    if (c.tls && c.allowedClients.length === 0) problem("allowedClients", "name at least one client certificate common name (the controller's)");
    if (c.insecure && !isLoopback(c.listen)) {
      problem("listen", `insecure (plaintext) mode is only allowed on a loopback address, not ${c.listen}`);
    }
  });
}

export { isLoopback } from "../shared/config.js";
