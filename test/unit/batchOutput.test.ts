// How migrate --all looks: with --json every line names its site; for humans a line per site as it ends
// (its whole output when it failed, in one piece however the sites ran side by side), a live summary line
// on a terminal only, and the final table.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { SiteResult } from "../../controller/batch.js";
import { type BatchEvent, HumanBatchOutput, JsonBatchOutput } from "../../controller/batchOutput.js";

class Capture extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const start: BatchEvent = { event: "batch", site: null, from: "p1", to: "p2", sites: ["a.example.com", "b.example.com"], skipped: [], concurrency: 2, dryRun: false };
const ok: SiteResult = { site: "a.example.com", outcome: "migrated", migrationId: "m-a", exitCode: 0, durationMs: 1500, message: "a.example.com is on p2" };
const bad: SiteResult = { site: "b.example.com", outcome: "rolled-back", migrationId: "m-b", exitCode: 1, durationMs: 2500, message: "fetch-site failed on web1: boom; rolled back" };
const end: BatchEvent = { event: "batch-result", site: null, outcome: "failed", exitCode: 1, message: "2 sites of p1 → p2: 1 migrated, 1 rolled-back", durationMs: 3000, sites: [ok, bad] };

/** Two sites side by side: their events interleaved, b's fetch-site failing. */
function run(out: JsonBatchOutput | HumanBatchOutput): void {
  out.event(start);
  out.siteStarted("a.example.com");
  out.siteStarted("b.example.com");
  const a = out.siteReporter("a.example.com");
  const b = out.siteReporter("b.example.com");
  a.event({ event: "step-start", migrationId: "m-a", step: "fetch-site" });
  b.event({ event: "step-start", migrationId: "m-b", step: "fetch-site" });
  b.event({ event: "ack", migrationId: "m-b", step: "fetch-site", host: "web1", ok: false, detail: "boom" });
  a.event({ event: "ack", migrationId: "m-a", step: "fetch-site", host: "web1", ok: true, detail: "rsync ok" });
  b.event({ event: "step-end", migrationId: "m-b", step: "fetch-site", ok: false, acked: 0, expected: 1, durationMs: 700 });
  a.event({ event: "step-end", migrationId: "m-a", step: "fetch-site", ok: true, acked: 1, expected: 1, durationMs: 400 });
  a.event({ event: "result", migrationId: "m-a", outcome: "migrated", exitCode: 0, message: ok.message, durationMs: 1500 });
  out.siteEnded(ok);
  b.event({ event: "result", migrationId: "m-b", outcome: "rolled-back", exitCode: 1, message: bad.message, durationMs: 2500 });
  out.siteEnded(bad);
  out.event(end);
}

describe("JsonBatchOutput", () => {
  it("every line a JSON object with its site: the site's own, or null for the batch's", () => {
    const cap = new Capture();
    run(new JsonBatchOutput(cap));
    const lines = cap.text.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.event, l.site])).toEqual([
      ["batch", null],
      ["step-start", "a.example.com"],
      ["step-start", "b.example.com"],
      ["ack", "b.example.com"],
      ["ack", "a.example.com"],
      ["step-end", "b.example.com"],
      ["step-end", "a.example.com"],
      ["result", "a.example.com"],
      ["result", "b.example.com"],
      ["batch-result", null],
    ]);
    expect(lines.at(-1)?.sites).toEqual([ok, bad]);
  });
});

describe("HumanBatchOutput", () => {
  it("off a terminal: plain lines, a failed site's output in one piece, the table; no live line", () => {
    const cap = new Capture();
    run(new HumanBatchOutput(cap, false, false));
    expect(cap.text).not.toContain("\r");
    expect(cap.text).not.toContain("\x1b");
    const lines = cap.text.split("\n");
    expect(lines[0]).toBe("quick-migrate --all: 2 sites of p1 → p2, at most 2 at a time");
    expect(lines).toContain("  started a.example.com");
    expect(lines).toContain("✔ a.example.com: migrated (m-a)  1.50 s");
    // b's block: only b's steps, though a's ran meanwhile
    const block = cap.text.slice(cap.text.indexOf("── b.example.com"), cap.text.indexOf("✘ b.example.com"));
    expect(block).toContain("✘ fetch-site");
    expect(block).toContain("web1: boom");
    expect(block).toContain("✘ rolled-back: fetch-site failed on web1: boom; rolled back");
    expect(block).not.toContain("rsync ok");
    expect(block).not.toContain("✔ fetch-site");
    expect(lines).toContain("✘ b.example.com: rolled-back (m-b)  2.50 s");
    expect(lines).toContain("  site           outcome      migration  time");
    expect(lines).toContain("  b.example.com  rolled-back  m-b        2.50 s");
    expect(lines.filter((l) => l !== "").at(-1)).toBe("✘ failed: 2 sites of p1 → p2: 1 migrated, 1 rolled-back  (3.00 s, exit 1)");
  });

  it("on a terminal: the live summary is rewritten in place, and erased before any other line", () => {
    const cap = new Capture();
    run(new HumanBatchOutput(cap, false, true));
    expect(cap.text).toContain("\r\x1b[Ksites 0/2: 0 migrated, 0 failed, 2 running, 0 waiting; running: a.example.com fetch-site, b.example.com fetch-site");
    expect(cap.text).toContain("\r\x1b[Ksites 0/2: 0 migrated, 0 failed, 2 running, 0 waiting; slowest step: fetch-site 0.7 s (b.example.com)");
    expect(cap.text).toContain("\r\x1b[K✔ a.example.com: migrated (m-a)  1.50 s\n");
    expect(cap.text).not.toContain("started a.example.com");
    // what is left on screen: no live line after the last one
    expect(cap.text.endsWith("(3.00 s, exit 1)\n")).toBe(true);
  });
});
