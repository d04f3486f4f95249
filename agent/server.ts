// The agent's gRPC server: thin handlers over SiteOperations, errors mapped to a small set of status codes
// with the quick-migrate error code in trailing metadata, one audit log line per call (audit.ts), the
// health service (healthMonitor.ts) and the graceful stop (stop()).
import * as grpc from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY, QmError, describeError } from "../shared/errors.js";
import { checkMigrationId, checkStepName, checkVersionString } from "../shared/names.js";
import { type ApplyResponse, type AgentServer, type Migration } from "../shared/generated/quickmigrate/v1/agent.js";
import type { Logger } from "../shared/logger.js";
import { AgentServiceWithRsyncCodec } from "../shared/rsyncFrameCodec.js";
import type { MigrationSpec } from "../shared/migration.js";
import { AGENT_KEEPALIVE_MS, adaptReceiveWindows } from "../shared/receiveWindow.js";
import type { ChangeRecord } from "../shared/siteTree.js";
import { actionFromWire, kindToWire } from "../shared/wire.js";
import { type AuditFields, CallAudit, auditHandshakes } from "./audit.js";
import type { AgentConfig } from "./config.js";
import { type AgentFaults, NO_FAULTS } from "./faults.js";
import { type HealthService, HealthStatuses, MAX_WATCHES_PER_CLIENT, addHealthService } from "./health.js";
import { HEALTH_SERVICES, HealthMonitor } from "./healthMonitor.js";
import type { AgentMetrics } from "./metrics.js";
import { MAX_REFLECTION_STREAMS_PER_CLIENT, PROTO_DIR, addReflectionService } from "./reflection.js";
import { SiteOperations } from "./siteOperations.js";
import { Registry } from "./registry.js";
import { type RsyncRun, serveRsync } from "./rsyncServer.js";
import { WatchedTls } from "./tlsFiles.js";

export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  const qm = err instanceof QmError ? err : new QmError("INTERNAL", describeError(err), {}, { cause: err });
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, qm.code);
  return { code: qm.grpcStatus, details: qm.message, metadata };
}

/** Ends a streaming call with the error's status. Emit, not destroy: grpc-js sends a destroyed stream's client no status (it would wait for its deadline). */
function endWithError(call: { emit(event: "error", err: Error): boolean }, err: unknown): void {
  call.emit("error", Object.assign(new Error(describeError(err)), toServiceError(err)));
}

function specFromWire(m: Migration | undefined): MigrationSpec {
  if (!m) throw new QmError("USAGE", "migration is required", { key: "migration" });
  return { id: m.id, from: m.from, site: m.site, to: m.to, newSite: m.newSite, dataDirs: m.dataDirs };
}

function changesToWire(changes: ChangeRecord[]): ApplyResponse {
  return {
    changes: changes.map((c) => ({
      dataDir: c.dataDir,
      from: c.from,
      to: c.to,
      kind: kindToWire(c.kind),
      linkTarget: c.linkTarget ?? "",
      result: c.result,
    })),
    repeated: changes.every((c) => c.result === "already-done" || c.result === "absent"),
  };
}

/** What a config reload may change while the agent runs; the rest takes effect at the next start. */
interface LiveSettings {
  readonly allowedClients: ReadonlySet<string>;
  readonly maxConcurrentOps: number;
  readonly operationTimeoutMs: number;
  readonly stopTimeoutMs: number;
}

const liveSettings = (c: AgentConfig): LiveSettings => ({
  allowedClients: new Set(c.allowedClients),
  maxConcurrentOps: c.maxConcurrentOps,
  operationTimeoutMs: c.operationTimeout * 1000,
  stopTimeoutMs: c.stopTimeout * 1000,
});

/** An operation the agent is working on: a stop waits for `done`; `cancel` ends it early (rsync runs only). */
interface InFlight {
  readonly op: string;
  readonly done: Promise<void>;
  readonly cancel?: () => void;
}

/** After the operations, how long the answers they sent (and calls still open) get before the server is shut down hard. */
const SHUTDOWN_GRACE_MS = 2000;
/** How long ended rsync runs get to report their end to their clients. */
const CANCEL_GRACE_MS = 5000;

