// The standard grpc.health.v1 service, served by grpc-health-check's own handlers (Check, List and
// Watch as the package answers them), with one bound added: a Watch never ends by itself, so a client
// may hold at most `perClient` of them open; one more is refused with TOO_MANY_STREAMS. A Check first
// lets the status be brought up to date (`beforeCheck`); a stopping agent ends the open Watches.
import type * as grpc from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";
import { QmError } from "../shared/errors.js";

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
export function addHealthService(server: grpc.Server, health: HealthImplementation, bound: WatchBound): HealthService {
  const open = new Map<string, number>();
  const calls = new Set<WatchCall>();
  health.addToServer({
    addService(service, implementation) {
      const watch = implementation.watch as grpc.handleServerStreamingCall<unknown, unknown> | undefined;
      const check = implementation.check as grpc.handleUnaryCall<unknown, unknown> | undefined;
      if (watch === undefined || check === undefined) throw new Error("grpc-health-check serves no Watch or no Check: the health service has nothing to wrap");
      const bounded = (call: WatchCall): void => {
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
      const checked: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
        const before = bound.beforeCheck?.() ?? Promise.resolve();
        void before.catch(() => undefined).then(() => check(call, callback));
      };
      server.addService(service as unknown as grpc.ServiceDefinition, { ...implementation, watch: bounded, check: checked });
    },
  });
  return {
    endWatches(end) {
      for (const call of [...calls]) end(call);
    },
  };
}
