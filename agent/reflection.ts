// gRPC server reflection (grpc.reflection.v1 and v1alpha, served by @grpc/reflection), so that grpcurl and
// the like can list and describe the agent's API: quickmigrate.v1.Agent and grpc.health.v1.Health. Like
// health, any client the TLS layer let in may ask (the schema is the published proto, nothing of this
// front); a reflection stream stays open until its client ends it, so a client may hold only a few.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { QmError } from "../shared/errors.js";
import type { AuditFields } from "./audit.js";

export const MAX_REFLECTION_STREAMS_PER_CLIENT = 4;

/**
 * proto/ one folder up from this module: in dist/ the build's copy (dist/proto/, so that an install of
 * dist/ without the sources has it), run from the sources the repository's own.
 */
export const PROTO_DIR = fileURLToPath(new URL("../proto/", import.meta.url));
export const AGENT_PROTO = "quickmigrate/v1/agent.proto";
/** grpc-health-check ships the health proto as `<its folder>/proto/health/v1/health.proto` */
const HEALTH_PROTO = "health/v1/health.proto";
const HEALTH_PROTO_DIR = dirname(dirname(dirname(healthProtoPath)));

type ReflectionCall = grpc.ServerDuplexStream<unknown, unknown>;

export interface ReflectionBound {
  readonly perClient: number;
  /** the name the bound counts by: the client certificate's CN */
  clientOf(call: ReflectionCall): string;
  /** the audit: one line per reflection stream, when it ends or is refused */
  readonly audit: { began(fields: AuditFields): void; end(fields: AuditFields, err?: unknown): void };
  /** ends a stream that is refused with the error's status */
  refuse(call: ReflectionCall, err: QmError): void;
}

/**
 * Adds the reflection services to `server`. Throws when the .proto files cannot be read (then nothing
 * was added): field names are kept as the proto writes them (keepCase), as a client's descriptor expects.
 */
export function addReflectionService(server: Pick<grpc.Server, "addService">, bound: ReflectionBound): void {
  const definition = loadSync([AGENT_PROTO, HEALTH_PROTO], { includeDirs: [PROTO_DIR, HEALTH_PROTO_DIR], keepCase: true });
  if (!Object.hasOwn(definition, "quickmigrate.v1.Agent")) throw new Error(`${join(PROTO_DIR, AGENT_PROTO)} defines no quickmigrate.v1.Agent`);
  const open = new Map<string, number>();
  new ReflectionService(definition).addToServer({
    addService(service, implementation) {
      const wrapped: grpc.UntypedServiceImplementation = {};
      for (const [method, handler] of Object.entries(implementation)) {
        wrapped[method] = (call: ReflectionCall) => {
          const client = bound.clientOf(call);
          const fields: AuditFields = { op: "reflection", client, peer: call.getPeer() };
          bound.audit.began(fields);
          const held = open.get(client) ?? 0;
          if (held >= bound.perClient) {
            const err = new QmError("TOO_MANY_STREAMS", `client ${client} already holds ${held} reflection streams (at most ${bound.perClient})`);
            bound.audit.end(fields, err);
            bound.refuse(call, err);
            return;
          }
          open.set(client, held + 1);
          let requests = 0;
          call.on("data", () => requests++);
          let closed = false;
          const close = (): void => {
            if (closed) return;
            closed = true;
            const left = (open.get(client) ?? 1) - 1;
            if (left > 0) open.set(client, left);
            else open.delete(client);
            bound.audit.end(Object.assign(fields, { requests }));
          };
          call.once("cancelled", close);
          call.once("close", close);
          (handler as grpc.handleBidiStreamingCall<unknown, unknown>)(call);
        };
      }
      server.addService(service, wrapped);
    },
  });
}
