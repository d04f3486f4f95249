// The rsync tunnel under load: a site folder with a large file goes front → hostmaster → every front
// intact, with neither the controller nor the agents holding it in memory, and the receive windows (the
// controller's for the fetch, each agent's for its push) grow with the link (loopback here) beyond the
// ones they start with.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runController } from "../../scripts/lib/cluster.js";
import { excludePaths, manifest } from "../../scripts/lib/manifest.js";
import { logLines, parseLogLines, windowsLogged } from "../helpers/agentLog.js";
import { type Scenario, expectMigrated, setupScenario, siteDir } from "../helpers/scenario.js";

const MB = 1024 * 1024;
let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

function writeRandomFile(file: string, bytes: number): void {
  const fd = fs.openSync(file, "w", 0o644);
  try {
    for (let done = 0; done < bytes; done += MB) fs.writeSync(fd, randomBytes(Math.min(MB, bytes - done)));
  } finally {
    fs.closeSync(fd);
  }
}

function maxRssKb(logText: string, msg: string): number {
  const values = logText
    .split("\n")
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => (JSON.parse(l) as { maxRssKb: number }).maxRssKb);
  expect(values.length, `no "${msg}" line`).toBeGreaterThan(0);
  return Math.max(...values);
}

describe("rsync through the agent channel", () => {
  it("carries a 96 MB file to every host byte for byte without buffering it, the fetch in a window grown with the link", async () => {
    const s = (scenario = await setupScenario({ fronts: [{ name: "web1", agentConfig: { logLevel: "debug" } }, { name: "web2", agentConfig: { logLevel: "debug" } }] }));
    const web1Site = siteDir(s.cluster.frontRoot("web1"), s.from, s.site);
    writeRandomFile(path.join(web1Site, "libraries", "big.bin"), 96 * MB);
    s.codeBefore.set("web1", excludePaths(await manifest(web1Site), ["files", "private/files"]));

    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { env: { QM_LOG_LEVEL: "debug" } });
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);
    // three successful runs, and not one of their streams logged as failed, even at debug
    const tunnelTrouble = run.stderr.split("\n").filter((l) => /"msg":"(rsync stream failed|rsync's end of the tunnel (failed|closed|ended))"/.test(l));
    expect(tunnelTrouble, tunnelTrouble.join("\n")).toEqual([]);

    // the fetch raised the window from the 256 KB it starts with (default bound), to at most 8 MB
    const windows = windowsLogged(parseLogLines(run.stderr));
    expect(windows[0], "no receive window change logged").toMatchObject({ from: 256 * 1024 });
    expect(Math.max(...windows.map((w) => w.windowBytes))).toBeGreaterThan(256 * 1024);
    expect(Math.max(...windows.map((w) => w.windowBytes))).toBeLessThanOrEqual(8 * MB);
    // and each agent's window, for the push it received, grew above 256 KB, to at most 8 MB
    for (const f of s.cluster.fronts) {
      const agentWindows = windowsLogged(logLines(f.logFile)).map((w) => w.windowBytes);
      expect(Math.max(0, ...agentWindows), `${f.name}: its window grew`).toBeGreaterThan(256 * 1024);
      expect(Math.max(...agentWindows), f.name).toBeLessThanOrEqual(8 * MB);
    }

    // 96 MB crossed the controller three times (one fetch, two pushes); its peak memory stays far below that
    expect(maxRssKb(run.stderr, "controller finished")).toBeLessThan(96 * 1024 + 64 * 1024);
    for (const f of s.cluster.fronts) {
      expect(maxRssKb(fs.readFileSync(f.logFile, "utf8"), "rsync server end"), f.name).toBeLessThan(96 * 1024 + 64 * 1024);
    }
  });
});
