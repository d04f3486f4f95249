// Hostmaster hooks (drush and the like): argument arrays from the config, placeholders replaced inside
// each argument, the same values as QM_* environment variables. Never a shell. Each hook runs in its
// own process group, bounded by timeouts.hook, and nothing of it outlives its run.
import { execa } from "execa";
import { QmError, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { type HookGroup, KILL_GRACE_MS, endGroup, groupMembers } from "./processGroup.js";
import { processStartTime } from "../shared/processes.js";
import type { HookName, HookValues } from "./hookNames.js";

export { HOOK_NAMES, type HookName, PLACEHOLDERS, type HookValues } from "./hookNames.js";

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

export interface HookLimits {
  /** a hook running longer is ended; default one hour */
  readonly timeoutMs?: number;
  /** between SIGTERM and SIGKILL to the hook's process group */
  readonly killGraceMs?: number;
}

export interface HookRunOptions {
  /** ends the hook (its whole process group) when aborted; an aborted signal starts nothing */
  readonly signal?: AbortSignal;
  /** called once the hook runs, with its process group, before its end is awaited: the journal records it */
  readonly started?: (group: HookGroup) => Promise<void>;
}

/** setTimeout takes at most 2^31-1 ms; a longer bound would fire at once */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class HookRunner {
  private readonly timeoutMs: number;
  private readonly killGraceMs: number;

  constructor(
    private readonly hooks: Readonly<Partial<Record<HookName, readonly string[]>>>,
    private readonly log: Logger,
    limits: HookLimits = {},
  ) {
    this.timeoutMs = limits.timeoutMs ?? 3_600_000;
    this.killGraceMs = limits.killGraceMs ?? KILL_GRACE_MS;
  }

  has(name: HookName): boolean {
    return this.hooks[name] !== undefined;
  }

  /**
   * Runs a hook as the leader of its own process group; a missing hook is skipped. A non-zero exit
   * throws HOOK_FAILED with the output's last line; so does a hook that outlives the timeout or the
   * signal: its whole group gets SIGTERM, then SIGKILL after the grace. Whatever the hook leaves
   * running in its group is ended too: when this returns or throws, nothing of the hook runs any more.
   */
  async run(name: HookName, values: HookValues, opts: HookRunOptions = {}): Promise<HookResult> {
    const argv = this.hooks[name];
    if (!argv) return { skipped: true, detail: `hook ${name} not configured: skipped` };
    const [command, ...args] = expandHook(argv, values);
    const failed = (why: string) => new QmError("HOOK_FAILED", `hook ${name} (${command}) failed: ${why}`, { key: `hooks.${name}` });
    const { signal } = opts;
    if (signal?.aborted) throw failed(`cancelled before it started (${describeError(signal.reason)})`);
    this.log.info({ hook: name, command, args }, "hook start");
    const child = execa(command as string, args, {
      env: hookEnv(values),
      stdin: "ignore",
      all: true,
      reject: false,
      // its own process group: ending it ends what it started (execa's own kill reaches only the leader)
      detached: true,
    });
    const pgid = child.pid;
    // read at once: the leader is this process's child, so its /proc entry stays until it is reaped
    const group: HookGroup | undefined = pgid === undefined ? undefined : { pgid, startTime: processStartTime(pgid) ?? "" };

    let stopping: { why: string; ended: Promise<unknown> } | undefined;
    const stop = (why: string): void => {
      if (stopping || !group) return;
      this.log.warn({ hook: name, pgid: group.pgid, why }, "hook ended by the controller");
      stopping = { why, ended: endGroup(group.pgid, this.killGraceMs).then(() => undefined, (err: unknown) => err) };
    };
    const timer = setTimeout(() => stop(`timed out after ${this.timeoutMs / 1000} s`), Math.min(this.timeoutMs, MAX_TIMER_MS));
    const onAbort = () => stop(`cancelled (${describeError(signal?.reason)})`);
    signal?.addEventListener("abort", onAbort, { once: true });
    let result: Awaited<typeof child>;
    try {
      try {
        if (group) await opts.started?.(group);
      } catch (err) {
        // not journaled, so not to be left running
        stop(`not started: ${describeError(err)}`);
        await child;
        await stopping?.ended;
        throw err;
      }
      result = await child;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    const unkillable = await stopping?.ended;
    let leftBehind = "";
    const left = group && !stopping ? groupMembers(group.pgid) : [];
    if (group && left.length > 0) {
      // the leader exited and left processes of its group behind (their output closed): they end with it;
      // the hook's own exit still decides, the acknowledgement says what was ended
      this.log.warn({ hook: name, pgid: group.pgid, pids: left }, "hook left processes running: ending them");
      try {
        await endGroup(group.pgid, this.killGraceMs);
      } catch (err) {
        throw failed(`it left processes running that cannot be ended: ${describeError(err)}`);
      }
      leftBehind = ` (it left ${left.length} process(es) running: ended)`;
    }
    const lastLine = (result.all ?? "").trim().split("\n").pop() ?? "";
    const output = lastLine ? `: ${lastLine}` : "";
    if (stopping) {
      this.log.warn({ hook: name, why: stopping.why, output: result.all }, "hook failed");
      throw failed(`${stopping.why}${unkillable ? `; ${describeError(unkillable)}` : ""}${output}`);
    }
    if (result.failed) {
      const why = result.exitCode !== undefined ? `exit ${result.exitCode}` : (result.signal ?? result.shortMessage);
      this.log.warn({ hook: name, exitCode: result.exitCode, output: result.all }, "hook failed");
      throw failed(`${why}${output}`);
    }
    this.log.info({ hook: name }, "hook done");
    return { skipped: false, detail: `hook ${name} ran${leftBehind}` };
  }
}
