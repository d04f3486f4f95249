// The HTTP/2 receive windows of quick-migrate's connections. Data flows one window at a time: the sender
// sends a window, then waits until the receiver has taken it in and said so. On a busy host (rsync, the
// controller and the agents' streams sharing its cores) that answer comes late, and a small window leaves
// the link idle meanwhile. But a keepalive ping, and the answer to one, wait behind the data in flight
// their way, up to a window of it: a link that cannot carry a window within the keepalive timeout has a
// live peer taken for a dead one.
//
// So a connection starts with the window a slow link carries in a quarter of the keepalive timeout
// (receiveWindowBytes), and while data arrives the window follows what the link is seen to carry: the
// bytes the connection received in the last 2 s less one window of them (rateSeen), at that rate, for a
// quarter of the timeout, up to 8 MB (windowForRate, nextWindow). gRPC's C, Go and Java transports size
// their windows from the link too (BDP estimation); grpc-js sets a window once (the controller's
// grpc-node.flow_control_window; its server keeps HTTP/2's 64 KB) and has no hook to change it. Its
// connections are Node's, made with `http2.connect` (the controller's to each agent) and
// `http2.createServer`/`createSecureServer` (the agent's, which receive the pushes): those functions are
// wrapped once, and each session they make is watched with Node's public API (socket.bytesRead,
// setLocalWindowSize, settings).
import http2 from "node:http2";
import type { Logger } from "./logger.js";

/** The link, in bytes per millisecond, a starting window drains on within a quarter of the keepalive timeout: 1 Mbit/s. */
const START_LINK_BYTES_PER_MS = 125;
/** The most a window grows to: what one connection may hold unread (fetches of a batch from one front share it). */
export const MAX_WINDOW_BYTES = 8 * 1024 * 1024;
/** HTTP/2's own window. */
const HTTP2_DEFAULT_WINDOW = 65_535;
/** How often a session's received bytes are read. */
const SAMPLE_MS = 250;
/** The rate a window follows is taken over this many last samples (2 s). */
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

type Sample = { readonly bytes: number; readonly ms: number };

/**
 * The rate, in bytes per millisecond, a link carried to this end over the last samples (`bytes` read in
 * `ms` each), less `unread` bytes. What came in while this end was busy, and is read all at once after,
 * is at most a window (nothing more is sent until it is read): less one window, a burst never makes a
 * link look faster than it is. Pure.
 */
export function rateSeen(samples: readonly Sample[], unread = 0): number {
  const ms = samples.reduce((sum, s) => sum + s.ms, 0);
  const bytes = samples.reduce((sum, s) => sum + s.bytes, 0);
  return ms > 0 ? Math.max(0, bytes - unread) / ms : 0;
}

/**
 * The window a connection with `window` gets next, from its last samples. It grows, to twice or more,
 * with the rate seen less one window (so that it grows only as fast as the link carries); it shrinks, to
 * half or less, with the rate seen (so that the window it grew to does not take itself off the rate
 * again); else it stays (a window that moves with every sample would send a SETTINGS frame each time). Pure.
 */
export function nextWindow(samples: readonly Sample[], window: number, keepaliveTimeoutMs: number): number {
  const grown = windowForRate(rateSeen(samples, window), keepaliveTimeoutMs);
  if (grown >= window * 2) return grown;
  const shrunk = windowForRate(rateSeen(samples), keepaliveTimeoutMs);
  return shrunk * 2 <= window ? shrunk : window;
}

/** What the debug log says when a connection's window changes (with `peer`, `windowBytes`, `from`). */
export const WINDOW_CHANGED = "receive window changed to follow the link";

/** How long an agent waits for the answer to a keepalive ping on a connection it serves (it pings every 30 s). */
export const AGENT_KEEPALIVE_MS = 30_000;

let watching: { keepaliveTimeoutMs: number; log: Logger } | undefined;
/** The keepalive timeout each client of this process's servers said it has, by peer (`address:port`). */
const peerTimeouts = new Map<string, number>();

/**
 * From now on, every HTTP/2 connection this process makes or accepts has its receive window follow its
 * link (see the head of this file). What waits behind the data it receives is the peer's pings (the
 * peer's timeout) and the answers to this process's own (`keepaliveTimeoutMs`): the shorter counts. A
 * connection this process makes is to an agent (AGENT_KEEPALIVE_MS); one it accepts follows its link
 * only once its client said its timeout (peerKeepaliveTimeout), until then it keeps HTTP/2's window.
 * When called again with another timeout, the shortest counts. Idempotent.
 */