/** true when `p` settled within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

export class AgentGrpcServer {
  readonly server: grpc.Server;
  readonly ops: SiteOperations;
  readonly health: HealthStatuses;
  private readonly monitor: HealthMonitor;
  private readonly healthService: HealthService;
  /** the Prometheus figures: only when the config has `metrics` (served by main.ts) */
  readonly metrics: AgentMetrics | undefined;
  private readonly audit: CallAudit;
  private settings: LiveSettings;
  private active = 0;
  private readonly inFlight = new Set<InFlight>();
  private stopping: Promise<void> | undefined;
  private tls: WatchedTls | undefined;

  /**
   * The server for `config`: prom-client (metrics.ts) is loaded only when the config has `metrics`,
   * so that an agent without them neither starts slower nor holds more memory for them.
   */
  static async create(config: AgentConfig, log: Logger, rsyncBin = "rsync", faults: AgentFaults = NO_FAULTS): Promise<AgentGrpcServer> {
    const metrics = config.metrics ? (await import("./metrics.js")).AgentMetrics : undefined;
    return new AgentGrpcServer(config, log, rsyncBin, faults, metrics);
  }

  /** `Metrics`: AgentMetrics when the config has `metrics` (create() passes it), else undefined. */
  constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
    rsyncBin = "rsync",
    faults: AgentFaults = NO_FAULTS,
    Metrics?: typeof AgentMetrics,
  ) {
    this.ops = new SiteOperations(config.root, new Registry(config.stateDir), { dataDirs: config.dataDirs }, faults);
    this.settings = liveSettings(config);
    // before the server starts: each connection's receive window (a push's data) then follows its link
    adaptReceiveWindows(AGENT_KEEPALIVE_MS, log.child({ component: "window" }));
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // a client gone without a word (link down, host off) answers no ping: its connection is dropped, and
      // with it the streams it held open (health Watch, rsync), instead of holding them for ever
      "grpc.keepalive_time_ms": AGENT_KEEPALIVE_MS,
      "grpc.keepalive_timeout_ms": AGENT_KEEPALIVE_MS,
    });
    if (config.metrics && !Metrics) throw new Error("AgentGrpcServer: the config has metrics: make it with AgentGrpcServer.create");
    this.metrics = Metrics
      ? new Metrics({
          inFlight: () => this.active,
          records: this.ops.registry,
          ...(config.tls ? { certificateNotAfter: () => this.tls?.notAfter } : {}),
        })
      : undefined;
    this.audit = new CallAudit(log.child({ component: "rpc" }), this.metrics);
    // the standard health service: any client the TLS layer let in (CA-signed) may ask; its Watch streams are bounded per client.
    // NOT_SERVING until the monitor's first look (made before the server listens).
    this.health = new HealthStatuses(Object.fromEntries(HEALTH_SERVICES.map((service) => [service, "NOT_SERVING" as const])));
    this.monitor = new HealthMonitor(this.health, log.child({ component: "health" }), {
      root: config.root,
      stateDir: config.stateDir,
      minFreeBytes: config.minFreeBytes,
      intervalMs: config.healthInterval * 1000,
    });
    this.healthService = addHealthService(this.server, this.health, {
      perClient: MAX_WATCHES_PER_CLIENT,
      clientOf: (call) => this.clientName(call),
      refuse: (call, client, err) => {
        this.audit.end({ op: "health.watch", client, peer: call.getPeer(), service: (call.request as { service?: unknown }).service }, err);
        endWithError(call, err);
      },
      beforeCheck: () => this.monitor.fresh(),
    });

    /**
     * `fields` names the request in the audit line; `fn` may add to it (the site of a migration id).
     * The call's slot is held while the agent works on it, and no longer than operationTimeout: a call
     * still running then is answered TIMED_OUT (what it did in the end gets a line of its own).
     */
    const unary = <Req, Res>(op: string, fields: (req: Req) => object, fn: (req: Req, audit: AuditFields) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> =>
      (call, callback) => {
        const line: AuditFields = { op, client: "?", peer: call.getPeer() };
        this.audit.began(line);
        let release = () => undefined as void;
        let timer: NodeJS.Timeout | undefined;
        let answered = false;
        const answer = (err: unknown, res?: Res): void => {
          answered = true;
          clearTimeout(timer);
          release();
          this.audit.end(line, err);
          if (err === undefined) callback(null, res);
          else callback(toServiceError(err));
        };
        Promise.resolve()
          .then(() => {
            line.client = this.clientName(call);
            Object.assign(line, fields(call.request));
            release = this.admit(line.client);
            const limitMs = this.settings.operationTimeoutMs;
            timer = setTimeout(
              () => answer(new QmError("TIMED_OUT", `${op} did not finish within operationTimeout (${limitMs / 1000} s); it may still finish`)),
              limitMs,
            );
            return this.track(op, Promise.resolve().then(() => fn(call.request, line)));
          })
          .then(
            (res) => (answered ? this.audit.late(line) : answer(undefined, res)),
            (err: unknown) => (answered ? this.audit.late(line, err) : answer(err)),
          );
      };

    const handlers: AgentServer = {
      hello: unary("hello", () => ({}), async (req) => {
        checkVersionString(req.controllerVersion);
        return this.ops.hello();
      }),
      preflight: unary(
        "preflight",
        (req) => ({ migrationId: req.migration?.id, site: req.migration?.site }),
        async (req) => {
          const report = await this.ops.preflight(specFromWire(req.migration), { register: req.register, local: req.local });
          return {
            problems: report.problems,
            dataDirs: report.dataDirs.map((d) => ({ dataDir: d.dataDir, kind: kindToWire(d.kind), linkTarget: d.linkTarget ?? "" })),
          };
        },
      ),
      apply: unary(
        "apply",
        (req) => ({ migrationId: req.migrationId, step: req.step, action: actionFromWire(req.action) ?? req.action }),
        async (req, auditFields) => {
          const action = actionFromWire(req.action);
          if (!action) throw new QmError("USAGE", `unknown action ${req.action}`, { key: "action" });
          // the step names the operation's record: a short lowercase name, never a path
          checkStepName(req.step);
          auditFields.site = (await this.ops.migration(req.migrationId)).site;
          return changesToWire(await this.ops.apply(req.migrationId, req.step, action, req.run));
        },
      ),
      inspect: unary(
        "inspect",
        (req) => ({ migrationId: req.migrationId }),
        async (req) => {
          checkMigrationId(req.migrationId);
          const r = await this.ops.inspect(req.migrationId);
          return { registered: r.registered, restoredOnFrontAt: r.restoredOnFrontAt, pastPointOfNoReturn: r.pastPointOfNoReturn, endedAs: r.endedAs };
        },
      ),
      rsync: (call) => {
        const line: AuditFields = { op: "rsync", client: "?", peer: call.getPeer() };
        this.audit.began(line);
        // filled in by the tunnel as it learns them: the migration from the start frame, the bytes each way
        const run: RsyncRun = { bytesIn: 0, bytesOut: 0 };
        let release = () => undefined as void;
        // a stop that finds it still running at stopTimeout ends it
        const stop = new AbortController();
        let ended = () => undefined as void;
        Promise.resolve()
          .then(() => {
            line.client = this.clientName(call);
            const client = line.client;
            // a backstop: whatever happens to the stream, its slot is given back when it closes
            call.once("close", () => release());
            // the slot is taken once the start frame is in: a stream that says nothing holds none
            const rsyncOptions = {
              rsyncBin,
              idleMs: config.timeouts.unresponsive * 1000,
              log: log.child({ component: "rsync", client }),
              stop: stop.signal,
              ...(this.metrics ? { moved: this.metrics.bytesMoved.bind(this.metrics) } : {}),
            };
            const admit = () => {
              release = this.admit(client);
              const done = new Promise<void>((resolve) => (ended = resolve));
              const entry: InFlight = { op: "rsync", done, cancel: () => stop.abort() };
              this.inFlight.add(entry);
              void done.then(() => this.inFlight.delete(entry));
            };
            return serveRsync(call, this.ops, rsyncOptions, admit, run);
          })
          .then(
            () => this.audit.end(Object.assign(line, run)),
            (err: unknown) => {
              this.audit.end(Object.assign(line, run), err);
              endWithError(call, err);
            },
          )
          .finally(() => {
            release();
            ended();
          });
      },
    };
    this.server.addService(AgentServiceWithRsyncCodec, handlers);

    // gRPC server reflection (grpcurl list/describe): the API's schema, to any client the TLS layer let in
    try {
      addReflectionService(this.server, {
        perClient: MAX_REFLECTION_STREAMS_PER_CLIENT,
        clientOf: (call) => this.clientName(call),
        audit: this.audit,
        refuse: (call, err) => endWithError(call, err),
      });
    } catch (err) {
      log.warn({ protoDir: PROTO_DIR, err: describeError(err) }, "gRPC reflection not served: its .proto files cannot be loaded");
    }
  }

  /** The client certificate's common name; in plaintext (development) mode there is none. */
  private clientName(call: { getAuthContext(): { sslPeerCertificate?: { subject?: { CN?: string | string[] } } } }): string {
    if (!this.config.tls) return "(plaintext)";
    const cn = call.getAuthContext().sslPeerCertificate?.subject?.CN;
    return Array.isArray(cn) ? cn.join(",") : (cn ?? "(no CN)");
  }

  /** Keeps `work` among the operations in flight until it settles (a stop waits for it); returns it. */
  private track<T>(op: string, work: Promise<T>): Promise<T> {
    const entry: InFlight = { op, done: work.then(() => undefined, () => undefined) };
    this.inFlight.add(entry);
    void entry.done.then(() => this.inFlight.delete(entry));
    return work;
  }

  /** Authorisation, a stopping agent and the bound on concurrent operations; returns the release of the slot taken. */
  private admit(client: string): () => void {
    if (this.config.tls && !this.settings.allowedClients.has(client)) {
      throw new QmError("NOT_ALLOWED", `client certificate CN=${client} is not in allowedClients`, {});
    }
    if (this.stopping) throw new QmError("STOPPING", "agent stopping: it takes no new operation", {});
    if (this.active >= this.settings.maxConcurrentOps) {
      throw new QmError("BUSY", `agent busy: ${this.active} operations running (maxConcurrentOps ${this.settings.maxConcurrentOps})`, {});
    }
    this.active++;
    let released = false;
    return () => {
      if (!released) this.active--;
      released = true;
    };
  }

  /**
   * A reloaded config: allowedClients, maxConcurrentOps and operationTimeout apply to new calls,
   * minFreeBytes from the next health look, stopTimeout to the next stop; the rest needs a restart.
   */
  updateConfig(next: AgentConfig): void {
    this.settings = liveSettings(next);
    this.monitor.setMinFreeBytes(next.minFreeBytes);
    const fixed = (
      ["listen", "root", "stateDir", "insecure", "tls", "logLevel", "timeouts", "dataDirs", "keepFinished", "allowRoot", "healthInterval", "metrics"] as const
    ).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.config[k]));
    this.log.info(
      {
        allowedClients: next.allowedClients,
        maxConcurrentOps: next.maxConcurrentOps,
        operationTimeout: next.operationTimeout,
        minFreeBytes: next.minFreeBytes,
        stopTimeout: next.stopTimeout,
      },
      "config reloaded",
    );
    if (fixed.length > 0) this.log.warn({ keys: fixed }, "config keys changed that take effect only at the next start");
  }

  /** Reads the TLS files again now (SIGHUP), as their watcher does on a change; false when they were rejected. */
  async reloadTls(): Promise<boolean> {
    return (await this.tls?.reload()) ?? true;
  }

  async credentials(): Promise<grpc.ServerCredentials> {
    const { tls, insecure } = this.config;
    if (insecure || !tls) return grpc.ServerCredentials.createInsecure();
    this.tls = await WatchedTls.open(tls, this.log.child({ component: "tls" }));
    // the same provider serves the CA (to check clients) and our identity; client certificates are required
    return grpc.experimental.createCertificateProviderServerCredentials(this.tls, this.tls, true);
  }

  /** Binds the configured address, health looked at first; returns the address actually bound (the port may have been 0). */
  async listen(): Promise<string> {
    const creds = await this.credentials();
    await this.monitor.start();
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.config.listen, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
    if (this.tls && !auditHandshakes(this.server, this.audit)) {
      this.log.warn("TLS handshakes that fail cannot be audited with this grpc-js: a client refused for its certificate leaves no line");
    }
    return this.config.listen.replace(/:\d+$/, `:${port}`);
  }

  /**
   * The graceful stop (SIGTERM, SIGINT), once however often it is asked: health NOT_SERVING first; new
   * operations refused (STOPPING) while health calls still answer; the operations in flight waited for,
   * up to stopTimeout. Past it, the rsync runs still going are ended (a cut push is undone by
   * push-site's undo, a cut fetch changed nothing here) and only renames under way are waited for, so
   * that none is left half-done. Then the open Watches are ended and the server shut down.
   */
  stop(): Promise<void> {
    this.stopping ??= this.drain();
    return this.stopping;
  }

  private async drain(): Promise<void> {
    const log = this.log.child({ component: "stop" });
    const boundMs = this.settings.stopTimeoutMs;
    this.monitor.stop();
    const waiting = [...this.inFlight];
    if (waiting.length > 0) log.info({ inFlight: waiting.map((e) => e.op), stopTimeout: boundMs / 1000 }, "waiting for the operations in flight");
    if (!(await within(Promise.all(waiting.map((e) => e.done)), boundMs))) {
      const left = [...this.inFlight];
      log.warn({ inFlight: left.map((e) => e.op), stopTimeout: boundMs / 1000 }, "operations still running at stopTimeout: ending rsync runs, finishing renames");
      for (const e of left) e.cancel?.();
      await this.ops.closeRenames();
      await within(Promise.all(left.filter((e) => e.cancel).map((e) => e.done)), CANCEL_GRACE_MS);
    }
    this.healthService.endWatches((call) => endWithError(call, new QmError("STOPPING", "agent stopping")));
    await this.tls?.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
