// The wait for a busy agent: calls made again while it answers BUSY, with a growing pause, within the
// call's deadline; anything else is thrown at once; a signal ends the wait.
import { describe, expect, it } from "vitest";
import { BUSY_FIRST_DELAY_MS, BUSY_MAX_DELAY_MS, busyDelay, retryWhileBusy } from "../../controller/busyRetry.js";
import { QmError } from "../../shared/errors.js";

/** A fake time: sleeping moves it on at once. */
function fakeTime() {
  const t = { now: 0, slept: [] as number[] };
  return {
    t,
    now: () => t.now,
    sleep: async (ms: number, signal?: AbortSignal) => {
      if (signal?.aborted) throw signal.reason;
      t.slept.push(ms);
      t.now += ms;
    },
    random: () => 0,
  };
}

const busy = () => new QmError("BUSY", "agent busy: 1 operations running (maxConcurrentOps 1)", { host: "web1" });

describe("busyDelay", () => {
  it("doubles from the first pause up to the most, with up to half of it again at random", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((n) => busyDelay(n, () => 0))).toEqual([50, 100, 200, 400, 800, 1000, 1000, 1000]);
    expect(busyDelay(1, () => 0.999)).toBeLessThanOrEqual(BUSY_FIRST_DELAY_MS * 1.5);
    expect(busyDelay(30, () => 0.999)).toBeLessThanOrEqual(BUSY_MAX_DELAY_MS * 1.5);
  });
});

describe("retryWhileBusy", () => {
  it("asks again while the agent is busy, and returns its answer", async () => {
    const f = fakeTime();
    let calls = 0;
    const seen: number[] = [];
    const answer = await retryWhileBusy(
      async () => {
        calls++;
        if (calls < 4) throw busy();
        return "ok";
      },
      { deadline: 10_000, ...f, onBusy: (_err, attempt) => seen.push(attempt) },
    );
    expect(answer).toBe("ok");
    expect(calls).toBe(4);
    expect(f.t.slept).toEqual([50, 100, 200]);
    expect(seen).toEqual([1, 2, 3]);
  });

  it("any other error is thrown at once, not retried", async () => {
    const f = fakeTime();
    let calls = 0;
    const err = new QmError("UNREACHABLE", "agent unreachable", { host: "web1" });
    await expect(
      retryWhileBusy(async () => {
        calls++;
        throw err;
      }, { deadline: 10_000, ...f }),
    ).rejects.toBe(err);
    expect(calls).toBe(1);
  });

  it("gives up with BUSY, naming the wait, once the next attempt would start past the deadline", async () => {
    const f = fakeTime();
    let calls = 0;
    const p = retryWhileBusy(async () => {
      calls++;
      throw busy();
    }, { deadline: 1000, ...f });
    await expect(p).rejects.toMatchObject({ code: "BUSY", context: { host: "web1" }, message: expect.stringMatching(/still busy after \d+ attempts in 0\.\d s \(the call's deadline\)$/) });
    // 50 + 100 + 200 + 400 = 750; the next pause (800) would pass 1000
    expect(f.t.slept).toEqual([50, 100, 200, 400]);
    expect(calls).toBe(5);
  });

  it("a signal ends the wait with its reason", async () => {
    const ctl = new AbortController();
    let calls = 0;
    const p = retryWhileBusy(async () => {
      calls++;
      if (calls === 2) ctl.abort(new Error("interrupted by SIGTERM"));
      throw busy();
    }, { deadline: Date.now() + 60_000, signal: ctl.signal });
    await expect(p).rejects.toThrow("interrupted by SIGTERM");
    expect(calls).toBe(2);
  });
});
