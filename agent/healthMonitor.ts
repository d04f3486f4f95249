// What the agent's health service says: SERVING only while its root is a directory, its state dir is
// writable and both have more than minFreeBytes free; NOT_SERVING otherwise, and from the moment it
// starts stopping. The facts are looked at every healthInterval and before a Check answers; the
// verdict is pure (evaluateHealth) and logged once each time it changes.
import { constants } from "node:fs";
import { access, stat, statfs } from "node:fs/promises";
import { describeError } from "../shared/errors.js";
import { mkdirDurable } from "../shared/fsutil.js";
import type { Logger } from "../shared/logger.js";

/** The services the agent's health is reported for: the whole server (""), and the agent's own. */
export const HEALTH_SERVICES = ["", "quickmigrate.v1.Agent"] as const;

/** How a folder looked: usable, or why not. */
export type FolderLook = { readonly ok: true; readonly freeBytes: number } | { readonly ok: false; readonly why: "missing" | "not-directory" | "not-writable" | "error"; readonly detail?: string };

export interface HealthFacts {
  readonly root: FolderLook;
  readonly stateDir: FolderLook;
}

export type HealthReasonCode =
  | "ROOT_MISSING"
  | "ROOT_NOT_DIRECTORY"
  | "ROOT_UNREADABLE"
  | "ROOT_LOW_SPACE"
  | "STATE_DIR_MISSING"
  | "STATE_DIR_NOT_DIRECTORY"
  | "STATE_DIR_NOT_WRITABLE"
  | "STATE_DIR_LOW_SPACE"
  | "PROBE_STUCK"
  | "STOPPING";

export interface HealthReason {
  readonly code: HealthReasonCode;
  readonly message: string;
}

export interface HealthVerdict {
  readonly serving: boolean;
  /** why not, empty when serving */
  readonly reasons: readonly HealthReason[];
}

const GIB = 1024 ** 3;
const showBytes = (n: number): string => (n >= GIB ? `${(n / GIB).toFixed(1)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`);

/** The verdict on what was looked at. Pure. */
export function evaluateHealth(facts: HealthFacts, paths: { root: string; stateDir: string }, minFreeBytes: number): HealthVerdict {
  const reasons: HealthReason[] = [];
  const folder = (look: FolderLook, what: "root" | "state dir", path: string, prefix: "ROOT" | "STATE_DIR"): void => {
    if (look.ok) {
      if (look.freeBytes <= minFreeBytes) {
        reasons.push({ code: `${prefix}_LOW_SPACE`, message: `${what} ${path}: ${showBytes(look.freeBytes)} free, not above minFreeBytes (${showBytes(minFreeBytes)})` });
      }
      return;
    }
    const detail = look.detail ? `: ${look.detail}` : "";
    switch (look.why) {
      case "missing":
        reasons.push({ code: `${prefix}_MISSING`, message: `${what} ${path} does not exist` });
        return;
      case "not-directory":
        reasons.push({ code: `${prefix}_NOT_DIRECTORY`, message: `${what} ${path} is not a directory` });
        return;
      case "not-writable":
        reasons.push({ code: "STATE_DIR_NOT_WRITABLE", message: `${what} ${path} is not writable${detail}` });
        return;
      case "error":
        reasons.push({ code: prefix === "ROOT" ? "ROOT_UNREADABLE" : "STATE_DIR_NOT_WRITABLE", message: `${what} ${path} cannot be looked at${detail}` });
    }
  };
  folder(facts.root, "root", paths.root, "ROOT");
  folder(facts.stateDir, "state dir", paths.stateDir, "STATE_DIR");
  return { serving: reasons.length === 0, reasons };
}

const errno = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? describeError(err);

/** Free bytes for an unprivileged user on the filesystem holding `path` (health, and Hello's figures). */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

/**
 * Looks at the root (followed if it is a symlink, as the agent resolves it) and the state dir: there,
 * a directory, the state dir writable by this process, and the free space of each.
 */
export async function lookAtFolders(root: string, stateDir: string): Promise<HealthFacts> {
  // a folder renamed or removed between two of the looks is missing, whichever look found it gone: the
  // same cause always gives the same reason (a changed reason is logged again)
  const gone = (err: unknown): FolderLook | undefined => (["ENOENT", "ENOTDIR"].includes(errno(err)) ? { ok: false, why: "missing" } : undefined);
  const look = async (path: string, writable: boolean): Promise<FolderLook> => {
    try {
      if (!(await stat(path)).isDirectory()) return { ok: false, why: "not-directory" };
    } catch (err) {
      return gone(err) ?? { ok: false, why: "error", detail: errno(err) };
    }
    if (writable) {
      try {
        await access(path, constants.W_OK | constants.X_OK);
      } catch (err) {
        return gone(err) ?? { ok: false, why: "not-writable", detail: errno(err) };
      }
    }
    try {
      return { ok: true, freeBytes: await freeBytes(path) };
    } catch (err) {
      return gone(err) ?? { ok: false, why: "error", detail: errno(err) };
    }
  };
  const [r, s] = await Promise.all([look(root, false), look(stateDir, true)]);
  return { root: r, stateDir: s };
}

