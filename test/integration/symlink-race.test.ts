// A local user racing an agent that runs as root (issue 9, item 2): while the agent renames, removes,
// fetches and pushes, a racer swaps each platform's `sites/` with a symlink that leads out of the root,
// over and over (renameat2 with RENAME_EXCHANGE: at every instant one of the two is at the path). Many
// migrations are driven straight at the agent, each action retried until it lands or gives up. Nothing
// outside the root may be read, written or removed: the folder the symlinks lead to is the same as
// before byte for byte, and no fetched copy holds a byte of it. Needs root (the agent runs as root with
// allowRoot, where a race would reach furthest) and python3 (for renameat2).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClusterFront, repoRoot } from "../../scripts/lib/cluster.js";
import { makePlatform, makeSite } from "../../scripts/lib/fixtures.js";
import { type Manifest, diffManifests, manifest, summarizeDiff } from "../../scripts/lib/manifest.js";
import { Action, type AgentClient } from "../../shared/generated/quickmigrate/v1/agent.js";
import { apply, insecureClient, preflight } from "../helpers/agentRpc.js";
import { DATA_DIRS, type Scenario, setupScenario, siteDir } from "../helpers/scenario.js";

const ROGUE = path.join(repoRoot(), "test", "helpers", "rogue-rsh.mjs");
const RACER = path.join(repoRoot(), "test", "helpers", "exchange-racer.py");
const TRIES = 24;
/** attempts of one action while the racer runs, before the try gives up on it */
const ATTEMPTS = 40;
const MARKER = "OUTSIDE-THE-ROOT.txt";

const isRoot = process.getuid?.() === 0;
const hasPython = spawnSync("python3", ["-c", "import ctypes; ctypes.CDLL(None).renameat2"], { stdio: "ignore" }).status === 0;
if (!isRoot || !hasPython) console.warn("symlink-race.test.ts: skipped, needs root and python3 with renameat2");

type Outcome = "ok" | "refused";

