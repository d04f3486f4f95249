// Waiting for what a real process does in its own time: polls until a value is as wanted, or fails
// naming what was awaited and the last value seen.

/** `fn()` again every 100 ms until `ok` says yes; throws after `timeoutMs` with the last value. */
export async function eventually<T>(what: string, fn: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: T = await fn();
  while (!ok(last)) {
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs / 1000} s; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
    last = await fn();
  }
  return last;
}
