// The live progress of the step in flight: which of its hosts have answered and, on the rsync steps,
// the bytes the tunnel carried each way. Shown at most once a second, from a second after the step
// started until it ends (a fast step shows none); never journaled, and no timer outlives its step.
import type { Clock } from "./clock.js";
import type { HostProgress, ProgressEvent } from "./events.js";

/** Calls `fn` every `ms` until the returned function is called. */
export type Every = (ms: number, fn: () => void) => () => void;

export const realEvery: Every = (ms, fn) => {
  const timer = setInterval(fn, ms);
  // ended with its step all the same; this only keeps a forgotten one from holding the controller up
  timer.unref();
  return () => clearInterval(timer);
};

/** the rate is over about this long: recent enough to show a stall, long enough not to jump about */
export const RATE_WINDOW_MS = 3000;

interface HostLive {
  state: HostProgress["state"];
  /** set once the host's rsync started: totals so far */
  bytes?: { sent: number; received: number };
  /** (time, total both ways) taken at each tick, the oldest about RATE_WINDOW_MS back */
  samples: Array<{ at: number; total: number }>;
}

/** One step in flight (one attempt of it: a retry is a new step-start and a new StepProgress). */
export class StepProgress {
  private readonly hosts = new Map<string, HostLive>();
  private readonly started: number;
  private readonly stop: () => void;
  private ended = false;

  constructor(
    private readonly migrationId: string,
    readonly step: string,
    readonly undo: boolean,
    hosts: readonly string[],
    private readonly clock: Clock,
    private readonly show: (e: ProgressEvent) => void,
    every: Every,
    periodMs: number,
  ) {
    for (const h of hosts) this.hosts.set(h, { state: "running", samples: [] });
    this.started = clock.now();
    this.stop = every(periodMs, () => this.tick());
  }

  /** the host answered: acknowledged, or failed */
  answered(host: string, ok: boolean): void {
    const h = this.hosts.get(host);
    if (h) h.state = ok ? "ok" : "failed";
  }

  /** totals so far of the host's rsync session: sent to the agent, received from it */
  bytes(host: string, sent: number, received: number): void {
    const h = this.hosts.get(host);
    if (!h) return;
    if (!h.bytes) h.samples = [{ at: this.clock.now(), total: sent + received }];
    h.bytes = { sent, received };
  }

  end(): void {
    this.ended = true;
    this.stop();
  }

  private tick(): void {
    if (this.ended) return;
    const now = this.clock.now();
    const hosts = [...this.hosts].map(([host, h]): HostProgress => {
      if (!h.bytes) return { host, state: h.state };
      const p: HostProgress = { host, state: h.state, bytesSent: h.bytes.sent, bytesReceived: h.bytes.received };
      const total = h.bytes.sent + h.bytes.received;
      h.samples.push({ at: now, total });
      // keep one sample at least a window old as the base
      while (h.samples.length > 2 && now - (h.samples[1]?.at ?? now) >= RATE_WINDOW_MS) h.samples.shift();
      const base = h.samples[0];
      if (h.state === "running" && base && now > base.at) p.bytesPerSecond = Math.round(((total - base.total) * 1000) / (now - base.at));
      return p;
    });
    this.show({ event: "progress", migrationId: this.migrationId, step: this.step, elapsedMs: now - this.started, hosts, ...(this.undo ? { undo: true as const } : {}) });
  }
}

/** One migration's progress: the runner runs one step at a time, and this knows which. */
export class ProgressMeter {
  private current: StepProgress | undefined;

  constructor(
    private readonly migrationId: string,
    private readonly show: (e: ProgressEvent) => void,
    private readonly clock: Clock,
    private readonly every: Every = realEvery,
    private readonly periodMs = 1000,
  ) {}

  begin(step: string, hosts: readonly string[], undo: boolean): StepProgress {
    this.current?.end();
    this.current = new StepProgress(this.migrationId, step, undo, hosts, this.clock, this.show, this.every, this.periodMs);
    return this.current;
  }

  /** bytes of a host's rsync for a step; ignored once that step is no longer in flight */
  bytes(step: string, undo: boolean, host: string, sent: number, received: number): void {
    const c = this.current;
    if (c && c.step === step && c.undo === undo) c.bytes(host, sent, received);
  }
}