export function adaptReceiveWindows(keepaliveTimeoutMs: number, log: Logger): void {
  if (watching !== undefined) {
    watching.keepaliveTimeoutMs = Math.min(watching.keepaliveTimeoutMs, keepaliveTimeoutMs);
    return;
  }
  const w = (watching = { keepaliveTimeoutMs, log });
  // grpc-js calls these through the module object, at each connection and each server it starts
  const { connect, createServer, createSecureServer } = http2;
  http2.connect = function (this: unknown, ...args: Parameters<typeof http2.connect>): http2.ClientHttp2Session {
    const session = connect.apply(this, args);
    watchSession(session, () => Math.min(w.keepaliveTimeoutMs, AGENT_KEEPALIVE_MS), w.log);
    return session;
  } as typeof http2.connect;
  const watchServer = <S extends http2.Http2Server | http2.Http2SecureServer>(server: S): S => {
    server.on("session", (session: http2.ServerHttp2Session) => {
      const peer = peerOf(session);
      session.once("close", () => peerTimeouts.delete(peer));
      const timeoutMs = () => {
        const told = peerTimeouts.get(peer);
        return told === undefined ? undefined : Math.min(w.keepaliveTimeoutMs, told);
      };
      watchSession(session, timeoutMs, w.log);
    });
    return server;
  };
  http2.createServer = function (this: unknown, ...args: Parameters<typeof http2.createServer>) {
    return watchServer(createServer.apply(this, args as Parameters<typeof createServer>));
  } as typeof http2.createServer;
  http2.createSecureServer = function (this: unknown, ...args: Parameters<typeof http2.createSecureServer>) {
    return watchServer(createSecureServer.apply(this, args as Parameters<typeof createSecureServer>));
  } as typeof http2.createSecureServer;
}

/**
 * A client of this process's server said how long it waits for a keepalive answer (`peer`: its
 * `address:port`, as grpc-js's call.getPeer() gives it): the connection's window follows its link from now on.
 */
export function peerKeepaliveTimeout(peer: string, timeoutMs: number): void {
  if (timeoutMs > 0) peerTimeouts.set(peer, timeoutMs);
}

function peerOf(session: http2.Http2Session): string {
  return `${session.socket.remoteAddress ?? "?"}:${session.socket.remotePort ?? "?"}`;
}

/**
 * Samples a session's received bytes and moves its window with them, until the session closes. It starts
 * with the window the session was made with (grpc-js's grpc-node.flow_control_window for a connection the
 * controller makes, HTTP/2's for one a server accepts); `timeoutMs`: the keepalive timeout its window is
 * sized for, undefined while unknown (the window stays as it is).
 */
function watchSession(session: http2.Http2Session, timeoutMs: () => number | undefined, log: Logger): void {
  let window: number | undefined;
  let lastBytes: number | undefined;
  let lastAt = performance.now();
  const samples: Sample[] = [];
  const timer = setInterval(() => {
    // the socket is there once connected; until then nothing arrives
    if (session.destroyed || session.closed || session.connecting) return;
    const bytes = session.socket.bytesRead;
    const now = performance.now();
    if (lastBytes !== undefined) {
      samples.push({ bytes: bytes - lastBytes, ms: now - lastAt });
      if (samples.length > SAMPLES) samples.shift();
    }
    lastBytes = bytes;
    lastAt = now;
    const timeout = timeoutMs();
    if (timeout === undefined) return;
    const current = window ?? session.localSettings.initialWindowSize ?? HTTP2_DEFAULT_WINDOW;
    const target = nextWindow(samples, current, timeout);
    if (target === current) return;
    try {
      // the connection's window, and every stream's (a SETTINGS change applies to the open ones too)
      session.setLocalWindowSize(target);
      session.settings({ initialWindowSize: target });
      log.debug({ peer: peerOf(session), windowBytes: target, from: current, keepaliveTimeoutMs: timeout }, WINDOW_CHANGED);
      window = target;
    } catch (err) {
      // a session closing under us, or settings not yet acknowledged: the next sample tries again
      log.debug({ err }, "receive window not changed");
    }
  }, SAMPLE_MS);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}
