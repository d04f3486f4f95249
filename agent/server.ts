// The agent's gRPC server: thin handlers over SiteOperations, errors mapped to a small set of status codes
// with the quick-migrate error code in trailing metadata, one audit log line per call (audit.ts).
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { ERROR_CODE_METADATA_KEY, QmError, describeError } from "../shared/errors.js";
import { checkMigrationId, checkStepName, checkVersionString } from "../shared/names.js";
import { type ApplyResponse, AgentService, type AgentServer, type Migration } from "../shared/generated/quickmigrate/v1/agent.js";
import type { Logger } from "../shared/logger.js";
import type { MigrationSpec } from "../shared/migration.js";
import type { ChangeRecord } from "../shared/siteTree.js";
import { actionFromWire, kindToWire } from "../shared/wire.js";
import { type AuditFields, CallAudit, auditHandshakes } from "./audit.js";
import type { AgentConfig } from "./config.js";
import { type AgentFaults, NO_FAULTS } from "./faults.js";
import { MAX_WATCHES_PER_CLIENT, addHealthService } from "./health.js";
import { AgentMetrics } from "./metrics.js";
import { MAX_REFLECTION_STREAMS_PER_CLIENT, PROTO_DIR, addReflectionService } from "./reflection.js";
import { SiteOperations } from "./siteOperations.js";
import { Registry } from "./registry.js";
import { type RsyncRun, serveRsync } from "./rsyncServer.js";
import { WatchedTls } from "./tlsFiles.js";

export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const KEEPALIVE_MS = 30_000;

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
}

const liveSettings = (c: AgentConfig): LiveSettings => ({
  allowedClients: new Set(c.allowedClients),
  maxConcurrentOps: c.maxConcurrentOps,
  operationTimeoutMs: c.operationTimeout * 1000,
});

export class AgentGrpcServer {
  readonly server: grpc.Server;
  readonly ops: SiteOperations;
  readonly health: HealthImplementation;
  /** the Prometheus figures: only when the config has `metrics` (served by main.ts) */
  readonly metrics: AgentMetrics | undefined;
  private readonly audit: CallAudit;
  private settings: LiveSettings;
  private active = 0;
  private tls: WatchedTls | undefined;

  constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
    rsyncBin = "rsync",
    faults: AgentFaults = NO_FAULTS,
  ) {
    this.ops = new SiteOperations(config.root, new Registry(config.stateDir), { dataDirs: config.dataDirs }, faults);
    this.settings = liveSettings(config);
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // a client gone without a word (link down, host off) answers no ping: its connection is dropped, and
      // with it the streams it held open (health Watch, rsync), instead of holding them for ever
      "grpc.keepalive_time_ms": KEEPALIVE_MS,
      "grpc.keepalive_timeout_ms": KEEPALIVE_MS,
    });
    this.metrics = config.metrics
      ? new AgentMetrics({
          inFlight: () => this.active,
          records: this.ops.registry,
          ...(config.tls ? { certificateNotAfter: () => this.tls?.notAfter } : {}),
        })
      : undefined;
    this.audit = new CallAudit(log.child({ component: "rpc" }), this.metrics);
    // the standard health service: any client the TLS layer let in (CA-signed) may ask; its Watch streams are bounded per client
    this.health = new HealthImplementation({ "": "SERVING", "quickmigrate.v1.Agent": "SERVING" });
    addHealthService(this.server, this.health, {
      perClient: MAX_WATCHES_PER_CLIENT,
      clientOf: (call) => this.clientName(call),
      refuse: (call, client, err) => {
        this.audit.end({ op: "health.watch", client, peer: call.getPeer(), service: (call.request as { service?: unknown }).service }, err);
        endWithError(call, err);
      },
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
            return fn(call.request, line);
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
          return changesToWire(await this.ops.apply(req.migrationId, req.step, action));
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
              ...(this.metrics ? { moved: this.metrics.bytesMoved.bind(this.metrics) } : {}),
            };
            const admit = () => {
              release = this.admit(client);
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
          .finally(() => release());
      },
    };
    this.server.addService(AgentService, handlers);

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

  /** Authorisation and the bound on concurrent operations; returns the release of the slot taken. */
  private admit(client: string): () => void {
    if (this.config.tls && !this.settings.allowedClients.has(client)) {
      throw new QmError("NOT_ALLOWED", `client certificate CN=${client} is not in allowedClients`, {});
    }
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

  /** A reloaded config: allowedClients, maxConcurrentOps and operationTimeout apply to new calls; the rest needs a restart. */
  updateConfig(next: AgentConfig): void {
    this.settings = liveSettings(next);
    const fixed = (["listen", "root", "stateDir", "insecure", "tls", "logLevel", "timeouts", "dataDirs", "keepFinished", "allowRoot", "metrics"] as const).filter(
      (k) => JSON.stringify(next[k]) !== JSON.stringify(this.config[k]),
    );
    this.log.info({ allowedClients: next.allowedClients, maxConcurrentOps: next.maxConcurrentOps, operationTimeout: next.operationTimeout }, "config reloaded");
    if (fixed.length > 0) this.log.warn({ keys: fixed }, "config keys changed that take effect only at the next start");
  }

  async credentials(): Promise<grpc.ServerCredentials> {
    const { tls, insecure } = this.config;
    if (insecure || !tls) return grpc.ServerCredentials.createInsecure();
    this.tls = await WatchedTls.open(tls, this.log.child({ component: "tls" }));
    // the same provider serves the CA (to check clients) and our identity; client certificates are required
    return grpc.experimental.createCertificateProviderServerCredentials(this.tls, this.tls, true);
  }

  /** Binds the configured address; returns the address actually bound (the port may have been 0). */
  async listen(): Promise<string> {
    const creds = await this.credentials();
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.config.listen, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
    if (this.tls && !auditHandshakes(this.server, this.audit)) {
      this.log.warn("TLS handshakes that fail cannot be audited with this grpc-js: a client refused for its certificate leaves no line");
    }
    return this.config.listen.replace(/:\d+$/, `:${port}`);
  }

  async stop(graceMs = 5000): Promise<void> {
    this.health.setStatus("", "NOT_SERVING");
    await this.tls?.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
