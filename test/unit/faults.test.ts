// QM_AGENT_FAULT: what it accepts (kill-mid, bug-mid, pause-mid with a duration, on a renaming action) and what a typo gets.
import { describe, expect, it } from "vitest";
import { NO_FAULTS, parseFaults } from "../../agent/faults.js";

describe("parseFaults", () => {
  it("unset or empty: no faults", () => {
    expect(parseFaults(undefined)).toBe(NO_FAULTS);
    expect(parseFaults("")).toBe(NO_FAULTS);
  });

  it.each(["kill-mid:park-data", "kill-mid:unrestore-data", "bug-mid:park-data", "pause-mid:park-data:1500", "pause-mid:restore-data:0"])("accepts %s", (value) => {
    expect(() => parseFaults(value)).not.toThrow();
  });

  it.each(["kill-mid:remove-old-site", "pause-mid:park-data", "kill-mid:park-data:100", "pause-mid:park-data:x", "pause:park-data:10", "kill-mid:", "bug-mid:park-data:5"])("refuses %s", (value) => {
    expect(() => parseFaults(value)).toThrow(/QM_AGENT_FAULT=.*expected kill-mid:<action>, bug-mid:<action> or pause-mid:<action>:<ms>/);
  });

  it("bug-mid throws what a bug would (no QmError) in its action only", async () => {
    const faults = parseFaults("bug-mid:park-data");
    await expect(faults.afterRename("unpark-data", "m1", "files")).resolves.toBeUndefined();
    const thrown = await Promise.resolve(faults.afterRename("park-data", "m1", "files")).catch((err: unknown) => err);
    expect(thrown).toBeInstanceOf(TypeError);
  });

  it("pause-mid waits after each rename of its action only", async () => {
    const fired: unknown[] = [];
    const faults = parseFaults("pause-mid:park-data:120", (fault, fields) => fired.push({ fault, ...fields }));
    const started = Date.now();
    await faults.afterRename("unpark-data", "m1", "files");
    expect(Date.now() - started).toBeLessThan(100);
    await faults.afterRename("park-data", "m1", "files");
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
    expect(fired).toEqual([{ fault: "pause-mid:park-data:120", migrationId: "m1", action: "park-data", dataDir: "files" }]);
  });
});
