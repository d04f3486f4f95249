// Where the agent's config file is unless --config says otherwise: apart from config.ts (the schema,
// with zod and yaml), so that the CLI can name it in its options without loading them.
export const DEFAULT_AGENT_CONFIG = "/etc/quick-migrate/agent.yaml";
