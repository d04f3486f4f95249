// quick-migrate-agent: the gRPC service on each web front (run by systemd).
import { Command } from "commander";
import { QmError, describeError } from "../shared/errors.js";
import { createRootLogger } from "../shared/logger.js";
import { PACKAGE_VERSION } from "../shared/version.js";
import { DEFAULT_AGENT_CONFIG, loadAgentConfig } from "./config.js";
import { AgentGrpcServer } from "./server.js";

async function serve(configFile: string): Promise<void> {
  const config = await loadAgentConfig(configFile);
  const log = createRootLogger("quick-migrate-agent", config.logLevel);
  if (config.insecure) log.warn({ listen: config.listen }, "insecure plaintext mode: for development only");
  const server = new AgentGrpcServer(config, log);
  const address = await server.listen();
  log.info({ address, root: config.root, stateDir: config.stateDir, version: PACKAGE_VERSION }, "agent listening");
  const shutdown = (signal: string) => {
    log.info({ signal }, "agent stopping");
    void server.stop().then(() => process.exit(0));
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

const program = new Command("quick-migrate-agent")
  .description("quick-migrate agent: renames, removes and rsyncs site folders on this web front, on the controller's command")
  .version(PACKAGE_VERSION)
  .option("-c, --config <file>", "agent config file", DEFAULT_AGENT_CONFIG)
  .exitOverride()
  .action(async (opts: { config: string }) => serve(opts.config));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const code = (err as { code?: string }).code;
  if (code === "commander.helpDisplayed" || code === "commander.version") process.exit(0);
  if (typeof code === "string" && code.startsWith("commander.")) process.exit(2);
  process.stderr.write(`quick-migrate-agent: ${err instanceof QmError ? err.message : describeError(err)}\n`);
  process.exit(err instanceof QmError && err.code === "CONFIG_INVALID" ? 2 : 1);
}