/** The racer: swaps each pair until stopped; `stop()` puts everything back and tells how many swaps it made. */
async function startRacer(pairs: [string, string][]): Promise<{ stop(): Promise<number> }> {
  const child = spawn("python3", [RACER, ...pairs.flat()], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  while (!out.includes("ready")) {
    if (child.exitCode !== null) throw new Error(`racer exited ${child.exitCode} before it was ready`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    async stop() {
      child.kill("SIGTERM");
      const code = await exited;
      if (code !== 0) throw new Error(`racer exited ${code}`);
      return Number(out.trim().split("\n").at(-1));
    },
  };
}

describe.skipIf(!isRoot || !hasPython)("a symlink swapped back and forth under an agent running as root", () => {
  let s: Scenario;
  let web1: ClusterFront;
  let client: AgentClient;
  let outside: string;
  let outsideBefore: Manifest;
  let work: string;
  /** why actions were refused (for the log: the race makes them refuse in many ways) */
  const refusals = new Set<string>();

  beforeAll(async () => {
    s = await setupScenario({ fronts: [{ name: "web1" }], agentUser: "root" });
    web1 = s.cluster.front("web1");
    client = insecureClient(web1.address);
    work = path.join(s.baseDir, "race-work");
    fs.mkdirSync(work);
    // outside the root, the same layout as the front's, a copy of every site the tries use (with a
    // marker file in each folder), so that whatever a swapped link leads to finds something there
    outside = path.join(s.baseDir, "outside-root");
    for (const platform of [s.from, s.to]) {
      makePlatform(outside, platform);
      for (let i = 0; i < TRIES; i++) {
        const site = makeSite(outside, platform, siteName(i), { files: 4, privateFiles: 2, seed: `outside:${platform}:${i}` });
        for (const dir of [site.siteDir, ...DATA_DIRS.map((d) => path.join(site.siteDir, d))]) fs.writeFileSync(path.join(dir, MARKER), "outside\n");
      }
      fs.symlinkSync(path.join(outside, platform, "sites"), path.join(web1.root, platform, ".sites-decoy"));
    }
    outsideBefore = await manifest(outside);
  }, 120_000);

  afterAll(async () => {
    client?.close();
    await s?.cleanup();
  });

  function siteName(i: number): string {
    return `race${i}.example.com`;
  }

  /** rsync with a remote shell of the test's own (the agent's Rsync stream, no controller). */
  async function rsyncStep(id: string, step: "fetch-site" | "push-site", args: string[]): Promise<Outcome> {
    const r = await execa("rsync", ["-rlptgo", "--rsh", `"${process.execPath}" "${ROGUE}"`, ...args], {
      env: { QM_ROGUE_ADDRESS: web1.address, QM_ROGUE_MIGRATION: id, QM_ROGUE_STEP: step },
      reject: false,
      all: true,
      timeout: 60_000,
    });
    if (r.exitCode !== 0) refusals.add(`${step}: ${(r.all ?? "").trim().split("\n")[0]}`);
    return r.exitCode === 0 ? "ok" : "refused";
  }

  async function applyAction(id: string, step: string, action: Action): Promise<Outcome> {
    const r = await apply(client, { migrationId: id, step, action });
    if (!r.ok) refusals.add(`${r.qmCode}: ${r.details}`);
    return r.ok ? "ok" : "refused";
  }

  it(`${TRIES} migrations, every rename, removal, fetch and push raced: nothing outside the root is read, written or removed`, async () => {
    const tally = new Map<string, Record<Outcome, number>>();
    let swaps = 0;
    /** every fetch's folder, with the code it must equal when the fetch landed */
    const fetched: { dir: string; code: string; landed: boolean }[] = [];

    for (let i = 0; i < TRIES; i++) {
      const id = `race-${i}`;
      const site = siteName(i);
      makeSite(web1.root, s.from, site, { files: 6, privateFiles: 2, seed: `inside:${i}` });
      const reg = await preflight(client, { migration: { id, from: s.from, site, to: s.to, newSite: site, dataDirs: [...DATA_DIRS] }, register: true, local: false });
      expect(reg.ok && reg.value.problems, JSON.stringify(reg)).toEqual([]);
      // what a push sends: the site's code as it is before the race
      const code = path.join(work, `code-${i}`);
      fs.cpSync(siteDir(web1.root, s.from, site), code, { recursive: true, filter: (src) => !DATA_DIRS.some((d) => src === path.join(siteDir(web1.root, s.from, site), d)) });
      const fetchInto = path.join(work, `fetched-${i}`);
      const fetch = { dir: fetchInto, code, landed: false };
      fetched.push(fetch);

      const attempt = async (name: string, run: () => Promise<Outcome>): Promise<boolean> => {
        const t = tally.get(name) ?? { ok: 0, refused: 0 };
        tally.set(name, t);
        for (let a = 0; a < ATTEMPTS; a++) {
          const outcome = await run();
          t[outcome]++;
          if (outcome === "ok") return true;
        }
        return false;
      };
      const racer = await startRacer(
        [s.from, s.to].map((p): [string, string] => [path.join(web1.root, p, "sites"), path.join(web1.root, p, ".sites-decoy")]),
      );
      try {
        // even tries go forward to the end; odd ones undo what they did after the push, in reverse
        const forward: [string, () => Promise<Outcome>][] = [
          ["park-data", () => applyAction(id, "fronts-park-data", Action.ACTION_PARK_DATA)],
          [
            "fetch-site",
            () => {
              fs.rmSync(fetchInto, { recursive: true, force: true });
              fs.mkdirSync(fetchInto);
              return rsyncStep(id, "fetch-site", ["web1::site/", `${fetchInto}/`]).then((o) => {
                fetch.landed = o === "ok";
                return o;
              });
            },
          ],
          ["push-site", () => rsyncStep(id, "push-site", [`${code}/`, "web1::site/"])],
          ...(i % 2 === 0
            ? ([
                ["restore-data", () => applyAction(id, "fronts-restore-data", Action.ACTION_RESTORE_DATA)],
                ["remove-old-site", () => applyAction(id, "fronts-remove-old", Action.ACTION_REMOVE_OLD_SITE)],
              ] as [string, () => Promise<Outcome>][])
            : ([
                ["remove-new-site", () => applyAction(id, "push-site", Action.ACTION_REMOVE_NEW_SITE)],
                ["unpark-data", () => applyAction(id, "fronts-park-data", Action.ACTION_UNPARK_DATA)],
              ] as [string, () => Promise<Outcome>][])),
        ];
        for (const [name, run] of forward) if (!(await attempt(name, run))) break;
      } finally {
        swaps += await racer.stop();
      }
    }

    // nothing outside the root was written, renamed or removed
    const diff = diffManifests(outsideBefore, await manifest(outside));
    expect(diff, `outside the root changed:\n${summarizeDiff(diff)}`).toEqual([]);
    // nothing outside the root was read: no fetched copy holds a byte of it
    for (const f of fetched) {
      if (!fs.existsSync(f.dir)) continue;
      const got = await manifest(f.dir);
      expect([...got.keys()].filter((p) => p.endsWith(MARKER)), f.dir).toEqual([]);
      // a fetch that landed brought the site's code, byte for byte
      if (f.landed) expect(summarizeDiff(diffManifests(await manifest(f.code), got)), f.dir).toEqual("");
    }
    // the race did happen, and each kind of operation both landed and was refused in it
    expect(swaps).toBeGreaterThan(1000);
    const summary = Object.fromEntries(tally);
    console.log(`symlink race: ${swaps} swaps; ${JSON.stringify(summary)}; refusals:\n${[...refusals].slice(0, 30).join("\n")}`);
    for (const name of ["park-data", "fetch-site", "push-site", "restore-data", "remove-old-site"]) {
      expect(summary[name]?.ok, `${name} never landed: ${JSON.stringify(summary)}`).toBeGreaterThan(0);
    }
    expect(Object.values(summary).reduce((n, t) => n + t.refused, 0)).toBeGreaterThan(0);
  }, 600_000);
});
