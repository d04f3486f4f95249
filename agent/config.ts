// The agent's configuration: one schema, defaults here, unknown keys rejected, every problem reported at once.
import { isAbsolute } from "node:path";
import { z } from "zod";
import { isLoopback, loadYamlConfig } from "../shared/config.js";

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be host:port")
  .refine((v) => !(Number(/:(\d+)$/.exec(v)?.[1] ?? 0) > 65535), "port must be at most 65535");
const absPath = z.string().refine(isAbsolute, "must be an absolute path");

const schema = z
  .object({
    listen: hostPort,
    root: absPath,
    stateDir: absPath,
    insecure: z.boolean().default(false),
    tls: z.object({ ca: absPath, cert: absPath, key: absPath }).strict().optional(),
    /** certificate common names that may run operations; any CA-signed client may ask for health */
    allowedClients: z.array(z.string().min(1)).default([]),
    /** operations (RPCs and rsync streams) running at once; more are refused as busy */
    maxConcurrentOps: z.number().int().min(1).max(1000).default(16),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
  })
  .strict();

export type AgentConfig = Readonly<z.infer<typeof schema>>;

export const DEFAULT_AGENT_CONFIG = "/etc/quick-migrate/agent.yaml";

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  return loadYamlConfig(file, schema, (c, problem) => {
    if (!c.insecure && !c.tls) problem("tls", "required unless insecure: true");
    if (c.insecure && c.tls) problem("insecure", "insecure: true and tls cannot both be set");
    if (c.tls && c.allowedClients.length === 0) problem("allowedClients", "name at least one client certificate common name (the controller's)");
    if (c.insecure && !isLoopback(c.listen)) {
      problem("listen", `insecure (plaintext) mode is only allowed on a loopback address, not ${c.listen}`);
    }
  });
}

export { isLoopback } from "../shared/config.js";
