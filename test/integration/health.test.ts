// The agent's health service means something (issue 10 item 3): the standard grpc.health.v1 client (the
// one grpc-health-check ships) gets SERVING for "" and quickmigrate.v1.Agent while the root is a
// directory, the state dir writable and both have more than minFreeBytes free, NOT_SERVING otherwise;
// Watch streams each change; the agent logs the reason once per change. Real agents over mutual TLS.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ClusterFront } from "../../scripts/lib/cluster.js";
import { fillDisk, isRoot, mountTmpfsOver } from "../helpers/disk.js";
import { type LogLine, logLines, waitForLines, waitUntil } from "../helpers/agentLog.js";
import { type Scenario, setupScenario } from "../helpers/scenario.js";
import { type HealthStatus, type HealthWatch, healthCheck, healthWatch, sslCredentials, targetName } from "../helpers/tls.js";

let s: Scenario;
let web1: ClusterFront;
const watches: HealthWatch[] = [];
const undo: Array<() => void> = [];

beforeAll(async () => {
  // a look every 0.2 s; minFreeBytes 8 MiB so that a 16 MiB tmpfs starts above it
  s = await setupScenario({ fronts: [{ name: "web1", agentConfig: { healthInterval: 0.2, minFreeBytes: 8 * 1024 ** 2 } }], tls: true });
  web1 = s.cluster.front("web1");
});

afterEach(async () => {
  for (const w of watches.splice(0)) w.cancel();
  for (const u of undo.splice(0).reverse()) u();
  // every test leaves the agent serving again
  await waitUntil(() => last() === "serving", "the agent serving again");
});

afterAll(async () => {
  await s?.cleanup();
});

const creds = () => {
  const pki = s.pki;
  if (!pki) throw new Error("no PKI");
  return sslCredentials(pki.ca, pki.controller);
};

const check = async (service = ""): Promise<HealthStatus | string> => {
  const r = await healthCheck(web1.address, creds(), targetName("web1"), service);
  return r.ok ? r.value : `error ${r.code}: ${r.details}`;
};

const healthLines = (): LogLine[] => logLines(web1.logFile).filter((l) => l.component === "health");
const last = (): string | undefined => healthLines().at(-1)?.msg;

/** The "not serving" lines after `since` health lines, once there is one with `code`; and that it is the only one. */
async function notServingOnce(since: number, code: string): Promise<void> {
  await waitUntil(() => healthLines().slice(since).some((l) => l.msg === "not serving"), `a "not serving" line with ${code}`);
  await new Promise((r) => setTimeout(r, 600)); // three more looks: none may log again
  const lines = healthLines().slice(since);
  expect(lines.filter((l) => l.msg === "not serving"), JSON.stringify(lines)).toEqual([expect.objectContaining({ level: 40, status: "NOT_SERVING", reasons: expect.arrayContaining([expect.objectContaining({ code })]) })]);
}

function watch(): HealthWatch {
  const w = healthWatch(web1.address, creds(), targetName("web1"));
  watches.push(w);
  return w;
}

