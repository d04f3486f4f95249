// The hooks' vocabulary: their names and the placeholders their arguments may hold. Apart from hooks.ts,
// which runs them (with execa), so that the config schema can name them without loading a process runner.

export const HOOK_NAMES = ["maintenanceOn", "dbDump", "deploy", "updatedb", "maintenanceOff", "dbRestore"] as const;
export type HookName = (typeof HOOK_NAMES)[number];

export const PLACEHOLDERS = ["site", "newSite", "from", "to", "fromPath", "toPath", "dump", "migrationId"] as const;
export type HookValues = Readonly<Record<(typeof PLACEHOLDERS)[number], string>>;
