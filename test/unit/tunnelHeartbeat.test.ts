// The controller's end of the rsync tunnel tells the agent that its bytes are still arriving: while
// non-empty data frames come in, it sends an empty data frame at least every 500 ms (what the agent
// handed over may sit in the link's buffers for seconds, and its idle bound must not end that
// transfer); the agent's own empty heartbeats get none back, so two silent ends never keep each other
// alive. A fake stream stands in for the agent, the real rsync binary for the client.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentConnectionLike } from "../../controller/agentConnection.js";
import { RsyncTunnel } from "../../controller/tunnel.js";
import { checkRsync } from "../../scripts/lib/cluster.js";
import { fetchFromWeb1 } from "../helpers/tunnelRun.js";

type Frame = { frame?: { $case: string; value: unknown } };

/** A fake agent's stream that sends `frames` one every `everyMs`, then ends; what the tunnel writes is kept. */
function agentStream(frames: Buffer[], everyMs: number): { stream: Duplex & { cancel(): void }; written: Frame[] } {
  const written: Frame[] = [];
  const stream = Object.assign(
    new Duplex({
      objectMode: true,
      read() {},
      write(chunk: Frame, _enc, cb) {
        written.push(chunk);
        cb();
      },
    }),
    { cancel: () => undefined },
  );
  let i = 0;
  const timer = setInterval(() => {
    if (i < frames.length) stream.push({ frame: { $case: "data", value: frames[i++] } });
    else {
      clearInterval(timer);
      stream.push(null);
    }
  }, everyMs);
  return { stream, written };
}

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

async function carry(frames: Buffer[], everyMs: number): Promise<Frame[]> {
  const { stream, written } = agentStream(frames, everyMs);
  const front = { name: "web1", local: false, openRsync: () => stream } as unknown as AgentConnectionLike;
  dir = mkdtempSync(join(tmpdir(), "qm-tunnel-heartbeat-"));
  // the session never gets past the greeting: rsync fails once the stream ends, which is not the point here
  await fetchFromWeb1(new RsyncTunnel(checkRsync(), pino({ level: "silent" }), 30_000), front, dir).catch(() => undefined);
  return written;
}

const emptyDataFrames = (written: Frame[]) => written.filter((w) => w.frame?.$case === "data" && (w.frame.value as Buffer).length === 0).length;

describe("RsyncTunnel heartbeat", () => {
  it("while the agent's bytes arrive (a greeting, one byte every 150 ms for 2 s), it sends empty data frames upstream", async () => {
    const greeting = [..."@RSYNCD: 32.0"].map((c) => Buffer.from(c));
    const written = await carry(greeting, 150);
    expect(written[0]?.frame?.$case).toBe("start");
    expect(emptyDataFrames(written)).toBeGreaterThanOrEqual(2);
  });

  it("the agent's own empty heartbeats get none back", async () => {
    const written = await carry(Array.from({ length: 13 }, () => Buffer.alloc(0)), 150);
    expect(written[0]?.frame?.$case).toBe("start");
    expect(emptyDataFrames(written)).toBe(0);
  });
});