describe("the agent's health service", () => {
  it("answers SERVING to the grpc-health-check client for the agent and its service; an unknown service is NOT_FOUND", async () => {
    expect(await check("")).toBe("SERVING");
    expect(await check("quickmigrate.v1.Agent")).toBe("SERVING");
    expect(await check("no.such.Service")).toMatch(/^error 5: /);
    expect(healthLines()[0]).toMatchObject({ level: 30, msg: "serving", status: "SERVING" });
  });

  it("turns NOT_SERVING when the root disappears (Check and Watch, the reason logged once), SERVING when it is back", async () => {
    const w = watch();
    expect(await w.first).toEqual({ ok: true, value: "SERVING" });
    const since = healthLines().length;
    const away = `${web1.root}.away`;
    fs.renameSync(web1.root, away);
    undo.push(() => fs.existsSync(away) && fs.renameSync(away, web1.root));
    expect(await check("")).toBe("NOT_SERVING");
    expect(await check("quickmigrate.v1.Agent")).toBe("NOT_SERVING");
    await waitUntil(() => w.seen.includes("NOT_SERVING"), "Watch streaming NOT_SERVING");
    await notServingOnce(since, "ROOT_MISSING");
    expect(healthLines().at(-1)?.reasons).toEqual([{ code: "ROOT_MISSING", message: `root ${web1.root} does not exist` }]);
    fs.renameSync(away, web1.root);
    await waitUntil(() => w.seen.at(-1) === "SERVING", "Watch streaming SERVING again");
    // one message per change, never the same status twice in a row
    expect(w.seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    expect(await check("")).toBe("SERVING");
    expect(healthLines().at(-1)).toMatchObject({ level: 30, msg: "serving" });
  });

  it("turns NOT_SERVING when the root is not a directory", async () => {
    const away = `${web1.root}.away`;
    fs.renameSync(web1.root, away);
    fs.writeFileSync(web1.root, "not a folder\n");
    undo.push(() => {
      fs.rmSync(web1.root, { force: true });
      fs.renameSync(away, web1.root);
    });
    const since = healthLines().length;
    expect(await check()).toBe("NOT_SERVING");
    await notServingOnce(since, "ROOT_NOT_DIRECTORY");
  });

  it("turns NOT_SERVING when the state dir is not writable", async () => {
    const mode = fs.statSync(web1.stateDir).mode & 0o7777;
    fs.chmodSync(web1.stateDir, 0o500);
    undo.push(() => fs.chmodSync(web1.stateDir, mode));
    const since = healthLines().length;
    expect(await check()).toBe("NOT_SERVING");
    await notServingOnce(since, "STATE_DIR_NOT_WRITABLE");
  });

  it("turns NOT_SERVING when minFreeBytes (reloaded with the config) is above the free space, SERVING when it is lowered again", async () => {
    const w = watch();
    expect(await w.first).toEqual({ ok: true, value: "SERVING" });
    const config = YAML.parse(fs.readFileSync(web1.configFile, "utf8")) as Record<string, unknown>;
    const write = (minFreeBytes: number) => {
      fs.writeFileSync(`${web1.configFile}.new`, YAML.stringify({ ...config, minFreeBytes }));
      fs.renameSync(`${web1.configFile}.new`, web1.configFile);
    };
    undo.push(() => write(config.minFreeBytes as number));
    const since = healthLines().length;
    write(2 ** 50); // a pebibyte: more than any disk here has free
    await waitUntil(() => w.seen.includes("NOT_SERVING"), "Watch streaming NOT_SERVING");
    expect(await check()).toBe("NOT_SERVING");
    await notServingOnce(since, "ROOT_LOW_SPACE");
    expect(healthLines().at(-1)?.reasons).toEqual([expect.objectContaining({ code: "ROOT_LOW_SPACE" }), expect.objectContaining({ code: "STATE_DIR_LOW_SPACE" })]);
    write(config.minFreeBytes as number);
    await waitUntil(() => w.seen.at(-1) === "SERVING", "Watch streaming SERVING again");
  });
});

describe.skipIf(!isRoot)("free space running out (a small tmpfs: needs root to mount)", () => {
  it.each(["root", "state dir"] as const)("the %s filling up past minFreeBytes turns NOT_SERVING; freed, SERVING", async (which) => {
    const dir = which === "root" ? web1.root : web1.stateDir;
    const st = fs.statSync(dir);
    const unmount = mountTmpfsOver(dir, "16m");
    undo.push(() => {
      // what was under the tmpfs is an empty folder made by root: the agent's again, as before
      unmount();
      fs.chownSync(dir, st.uid, st.gid);
      fs.chmodSync(dir, st.mode & 0o7777);
    });
    const w = watch();
    expect(await w.first).toEqual({ ok: true, value: "SERVING" });
    expect(await check()).toBe("SERVING");
    const since = healthLines().length;
    const filler = path.join(dir, ".filler");
    fillDisk(filler, 1024 ** 2); // 1 MiB left, minFreeBytes is 8
    undo.push(() => fs.rmSync(filler, { force: true }));
    await waitUntil(() => w.seen.includes("NOT_SERVING"), "Watch streaming NOT_SERVING");
    expect(await check()).toBe("NOT_SERVING");
    await notServingOnce(since, which === "root" ? "ROOT_LOW_SPACE" : "STATE_DIR_LOW_SPACE");
    fs.rmSync(filler);
    await waitUntil(() => w.seen.at(-1) === "SERVING", "Watch streaming SERVING again");
    expect(await check()).toBe("SERVING");
  });
});