/** Where the verdict goes: the health service's HealthStatuses (health.ts), or a fake. */
export interface HealthStatusSink {
  setStatus(service: string, status: "SERVING" | "NOT_SERVING"): void;
}

export interface HealthMonitorOptions {
  readonly root: string;
  readonly stateDir: string;
  readonly minFreeBytes: number;
  readonly intervalMs: number;
  /** a look that takes longer than this is a verdict of its own (PROBE_STUCK); default 5 s */
  readonly stuckMs?: number;
  /** the facts; default lookAtFolders */
  readonly look?: (root: string, stateDir: string) => Promise<HealthFacts>;
}

/** A Check waits at most this long for a fresh look before it answers from the last one. */
const CHECK_WAIT_MS = 1000;

export class HealthMonitor {
  private minFreeBytes: number;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private status: "SERVING" | "NOT_SERVING" | undefined;
  /** the last verdict logged, as "SERVING" or its reason codes: a change of either is logged */
  private shown: string | undefined;
  private stopped = false;

  constructor(
    private readonly sink: HealthStatusSink,
    private readonly log: Logger,
    private readonly opts: HealthMonitorOptions,
  ) {
    this.minFreeBytes = opts.minFreeBytes;
  }

  /** Makes the state dir if it is missing (the registry would at its first write), looks once, then every interval. */
  async start(): Promise<void> {
    await mkdirDurable(this.opts.stateDir).catch((err: unknown) => this.log.warn({ stateDir: this.opts.stateDir, err: describeError(err) }, "cannot make the state dir"));
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** A reloaded minFreeBytes applies from the next look. */
  setMinFreeBytes(bytes: number): void {
    this.minFreeBytes = bytes;
  }

  /** Looks now, unless a look is under way (then waits for it): one look at a time, so that a hung filesystem holds one thread, not one per tick. */
  refresh(): Promise<void> {
    this.inFlight ??= this.lookOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /**
   * For a Check: a look now, or the one under way (Checks at once share it, so a flood of them makes
   * one look at a time), waited for at most a second.
   */
  async fresh(): Promise<void> {
    if (this.stopped) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.refresh(), new Promise<void>((resolve) => (timer = setTimeout(resolve, CHECK_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /** NOT_SERVING for good: the agent is stopping. Looks still under way change nothing after this. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.show({ serving: false, reasons: [{ code: "STOPPING", message: "the agent is stopping" }] });
  }

  private async lookOnce(): Promise<void> {
    const { root, stateDir } = this.opts;
    const stuckMs = this.opts.stuckMs ?? 5000;
    const look = (this.opts.look ?? lookAtFolders)(root, stateDir);
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<"stuck">((resolve) => (timer = setTimeout(() => resolve("stuck"), stuckMs)));
    const first = await Promise.race([look, stuck]);
    clearTimeout(timer);
    if (first === "stuck") {
      this.show({ serving: false, reasons: [{ code: "PROBE_STUCK", message: `looking at the root ${root} and the state dir ${stateDir} took more than ${stuckMs / 1000} s` }] });
    }
    const facts = await look;
    this.show(evaluateHealth(facts, { root, stateDir }, this.minFreeBytes));
  }

  private show(verdict: HealthVerdict): void {
    if (this.stopped && verdict.reasons[0]?.code !== "STOPPING") return;
    const status = verdict.serving ? "SERVING" : "NOT_SERVING";
    // the health service writes every setStatus to every Watch: only a change is news
    if (status !== this.status) for (const service of HEALTH_SERVICES) this.sink.setStatus(service, status);
    this.status = status;
    const shown = verdict.serving ? "SERVING" : verdict.reasons.map((r) => r.code).join(",");
    if (shown === this.shown) return;
    this.shown = shown;
    if (verdict.serving) this.log.info({ status }, "serving");
    else if (this.stopped) this.log.info({ status, reasons: verdict.reasons }, "not serving");
    else this.log.warn({ status, reasons: verdict.reasons }, "not serving");
  }
}
