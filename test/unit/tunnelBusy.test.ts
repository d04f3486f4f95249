// The rsync tunnel and a busy agent: a stream the agent refuses BUSY (before its rsync starts) is run
// again, the real rsync binary included; any other refusal is not. A fake stream stands in for the agent.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import pLimit from "p-limit";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentConnectionLike } from "../../controller/agentConnection.js";
import { RsyncTunnel } from "../../controller/tunnel.js";
import { ERROR_CODE_METADATA_KEY, QmError } from "../../shared/errors.js";
import { checkRsync } from "../../scripts/lib/cluster.js";
import { fetchFromWeb1 } from "../helpers/tunnelRun.js";

/** A stream that the agent ends at once with `code` (as agent/server.ts's endWithError does). */
function refusedStream(code: "BUSY" | "NOT_ALLOWED"): PassThrough & { cancel(): void } {
  const stream = Object.assign(new PassThrough({ objectMode: true }), { cancel: () => undefined });
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, code);
  const err = Object.assign(new Error(`${code === "BUSY" ? grpc.status.UNAVAILABLE : grpc.status.PERMISSION_DENIED} refused`), {
    code: code === "BUSY" ? grpc.status.UNAVAILABLE : grpc.status.PERMISSION_DENIED,
    details: code === "BUSY" ? "agent busy: 1 operations running (maxConcurrentOps 1)" : "client not allowed",
    metadata,
  });
  setTimeout(() => stream.destroy(err), 20);
  return stream;
}

function front(answers: Array<"BUSY" | "NOT_ALLOWED">): AgentConnectionLike & { opened: number } {
  const f = {
    name: "web1",
    local: false,
    opened: 0,
    openRsync: () => refusedStream(answers[f.opened++] ?? "NOT_ALLOWED"),
    hello: () => Promise.reject(new Error("unused")),
    preflight: () => Promise.reject(new Error("unused")),
    apply: () => Promise.reject(new Error("unused")),
    inspect: () => Promise.reject(new Error("unused")),
    close: () => undefined,
  };
  return f as unknown as AgentConnectionLike & { opened: number };
}

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function runOn(tunnel: RsyncTunnel, f: AgentConnectionLike): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), "qm-tunnel-busy-"));
  return fetchFromWeb1(tunnel, f, dir);
}

describe("RsyncTunnel and a busy agent", () => {
  const rsync = checkRsync();

  it("a stream refused BUSY is run again; the next refusal (not BUSY) is the run's error", async () => {
    const f = front(["BUSY", "BUSY", "NOT_ALLOWED"]);
    const err = await runOn(new RsyncTunnel(rsync, pino({ level: "silent" }), 5000, pLimit(1), 60_000), f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmError);
    expect(err).toMatchObject({ code: "NOT_ALLOWED", context: { host: "web1" } });
    expect(f.opened).toBe(3);
  });

  it("still BUSY at busyWaitMs: BUSY, and no more streams", async () => {
    const f = front(Array.from({ length: 100 }, () => "BUSY" as const));
    const started = Date.now();
    const err = await runOn(new RsyncTunnel(rsync, pino({ level: "silent" }), 5000, undefined, 400), f).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "BUSY", message: expect.stringContaining("still busy after") });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(f.opened).toBeGreaterThan(1);
    expect(f.opened).toBeLessThan(10);
  });
});
