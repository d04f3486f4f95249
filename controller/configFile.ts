// Where the controller's config file is unless -c says otherwise: apart from config.ts (the schema, with
// zod and yaml), so that the CLI can name it in its options without loading them.
export const DEFAULT_CONTROLLER_CONFIG = "/etc/quick-migrate/controller.yaml";
