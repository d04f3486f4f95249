// The HTTP/2 receive window of the controller's connection to an agent: as big as a keepalive answer can
// wait behind. It starts with what a 1 Mbit/s link drains within a quarter of the keepalive timeout,
// between HTTP/2's default and 256 KB (receiveWindowBytes), and then follows the rate the link is seen
// to carry (rateSeen), up to 8 MB (windowForRate), moving only by a factor of two or more (nextWindow).
import { describe, expect, it } from "vitest";
import { MAX_WINDOW_BYTES, nextWindow, rateSeen, receiveWindowBytes, windowForRate } from "../../shared/receiveWindow.js";

const MBIT_BYTES_PER_MS = 1_000_000 / 8 / 1000;

describe("receiveWindowBytes", () => {
  it("is HTTP/2's default for short bounds, 256 KB for long ones, and in between what 1 Mbit/s carries in a quarter of the timeout", () => {
    expect(receiveWindowBytes(500)).toBe(65_535);
    expect(receiveWindowBytes(1_500)).toBe(65_535); // timeouts.unresponsive: 3
    expect(receiveWindowBytes(4_000)).toBe(125_000); // 8
    expect(receiveWindowBytes(15_000)).toBe(256 * 1024); // 30, the default
    expect(receiveWindowBytes(3_600_000)).toBe(256 * 1024);
  });

  it("never holds more than 1 Mbit/s drains in a quarter of the timeout, above the default window", () => {
    for (let timeoutMs = 500; timeoutMs <= 120_000; timeoutMs += 250) {
      const w = receiveWindowBytes(timeoutMs);
      expect(w).toBeGreaterThanOrEqual(65_535);
      if (w > 65_535) expect(w / MBIT_BYTES_PER_MS, `timeout ${timeoutMs} ms`).toBeLessThanOrEqual(timeoutMs / 4);
      expect(receiveWindowBytes(timeoutMs + 250)).toBeGreaterThanOrEqual(w);
    }
  });

  it("follows the rate a link is seen to carry: what it drains in a quarter of the keepalive timeout, from the starting window to 8 MB", () => {
    const timeoutMs = 15_000; // the default bound, 30 s
    expect(windowForRate(0, timeoutMs)).toBe(256 * 1024);
    // 500 kbit/s: the starting window; 1 Mbit/s: what it carries in 3.75 s
    expect(windowForRate(MBIT_BYTES_PER_MS / 2, timeoutMs)).toBe(256 * 1024);
    expect(windowForRate(MBIT_BYTES_PER_MS, timeoutMs)).toBe(468_750);
    // 10 Mbit/s: 1250 bytes a millisecond, for 3.75 s
    expect(windowForRate(10 * MBIT_BYTES_PER_MS, timeoutMs)).toBe(4_687_500);
    // a LAN or loopback: 8 MB
    expect(windowForRate(100_000, timeoutMs)).toBe(MAX_WINDOW_BYTES);
    // a short bound: the same rule, from HTTP/2's default
    expect(windowForRate(0, 1_500)).toBe(65_535);
    expect(windowForRate(1000, 1_500)).toBe(375_000);
    for (const rate of [0, 10, 125, 300, 1000, 5000, 1e6]) {
      for (const t of [500, 1_500, 4_000, 15_000, 60_000]) {
        const w = windowForRate(rate, t);
        expect(w).toBeGreaterThanOrEqual(receiveWindowBytes(t));
        expect(w).toBeLessThanOrEqual(MAX_WINDOW_BYTES);
        // above the start, a full window drains at the seen rate within a quarter of the timeout
        if (w > receiveWindowBytes(t)) expect(w / rate).toBeLessThanOrEqual(t / 4);
      }
    }
  });

  it("sees a link's rate over its samples, less what may have waited unread: bytes read in a burst after a busy moment never make it look faster", () => {
    // 2 Mbit/s (250 bytes a millisecond) for 2 s, read evenly: the rate less a 256 KB window over 2 s
    const even = Array.from({ length: 8 }, () => ({ bytes: 250 * 250, ms: 250 }));
    expect(rateSeen(even)).toBe(250);
    expect(rateSeen(even, 256 * 1024)).toBeCloseTo((500_000 - 262_144) / 2000, 6);
    // the same bytes, but this end was busy for 1.75 s and read them all in the last sample
    const burst = [...Array.from({ length: 7 }, () => ({ bytes: 0, ms: 250 })), { bytes: 500_000, ms: 250 }];
    expect(rateSeen(burst, 256 * 1024)).toBe(rateSeen(even, 256 * 1024));
    // a window's worth read at once in one sample of a slow link: seen as nothing
    expect(rateSeen([{ bytes: 262_144, ms: 250 }], 262_144)).toBe(0);
    expect(rateSeen([], 65_535)).toBe(0);
  });

  const timeoutMs = 15_000;
  const samples = (bytesPerMs: number, n = 8) => Array.from({ length: n }, () => ({ bytes: bytesPerMs * 250, ms: 250 }));

  it("grows a window on a fast link to 8 MB within a sample, and shrinks it back once nothing comes", () => {
    expect(nextWindow(samples(100_000, 1), 256 * 1024, timeoutMs)).toBe(MAX_WINDOW_BYTES);
    expect(nextWindow(samples(100_000), MAX_WINDOW_BYTES, timeoutMs)).toBe(MAX_WINDOW_BYTES);
    expect(nextWindow(samples(0), MAX_WINDOW_BYTES, timeoutMs)).toBe(256 * 1024);
    expect(nextWindow(samples(0), 256 * 1024, timeoutMs)).toBe(256 * 1024);
  });

  it("settles on a steady link instead of swinging: 4 Mbit/s grows once and stays, never above what the link drains in a quarter of the timeout", () => {
    let window = 256 * 1024;
    const seen = new Set<number>();
    for (let i = 0; i < 40; i++) {
      window = nextWindow(samples(500), window, timeoutMs);
      seen.add(window);
      expect(window / 500).toBeLessThanOrEqual(timeoutMs / 4);
    }
    expect(window).toBeGreaterThan(256 * 1024);
    expect([...seen]).toEqual([window]);
  });

  it("moves by a factor of two or more, not with every sample; a burst read at once grows it no more than the link carries", () => {
    // 2 Mbit/s with a 256 KB window: what it carries in 3.75 s is under twice the window
    expect(nextWindow(samples(250), 256 * 1024, timeoutMs)).toBe(256 * 1024);
    // the same bytes read in one burst
    const burst = [...Array.from({ length: 7 }, () => ({ bytes: 0, ms: 250 })), { bytes: 500_000, ms: 250 }];
    expect(nextWindow(burst, 256 * 1024, timeoutMs)).toBe(256 * 1024);
    // 1.5 Mbit/s under a larger window: not halved
    expect(nextWindow(samples(190), 512 * 1024, timeoutMs)).toBe(512 * 1024);
  });
});
