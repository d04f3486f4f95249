// gRPC server reflection (grpc.reflection.v1 and v1alpha, served by @grpc/reflection), so that grpcurl and
// the like can list and describe the agent's API: quickmigrate.v1.Agent and grpc.health.v1.Health. Like
// health, any client the TLS layer let in may ask (the schema is the published proto, nothing of this
// front); a reflection stream stays open until its client ends it, so a client may hold only a few.
// @grpc/reflection and the descriptors it builds from the .proto files are loaded at the first
// reflection call, not at the start: they cost the agent tens of milliseconds and several MB that an
// agent nobody lists with grpcurl never needs.
import { accessSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import { QmError } from "../shared/errors.js";
import type { AuditFields } from "./audit.js";

export const MAX_REFLECTION_STREAMS_PER_CLIENT = 4;

/**
 * proto/ one folder up from this module: in dist/ the build's copy (dist/proto/, so that an install of
 * dist/ without the sources has it), run from the sources the repository's own.
 */
export const PROTO_DIR = fileURLToPath(new URL("../proto/", import.meta.url));
export const AGENT_PROTO = "quickmigrate/v1/agent.proto";
/** the standard health proto, in proto/ beside the agent's own (its code is generated from it too) */
const HEALTH_PROTO = "grpc/health/v1/health.proto";

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

/** The reflection services @grpc/reflection serves, each with one bidirectional method. */
const SERVICES = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] as const;
const METHOD = "ServerReflectionInfo";

interface LoadedService {
  readonly method: grpc.MethodDefinition<unknown, unknown>;
  readonly handler: grpc.handleBidiStreamingCall<unknown, unknown>;
}

let loaded: Map<string, LoadedService> | undefined;

/**
 * @grpc/reflection's services over the agent's and the health .proto files, made once, at the first
 * call (synchronously: a method's (de)serializer may be the first to ask). Throws when the files do
 * not load: field names are kept as the proto writes them (keepCase), as a client's descriptor expects.
 */
function reflectionServices(): Map<string, LoadedService> {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const { loadSync } = require("@grpc/proto-loader") as typeof import("@grpc/proto-loader");
  const { ReflectionService } = require("@grpc/reflection") as typeof import("@grpc/reflection");
  const definition = loadSync([AGENT_PROTO, HEALTH_PROTO], { includeDirs: [PROTO_DIR], keepCase: true });
  if (!Object.hasOwn(definition, "quickmigrate.v1.Agent")) throw new Error(`${join(PROTO_DIR, AGENT_PROTO)} defines no quickmigrate.v1.Agent`);
  const services = new Map<string, LoadedService>();
  new ReflectionService(definition).addToServer({
    addService(service, implementation) {
      const method = service[METHOD] as grpc.MethodDefinition<unknown, unknown>;
      services.set(method.path.split("/")[1] as string, { method, handler: implementation[METHOD] as grpc.handleBidiStreamingCall<unknown, unknown> });
    },
  });
  for (const name of SERVICES) if (!services.has(name)) throw new Error(`@grpc/reflection serves no ${name}`);
  loaded = services;
  return services;
}

/** A service definition whose (de)serializers are @grpc/reflection's own, loaded when first used. */
function lazyDefinition(service: (typeof SERVICES)[number]): grpc.ServiceDefinition {
  const real = () => (reflectionServices().get(service) as LoadedService).method;
  const method: grpc.MethodDefinition<unknown, unknown> = {
    path: `/${service}/${METHOD}`,
    requestStream: true,
    responseStream: true,
    originalName: "serverReflectionInfo",
    requestSerialize: (value) => real().requestSerialize(value),
    requestDeserialize: (bytes) => real().requestDeserialize(bytes),
    responseSerialize: (value) => real().responseSerialize(value),
    responseDeserialize: (bytes) => real().responseDeserialize(bytes),
  };
  return { [METHOD]: method };
}

/**
 * Adds the reflection services to `server`. Throws when the .proto files are not there (then nothing
 * was added); what they hold is read at the first reflection call, which is refused (INTERNAL) if they
 * do not load.
 */
export function addReflectionService(server: Pick<grpc.Server, "addService">, bound: ReflectionBound): void {
  accessSync(join(PROTO_DIR, AGENT_PROTO));
  accessSync(join(PROTO_DIR, HEALTH_PROTO));
  const open = new Map<string, number>();
  for (const service of SERVICES) {
    const wrapped = (call: ReflectionCall) => {
      const client = bound.clientOf(call);
      const fields: AuditFields = { op: "reflection", client, peer: call.getPeer() };
      bound.audit.began(fields);
      let handler: grpc.handleBidiStreamingCall<unknown, unknown>;
      try {
        handler = (reflectionServices().get(service) as LoadedService).handler;
      } catch (err) {
        const refused = new QmError("INTERNAL", `gRPC reflection cannot be served: its .proto files do not load: ${err instanceof Error ? err.message : String(err)}`);
        bound.audit.end(fields, refused);
        bound.refuse(call, refused);
        return;
      }
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
      handler(call);
    };
    server.addService(lazyDefinition(service), { [METHOD]: wrapped });
  }
}
