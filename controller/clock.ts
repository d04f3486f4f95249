// Time, as the runner sees it: durations in events and the pause between retries. A fake in the
// runner's unit tests makes retries instant and durations fixed.
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};
