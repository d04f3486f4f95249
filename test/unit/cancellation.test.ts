// What a signal does to one migration (each site's, in migrate --all): the first cancels the forward run
// and leaves the rollback its undo work; a second cancels that too; for `rollback` the first does.
import { describe, expect, it } from "vitest";
import { Cancellation } from "../../controller/execution.js";

describe("Cancellation", () => {
  it("migrate and resume: the first signal cancels the forward run only, the second the undo work too", () => {
    const c = new Cancellation();
    expect(c.interrupt("SIGINT")).toBe(false);
    expect(c.forward.aborted).toBe(true);
    expect(c.undo.aborted).toBe(false);
    expect(String((c.forward.reason as Error).message)).toBe("interrupted by SIGINT");
    expect(c.interrupt("SIGTERM")).toBe(true);
    expect(c.undo.aborted).toBe(true);
    expect(String((c.undo.reason as Error).message)).toBe("interrupted by SIGTERM");
  });

  it("rollback: the first signal cancels the undo work", () => {
    const c = new Cancellation(true);
    expect(c.interrupt("SIGTERM")).toBe(true);
    expect([c.forward.aborted, c.undo.aborted]).toEqual([true, true]);
  });
});
