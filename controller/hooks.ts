// Hostmaster hooks (drush and the like): argument arrays from the config, placeholders replaced inside
// each argument, the same values as QM_* environment variables. Never a shell.
import { execa } from "execa";
import { QmError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";

export const HOOK_NAMES = ["maintenanceOn", "dbDump", "deploy", "updatedb", "maintenanceOff", "dbRestore"] as const;
export type HookName = (typeof HOOK_NAMES)[number];

export const PLACEHOLDERS = ["site", "newSite", "from", "to", "fromPath", "toPath", "dump", "migrationId"] as const;
export type HookValues = Readonly<Record<(typeof PLACEHOLDERS)[number], string>>;

const ENV_NAMES: Record<keyof HookValues, string> = {
  site: "QM_SITE",
  newSite: "QM_NEW_SITE",
  from: "QM_FROM",
  to: "QM_TO",
  fromPath: "QM_FROM_PATH",
  toPath: "QM_TO_PATH",
  dump: "QM_DUMP",
  migrationId: "QM_MIGRATION_ID",
};

/** Replaces each {placeholder} inside each argument. Pure. */
export function expandHook(argv: readonly string[], values: HookValues): string[] {
  return argv.map((arg) => arg.replace(/\{([A-Za-z]+)\}/g, (whole, key: string) => (Object.hasOwn(values, key) ? values[key as keyof HookValues] : whole)));
}

export function hookEnv(values: HookValues): Record<string, string> {
  return Object.fromEntries(Object.entries(ENV_NAMES).map(([k, env]) => [env, values[k as keyof HookValues]]));
}

export interface HookResult {
  readonly skipped: boolean;
  readonly detail: string;
}

export class HookRunner {
  constructor(
    private readonly hooks: Readonly<Partial<Record<HookName, readonly string[]>>>,
    private readonly log: Logger,
  ) {}

  has(name: HookName): boolean {
    return this.hooks[name] !== undefined;
  }

  /** Runs a hook; a missing hook is skipped. A non-zero exit throws HOOK_FAILED with the output's last line. */
  async run(name: HookName, values: HookValues, signal?: AbortSignal): Promise<HookResult> {
    const argv = this.hooks[name];
    if (!argv) return { skipped: true, detail: `hook ${name} not configured: skipped` };
    const [command, ...args] = expandHook(argv, values);
    this.log.info({ hook: name, command, args }, "hook start");
    const result = await execa(command as string, args, {
      env: hookEnv(values),
      stdin: "ignore",
      all: true,
      reject: false,
      ...(signal ? { cancelSignal: signal } : {}),
    });
    const lastLine = (result.all ?? "").trim().split("\n").pop() ?? "";
    if (result.failed) {
      const why = result.exitCode !== undefined ? `exit ${result.exitCode}` : (result.signal ?? result.shortMessage);
      this.log.warn({ hook: name, exitCode: result.exitCode, output: result.all }, "hook failed");
      throw new QmError("HOOK_FAILED", `hook ${name} (${command}) failed: ${why}${lastLine ? `: ${lastLine}` : ""}`, { key: `hooks.${name}` });
    }
    this.log.info({ hook: name }, "hook done");
    return { skipped: false, detail: `hook ${name} ran` };
  }
}
