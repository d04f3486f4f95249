// The agent's Prometheus figures: one prom-client Registry of its own (never prom-client's global one),
// every name prefixed quick_migrate_agent_. Made only when the config has `metrics`; served by metricsServer.ts.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { PACKAGE_VERSION, PROTOCOL_VERSION } from "../shared/version.js";
import type { CallObserver, CallResult } from "./audit.js";
import { type Registry as MigrationRegistry, isUnfinished, unsettledEntries } from "./registry.js";

export const METRICS_PREFIX = "quick_migrate_agent_";

/** rsync's stream as the audit line counts it: `in` from the controller's rsync, `out` back to it. */
export type ByteDirection = "in" | "out";

/** What the figures read at scrape time come from: the server's state, read when Prometheus asks. */
export interface MetricSources {
  /** operations holding a slot now (RPCs and rsync runs) */
  inFlight(): number;
  /** the serving certificate's notAfter (undefined until it is loaded); absent in plaintext mode */
  readonly certificateNotAfter?: () => Date | undefined;
  /** the agent's own records of migrations */
  readonly records: MigrationRegistry;
}

/** Seconds: a Hello takes milliseconds, an rsync push of a big site folder can take an hour. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

export class AgentMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly operations: Counter<"op" | "result">;
  private readonly durations: Histogram<"op">;
  private readonly refused: Counter<"op" | "reason">;
  private readonly rsyncBytes: Counter<"direction">;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    const name = (n: string) => `${METRICS_PREFIX}${n}`;
    this.operations = new Counter({
      name: name("operations_total"),
      help: "Calls answered, by operation (hello, preflight, apply, inspect, rsync, reflection, health.watch, tls-handshake) and result (ok, refused, error).",
      labelNames: ["op", "result"],
      registers,
    });
    this.durations = new Histogram({
      name: name("operation_duration_seconds"),
      help: "How long the calls that ran (result ok or error) took, by operation; refusals are not timed.",
      labelNames: ["op"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.refused = new Counter({
      name: name("refused_total"),
      help: "Calls refused, by operation and reason (the quick-migrate error code, e.g. NOT_ALLOWED, BUSY, OUT_OF_ORDER).",
      labelNames: ["op", "reason"],
      registers,
    });
    this.rsyncBytes = new Counter({
      name: name("rsync_bytes_total"),
      help: "Bytes of rsync's stream through the tunnel, counted as they move: in from the controller, out to it.",
      labelNames: ["direction"],
      registers,
    });
    // both series exist from the start: a rate over a counter that appears late misses its first increase
    this.rsyncBytes.inc({ direction: "in" }, 0);
    this.rsyncBytes.inc({ direction: "out" }, 0);
    new Gauge({
      name: name("operations_in_flight"),
      help: "Operations holding a slot now (at most maxConcurrentOps).",
      registers,
      collect() {
        this.set(sources.inFlight());
      },
    });
    new Gauge({
      name: name("build_info"),
      help: "Always 1: the agent's version, its protocol version and Node's.",
      labelNames: ["version", "protocol", "node"],
      registers,
    }).set({ version: PACKAGE_VERSION, protocol: String(PROTOCOL_VERSION), node: process.versions.node }, 1);
    const notAfter = sources.certificateNotAfter;
    if (notAfter) {
      new Gauge({
        name: name("certificate_not_after_timestamp_seconds"),
        help: "When the agent's serving certificate expires (unix seconds): the one it serves now, reloads included.",
        registers,
        collect() {
          const at = notAfter();
          if (at) this.set(Math.floor(at.getTime() / 1000));
        },
      });
    }
    // three gauges from one read of the records per scrape (prom-client starts their collects together)
    const records = shareWhilePending(() => countRecords(sources.records));
    const recordGauge = (n: string, help: string, pick: (c: RecordCounts) => number) =>
      new Gauge({
        name: name(n),
        help,
        registers,
        async collect() {
          this.set(pick(await records()));
        },
      });
    recordGauge("parked_data_dirs", "Data dirs this front's records say are not back where a finished or rolled-back migration leaves them (the lines of `parked list`).", (c) => c.parkedDataDirs);
    recordGauge("unfinished_migrations", "Migrations recorded on this front with a data dir not yet settled.", (c) => c.unfinished);
    recordGauge("records_unreadable", "Migration records in the state dir that cannot be read (their data dirs are not counted).", (c) => c.unreadable);
    collectDefaultMetrics({ register: this.registry, prefix: METRICS_PREFIX });
  }

  callEnded(op: string, result: CallResult, code: string | undefined, seconds: number | undefined): void {
    this.operations.inc({ op, result });
    if (result === "refused") this.refused.inc({ op, reason: code ?? "INTERNAL" });
    else if (seconds !== undefined) this.durations.observe({ op }, seconds);
  }

  bytesMoved(direction: ByteDirection, bytes: number): void {
    this.rsyncBytes.inc({ direction }, bytes);
  }

  /** The exposition text and its content type, for one scrape. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

interface RecordCounts {
  parkedDataDirs: number;
  unfinished: number;
  unreadable: number;
}

/** Calls made while a read is under way share it; the next call after it settled reads again. */
function shareWhilePending<T>(read: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= read().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}

/** One pass over the records: no file system walk, only the ledgers (what `parked list` shows, without looking at the disk). */
async function countRecords(records: MigrationRegistry): Promise<RecordCounts> {
  const out: RecordCounts = { parkedDataDirs: 0, unfinished: 0, unreadable: 0 };
  let ids: string[];
  try {
    ids = await records.ids();
  } catch {
    // the state dir itself cannot be read: nothing is known, and that is what records_unreadable says
    return { ...out, unreadable: 1 };
  }
  for (const id of ids) {
    const record = await records.find(id).catch(() => null);
    if (record === null) out.unreadable++;
    if (!record) continue;
    out.parkedDataDirs += unsettledEntries(record).length;
    if (isUnfinished(record)) out.unfinished++;
  }
  return out;
}
