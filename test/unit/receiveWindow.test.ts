// The HTTP/2 receive window of the controller's connection to an agent: as big as a keepalive answer can
// wait behind. It starts with what a 1 Mbit/s link drains within a quarter of the keepalive timeout,
// between HTTP/2's default and 256 KB (receiveWindowBytes), and then follows the rate the link is seen
// to carry (rateSeen), up to 8 MB (windowForRate), moving only by a factor of two or more (windowChanges).
import { describe, expect, it } from "vitest";
import { MAX_WINDOW_BYTES, rateSeen, receiveWindowBytes, windowChanges, windowForRate } from "../../shared/receiveWindow.js";

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

  it("moves by a factor of two or more, not with every sample", () => {
    expect(windowChanges(256 * 1024, 512 * 1024)).toBe(true);
    expect(windowChanges(256 * 1024, 500 * 1024)).toBe(false);
    expect(windowChanges(MAX_WINDOW_BYTES, 256 * 1024)).toBe(true);
    expect(windowChanges(MAX_WINDOW_BYTES, 5 * 1024 * 1024)).toBe(false);
    expect(windowChanges(256 * 1024, 256 * 1024)).toBe(false);
  });

  it("sees a link's rate over its samples less one window: bytes read in a burst after a busy moment never make it look faster", () => {
    // 2 Mbit/s (250 bytes a millisecond) for 2 s, read evenly: the rate less a 256 KB window over 2 s
    const even = Array.from({ length: 8 }, () => ({ bytes: 250 * 250, ms: 250 }));
    expect(rateSeen(even, 256 * 1024)).toBeCloseTo((500_000 - 262_144) / 2000, 6);
    // the same bytes, but this end was busy for 1.75 s and read them all in the last sample
    const burst = [...Array.from({ length: 7 }, () => ({ bytes: 0, ms: 250 })), { bytes: 500_000, ms: 250 }];
    expect(rateSeen(burst, 256 * 1024)).toBe(rateSeen(even, 256 * 1024));
    // a window's worth read at once in one sample of a slow link: seen as nothing
    expect(rateSeen([{ bytes: 262_144, ms: 250 }], 262_144)).toBe(0);
    // a fast link: the bytes less one window still count
    expect(rateSeen([{ bytes: 25_000_000, ms: 250 }], 262_144)).toBeCloseTo(98_951.424, 3);
    expect(rateSeen([], 65_535)).toBe(0);
  });
});
