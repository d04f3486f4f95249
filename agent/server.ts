// The agent's gRPC server: thin handlers over SiteOperations, errors mapped to a small set of status codes
// with the quick-migrate error code in trailing metadata, one audit log line per operation.
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { ERROR_CODE_METADATA_KEY, QmError, describeError } from "../shared/errors.js";
import { checkMigrationId, checkStepName, checkVersionString } from "../shared/names.js";
import { type ApplyResponse, AgentService, type AgentServer, type Migration } from "../shared/generated/quickmigrate/v1/agent.js";
import type { Logger } from "../shared/logger.js";
import type { MigrationSpec } from "../shared/migration.js";
import type { ChangeRecord } from "../shared/siteTree.js";
import { actionFromWire, kindToWire } from "../shared/wire.js";
import type { AgentConfig } from "./config.js";
import { type AgentFaults, NO_FAULTS } from "./faults.js";
import { SiteOperations } from "./siteOperations.js";
import { Registry } from "./registry.js";
import { serveRsync } from "./rsyncServer.js";
import { WatchedTls } from "./tlsFiles.js";

export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  const qm = err instanceof QmError ? err : new QmError("INTERNAL", describeError(err), {}, { cause: err });
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, qm.code);
  return { code: qm.grpcStatus, details: qm.message, metadata };
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
}

const liveSettings = (c: AgentConfig): LiveSettings => ({ allowedClients: new Set(c.allowedClients), maxConcurrentOps: c.maxConcurrentOps });

export class AgentGrpcServer {
  readonly server: grpc.Server;
  readonly ops: SiteOperations;
  readonly health: HealthImplementation;
  private settings: LiveSettings;
  private active = 0;
  private tls: WatchedTls | undefined;

  constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
    rsyncBin = "rsync",
    faults: AgentFaults = NO_FAULTS,
  ) {
    this.ops = new SiteOperations(config.root, new Registry(config.stateDir), faults);
    this.settings = liveSettings(config);
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
    // the standard health service: any client the TLS layer let in (CA-signed) may ask
    this.health = new HealthImplementation({ "": "SERVING", "quickmigrate.v1.Agent": "SERVING" });
    this.health.addToServer(this.server);

    const audit = log.child({ component: "rpc" });
    /** `fields` names the request in the audit line; `fn` may add to it (the site of a migration id). */
    const unary = <Req, Res>(op: string, fields: (req: Req) => object, fn: (req: Req, audit: Record<string, unknown>) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> =>
      (call, callback) => {
        let context: Record<string, unknown> = {};
        let client = "?";
        let release = () => undefined as void;
        Promise.resolve()
          .then(() => {
            client = this.clientName(call);
            context = { ...fields(call.request) };
            release = this.admit(client);
            return fn(call.request, context);
          })
          .then(
            (res) => {
              audit.info({ op, client, ...context, peer: call.getPeer(), result: "ok" }, "operation");
              callback(null, res);
            },
            (err: unknown) => {
              audit.warn({ op, client, ...context, peer: call.getPeer(), result: "error", err }, "operation");
              callback(toServiceError(err));
            },
          )
          .finally(() => release());
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
          return { registered: r.registered, restoredOnFrontAt: r.restoredOnFrontAt, pastPointOfNoReturn: r.pastPointOfNoReturn };
        },
      ),
      rsync: (call) => {
        let client = "?";
        let release = () => undefined as void;
        Promise.resolve()
          .then(() => {
            client = this.clientName(call);
            // a backstop: whatever happens to the stream, its slot is given back when it closes
            call.once("close", () => release());
            // the slot is taken once the start frame is in: a stream that says nothing holds none
            const rsyncOptions = { rsyncBin, idleMs: config.timeouts.unresponsive * 1000, log: log.child({ component: "rsync", client }) };
            return serveRsync(call, this.ops, rsyncOptions, () => {
              release = this.admit(client);
            });
          })
          .then(
            (info) => audit.info({ op: "rsync", client, ...info, peer: call.getPeer(), result: "ok" }, "operation"),
            (err: unknown) => {
              audit.warn({ op: "rsync", client, peer: call.getPeer(), result: "error", err }, "operation");
              // emit, not destroy: grpc-js sends a destroyed stream's client no status (it would wait for its deadline)
              call.emit("error", Object.assign(new Error(describeError(err)), toServiceError(err)));
            },
          )
          .finally(() => release());
      },
    };
    this.server.addService(AgentService, handlers);
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

  /** A reloaded config: allowedClients and maxConcurrentOps apply to new calls; the rest needs a restart. */
  updateConfig(next: AgentConfig): void {
    this.settings = liveSettings(next);
    const fixed = (["listen", "root", "stateDir", "insecure", "tls", "logLevel", "timeouts"] as const).filter(
      (k) => JSON.stringify(next[k]) !== JSON.stringify(this.config[k]),
    );
    this.log.info({ allowedClients: next.allowedClients, maxConcurrentOps: next.maxConcurrentOps }, "config reloaded");
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
