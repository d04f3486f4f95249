// The standard grpc.health.v1 service (Check, List and Watch, answered as grpc-health-check answers them),
// from code generated from its proto (shared/generated/grpc/health/v1): grpc-health-check itself parses
// its .proto with protobufjs when it is loaded, which cost the agent's start tens of milliseconds and ~4 MB.
// One bound added: a Watch never ends by itself, so a client may hold at most `perClient` of them open;
// one more is refused with TOO_MANY_STREAMS. A Check first lets the status be brought up to date
// (`beforeCheck`); a stopping agent ends the open Watches.
import type * as grpc from "@grpc/grpc-js";
import { QmError } from "../shared/errors.js";
import {
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponse,
  type HealthServer,
  HealthService as HealthServiceDefinition,
} from "../shared/generated/grpc/health/v1/health.js";
import type { HealthStatusSink } from "./healthMonitor.js";

/** gRPC status codes of the health service's own refusals (as grpc-health-check sends them) */
const NOT_FOUND = 5;
const RESOURCE_EXHAUSTED = 8;
/** List refuses to name more services than this (as grpc-health-check does) */
const LIST_LIMIT = 100;

type StatusName = "SERVING" | "NOT_SERVING";

/** The status of each service the agent answers for, and the Watches waiting for news of one. */
export class HealthStatuses implements HealthStatusSink {
  private readonly statuses = new Map<string, StatusName>();
  private readonly watchers = new Map<string, Set<(status: ServingStatus) => void>>();

  constructor(initial: Readonly<Record<string, StatusName>>) {
    for (const [service, status] of Object.entries(initial)) this.statuses.set(service, status);
  }

  /** Stores the status and sends it to every Watch of the service (each time, as grpc-health-check does). */
  setStatus(service: string, status: StatusName): void {
    this.statuses.set(service, status);
    for (const watcher of this.watchers.get(service) ?? []) watcher(ServingStatus[status]);
  }

  /** The handlers of the service, unbounded: addHealthService bounds Watch and refreshes before Check. */
  handlers(): HealthServer {
    return {
      check: (call, callback) => {
        const status = this.statuses.get(call.request.service);
        if (status) callback(null, { status: ServingStatus[status] });
        else callback({ code: NOT_FOUND, details: `Health status unknown for service ${call.request.service}` });
      },
      watch: (call) => {
        const service = call.request.service;
        const watcher = (status: ServingStatus) => void call.write({ status });
        let set = this.watchers.get(service);
        if (!set) this.watchers.set(service, (set = new Set()));
        set.add(watcher);
        const remove = () => {
          set.delete(watcher);
          if (set.size === 0 && this.watchers.get(service) === set) this.watchers.delete(service);
        };
        call.once("cancelled", remove);
        call.once("close", remove);
        const current = this.statuses.get(service);
        call.write({ status: current ? ServingStatus[current] : ServingStatus.SERVICE_UNKNOWN });
      },
      list: (_call, callback) => {
        if (this.statuses.size > LIST_LIMIT) {
          callback({ code: RESOURCE_EXHAUSTED, details: "Too many services to list." }, null);
          return;
        }
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const [service, status] of this.statuses) statuses[service] = { status: ServingStatus[status] };
        callback(null, { statuses });
      },
    };
  }
}

export const MAX_WATCHES_PER_CLIENT = 4;

type WatchCall = grpc.ServerWritableStream<unknown, unknown>;

export interface WatchBound {
  readonly perClient: number;
  /** the name the bound counts by: the client certificate's CN */
  clientOf(call: WatchCall): string;
  /** ends a Watch that is refused, with its audit line */
  refuse(call: WatchCall, client: string, err: QmError): void;
  /** runs before a Check is answered from the stored status; it must settle soon */
  beforeCheck?(): Promise<void>;
}

export interface HealthService {
  /** Ends every open Watch with `end` (a stopping agent, after the NOT_SERVING they were sent). */
  endWatches(end: (call: WatchCall) => void): void;
}

/** Adds the health service to `server`, its Watch bounded per client. */
export function addHealthService(server: grpc.Server, health: HealthStatuses, bound: WatchBound): HealthService {
  const open = new Map<string, number>();
  const calls = new Set<WatchCall>();
  const { check, watch, list } = health.handlers();
  const bounded = (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>): void => {
    const client = bound.clientOf(call);
    const held = open.get(client) ?? 0;
    if (held >= bound.perClient) {
      bound.refuse(call, client, new QmError("TOO_MANY_STREAMS", `client ${client} already holds ${held} health Watch streams (at most ${bound.perClient})`));
      return;
    }
    open.set(client, held + 1);
    calls.add(call);
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      calls.delete(call);
      const left = (open.get(client) ?? 1) - 1;
      if (left > 0) open.set(client, left);
      else open.delete(client);
    };
    // a Watch ends when its client cancels it, its deadline passes or its connection goes
    call.once("cancelled", close);
    call.once("close", close);
    watch(call);
  };
  const checked: typeof check = (call, callback) => {
    const before = bound.beforeCheck?.() ?? Promise.resolve();
    void before.catch(() => undefined).then(() => check(call, callback));
  };
  server.addService(HealthServiceDefinition, { check: checked, watch: bounded, list } satisfies HealthServer);
  return {
    endWatches(end) {
      for (const call of [...calls]) end(call);
    },
  };
}
