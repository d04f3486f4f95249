// QM_AGENT_FAULT: what it accepts (kill-mid, pause-mid with a duration, on a renaming action) and what a typo gets.
import { describe, expect, it } from "vitest";
import { NO_FAULTS, parseFaults } from "../../agent/faults.js";

describe("parseFaults", () => {
  it("unset or empty: no faults", () => {
    expect(parseFaults(undefined)).toBe(NO_FAULTS);
    expect(parseFaults("")).toBe(NO_FAULTS);
  });

  it.each(["kill-mid:park-data", "kill-mid:unrestore-data", "pause-mid:park-data:1500", "pause-mid:restore-data:0"])("accepts %s", (value) => {
    expect(() => parseFaults(value)).not.toThrow();
  });

  it.each(["kill-mid:remove-old-site", "pause-mid:park-data", "kill-mid:park-data:100", "pause-mid:park-data:x", "pause:park-data:10", "kill-mid:"])("refuses %s", (value) => {
    expect(() => parseFaults(value)).toThrow(/QM_AGENT_FAULT=.*expected kill-mid:<action> or pause-mid:<action>:<ms>/);
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
