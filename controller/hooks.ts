// Hostmaster hooks (drush and the like): argument arrays from the config, placeholders replaced inside
// each argument, the same values as QM_* environment variables. Never a shell. Each hook runs in its
// own process group, bounded by timeouts.hook, and nothing of it outlives its run. Its output goes to a
// capped file in the journal folder, and a failure carries its last lines.
import { pipeline } from "node:stream/promises";
import { execa } from "execa";
import { QmError, describeError } from "../shared/errors.js";
import { HOOK_OUTPUT_CAP, HookOutput, describeOutput } from "./hookOutput.js";
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
  /** what a hook's output file keeps at most, its tail; default 1 MiB */
  readonly outputCapBytes?: number;
}

export interface HookRunOptions {
  /** ends the hook (its whole process group) when aborted; an aborted signal starts nothing */
  readonly signal?: AbortSignal;
  /** called once the hook runs, with its process group, before its end is awaited: the journal records it */
  readonly started?: (group: HookGroup) => Promise<void>;
  /** the file its output goes to (made anew, capped); without it only a bounded tail is kept, in memory */
  readonly outputFile?: string;
}

/** setTimeout takes at most 2^31-1 ms; a longer bound would fire at once */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** a failed hook's acknowledgement shows this many of its last lines */
export const FAILED_HOOK_TAIL_LINES = 20;

export class HookRunner {
  private readonly timeoutMs: number;
  private readonly killGraceMs: number;
  private readonly outputCapBytes: number;

  constructor(
    private readonly hooks: Readonly<Partial<Record<HookName, readonly string[]>>>,
    private readonly log: Logger,
    limits: HookLimits = {},
  ) {
    this.timeoutMs = limits.timeoutMs ?? 3_600_000;
    this.killGraceMs = limits.killGraceMs ?? KILL_GRACE_MS;
    this.outputCapBytes = limits.outputCapBytes ?? HOOK_OUTPUT_CAP;
  }

  has(name: HookName): boolean {
    return this.hooks[name] !== undefined;
  }

  /**
   * Runs a hook as the leader of its own process group; a missing hook is skipped. Its stdout and stderr
   * go, as they come, to its output file (see hookOutput.ts). A non-zero exit throws HOOK_FAILED with the
   * output's last line in the message and its last lines for the acknowledgement; so does a hook that
   * outlives the timeout or the signal: its whole group gets SIGTERM, then SIGKILL after the grace.
   * Whatever the hook leaves running in its group is ended too: when this returns or throws, nothing of
   * the hook runs any more.
   */
  async run(name: HookName, values: HookValues, opts: HookRunOptions = {}): Promise<HookResult> {
    const argv = this.hooks[name];
    if (!argv) return { skipped: true, detail: `hook ${name} not configured: skipped` };
    const [command, ...args] = expandHook(argv, values);
    const failure = (why: string, ackLines: readonly string[] = []) => new QmError("HOOK_FAILED", `hook ${name} (${command}) failed: ${why}`, { key: `hooks.${name}` }, { ackLines });
    const { signal } = opts;
    if (signal?.aborted) throw failure(`cancelled before it started (${describeError(signal.reason)})`);
    const output = await this.openOutput(name, opts.outputFile);
    this.log.info({ hook: name, command, args, outputFile: output.file }, "hook start");
    const child = execa(command as string, args, {
      env: hookEnv(values),
      stdin: "ignore",
      // stdout and stderr together, in the order they come, into the file: never held whole in memory
      all: true,
      buffer: false,
      reject: false,
      // its own process group: ending it ends what it started (execa's own kill reaches only the leader)
      detached: true,
    });
    // piped, not read: the hook waits while the file is behind
    const written = pipeline(child.all, output).catch((err: unknown) => this.log.warn({ hook: name, outputFile: output.file, err }, "hook output not kept whole"));
    const pgid = child.pid;
    // read at once: the leader is this process's child, so its /proc entry stays until it is reaped
    const group: HookGroup | undefined = pgid === undefined ? undefined : { pgid, startTime: processStartTime(pgid) ?? "" };
    /** the failure, with the output's last lines: its last in the message, all of them for the acknowledgement */
    const failed = async (why: string, fields: Record<string, unknown>): Promise<QmError> => {
      await written;
      const lines = await output.lastLines(FAILED_HOOK_TAIL_LINES).catch((err: unknown) => {
        this.log.warn({ hook: name, outputFile: output.file, err }, "hook output unreadable");
        return [];
      });
      this.log.warn({ hook: name, ...fields, outputFile: output.file, outputTail: lines, shownBy: "ack" }, "hook failed");
      if (lines.length === 0) return failure(why);
      // the message names the last line that says something (output often ends with blank lines)
      const lastLine = lines.findLast((l) => l.trim() !== "")?.trim();
      return failure(lastLine ? `${why}: ${lastLine}` : why, [`last ${lines.length} lines of its output (${describeOutput(output)}):`, ...lines]);
    };

    let stopping: { why: string; ended: Promise<unknown> } | undefined;
    const stop = (why: string): void => {
      if (stopping || !group) return;
      this.log.warn({ hook: name, pgid: group.pgid, why, shownBy: "ack" }, "hook ended by the controller");
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
        await written;
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
      this.log.warn({ hook: name, pgid: group.pgid, pids: left, shownBy: "ack" }, "hook left processes running: ending them");
      try {
        await endGroup(group.pgid, this.killGraceMs);
      } catch (err) {
        throw await failed(`it left processes running that cannot be ended: ${describeError(err)}`, {});
      }
      leftBehind = ` (it left ${left.length} process(es) running: ended)`;
    }
    if (stopping) throw await failed(`${stopping.why}${unkillable ? `; ${describeError(unkillable)}` : ""}`, { why: stopping.why });
    if (result.failed) {
      // a command that could not start says so on a second line: the message stays one
      const why = result.exitCode !== undefined ? `exit ${result.exitCode}` : (result.signal ?? firstLine(result.shortMessage ?? "it did not run"));
      throw await failed(why, { exitCode: result.exitCode });
    }
    await written;
    this.log.info({ hook: name, outputFile: output.file }, "hook done");
    return { skipped: false, detail: `hook ${name} ran${leftBehind}` };
  }

  /** The hook's output file, or a bounded tail in memory when there is none or it cannot be made. */
  private async openOutput(name: HookName, file: string | undefined): Promise<HookOutput> {
    if (file === undefined) return HookOutput.inMemory();
    try {
      return await HookOutput.toFile(file, this.outputCapBytes);
    } catch (err) {
      this.log.warn({ hook: name, outputFile: file, err }, "hook output file not made: its tail is kept in memory");
      return HookOutput.inMemory();
    }
  }
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}
