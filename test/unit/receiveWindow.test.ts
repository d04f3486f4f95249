// The HTTP/2 receive window of the controller's connection to an agent (receiveWindowBytes): as big as
// a keepalive answer can wait behind. A full window drains on a 1 Mbit/s link within a quarter of the
// keepalive timeout, between HTTP/2's default and 256 KB.
import { describe, expect, it } from "vitest";
import { receiveWindowBytes } from "../../controller/agentConnection.js";

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
});
