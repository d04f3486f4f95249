// The HTTP/2 receive window of the controller's connections to agents. A fetch's data flows one window
// at a time: the agent sends a window, then waits until the controller has taken it in and said so. On a
// busy hostmaster (rsync, the controller and the agents' streams sharing its cores) that answer comes
// late, and a small window leaves the link idle meanwhile. But a keepalive answer waits behind the data
// in flight, up to a window of it, and a link that cannot carry a window within the keepalive timeout
// has a live agent taken for a dead one.
//
// So a connection starts with the window a slow link carries in a quarter of the keepalive timeout
// (receiveWindowBytes), and while data arrives the window follows what the link is seen to carry: the
// bytes a connection received in the last seconds, at that rate, within a quarter of the timeout, up to
// 8 MB. This is the bandwidth-delay estimate gRPC's C, Go and Java transports make; grpc-js sets a
// connection's window once (grpc-node.flow_control_window) and has no hook to change it. Its connection
// is Node's, made with `http2.connect`: that function is wrapped once, and each session it makes is
// watched, with Node's public API (socket.bytesRead, setLocalWindowSize, settings).
import http2 from "node:http2";
import type { Logger } from "../shared/logger.js";

/** The link, in bytes per millisecond, a starting window drains on within a quarter of the keepalive timeout: 1 Mbit/s. */
const START_LINK_BYTES_PER_MS = 125;
/** The most a window grows to: what one connection may hold unread (fetches of a batch from one front share it). */
export const MAX_WINDOW_BYTES = 8 * 1024 * 1024;
/** HTTP/2's own window. */
const HTTP2_DEFAULT_WINDOW = 65_535;
/** How often a session's received bytes are read. */
const SAMPLE_MS = 250;
/** The rate a window follows: the highest of this many last samples (2 s). */
const SAMPLES = 8;

/**
 * The window a connection starts with, in bytes: what a 1 Mbit/s link carries in a quarter of the
 * keepalive timeout, from 64 KB (bounds up to about 4 s) to 256 KB (from about 17 s). With the default
 * 30 s bound, links down to about 140 kbit/s; a slower one needs a longer `timeouts.unresponsive`. Pure.
 */
export function receiveWindowBytes(keepaliveTimeoutMs: number): number {
  return Math.min(256 * 1024, Math.max(HTTP2_DEFAULT_WINDOW, Math.floor((keepaliveTimeoutMs / 4) * START_LINK_BYTES_PER_MS)));
}

/**
 * The window for a link seen carrying `bytesPerMs`: what it carries in a quarter of the keepalive
 * timeout, never below the starting window nor above MAX_WINDOW_BYTES. Pure.
 */
export function windowForRate(bytesPerMs: number, keepaliveTimeoutMs: number): number {
  const start = receiveWindowBytes(keepaliveTimeoutMs);
  return Math.min(MAX_WINDOW_BYTES, Math.max(start, Math.floor(bytesPerMs * (keepaliveTimeoutMs / 4))));
}

/**
 * Whether a window of `current` bytes is changed to `target`: when the target is at least twice or at
 * most half of it (a window that moves with every sample would send a SETTINGS frame each time). Pure.
 */
export function windowChanges(current: number, target: number): boolean {
  return target >= current * 2 || target * 2 <= current;
}

let watching: { keepaliveTimeoutMs: number; log: Logger } | undefined;

/**
 * From now on, every HTTP/2 connection this process makes has its receive window follow its link (see
 * the head of this file). `keepaliveTimeoutMs`: the connections' keepalive timeout; when called again with
 * another, the shortest counts. Idempotent.
 */
export function adaptReceiveWindows(keepaliveTimeoutMs: number, log: Logger): void {
  if (watching !== undefined) {
    watching.keepaliveTimeoutMs = Math.min(watching.keepaliveTimeoutMs, keepaliveTimeoutMs);
    return;
  }
  watching = { keepaliveTimeoutMs, log };
  const connect = http2.connect;
  // grpc-js calls http2.connect(authority, options) through the module object, at each connection
  http2.connect = function (this: unknown, ...args: Parameters<typeof http2.connect>): http2.ClientHttp2Session {
    const session = connect.apply(this, args);
    watchSession(session);
    return session;
  } as typeof http2.connect;
}

/** Samples a session's received bytes and moves its window with them, until the session closes. */
function watchSession(session: http2.ClientHttp2Session): void {
  let window: number | undefined;
  let lastBytes: number | undefined;
  let lastAt = performance.now();
  const rates: number[] = [];
  const timer = setInterval(() => {
    const w = watching;
    // the socket is there once connected; until then nothing arrives
    if (w === undefined || session.destroyed || session.closed || session.connecting) return;
    const bytes = session.socket.bytesRead;
    const now = performance.now();
    if (lastBytes !== undefined) {
      rates.push((bytes - lastBytes) / (now - lastAt));
      if (rates.length > SAMPLES) rates.shift();
    }
    lastBytes = bytes;
    lastAt = now;
    const current = window ?? receiveWindowBytes(w.keepaliveTimeoutMs);
    const target = windowForRate(Math.max(0, ...rates), w.keepaliveTimeoutMs);
    if (!windowChanges(current, target)) return;
    try {
      // the connection's window, and every stream's (a SETTINGS change applies to the open ones too)
      session.setLocalWindowSize(target);
      session.settings({ initialWindowSize: target });
      window = target;
      w.log.debug({ peer: `${session.socket.remoteAddress ?? "?"}:${session.socket.remotePort ?? "?"}`, windowBytes: target, from: current }, "receive window changed to follow the link");
    } catch (err) {
      // a session closing under us, or settings not yet acknowledged: the next sample tries again
      w.log.debug({ err }, "receive window not changed");
    }
  }, SAMPLE_MS);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}
