// The limits, each hit on purpose: the bound on concurrent operations per agent (which an rsync stream
// takes once its start frame is in), the maximum message size, and the deadline on a controller call.
// Each gives a clear error and changes nothing.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { type ResultPromise, execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { asAgentUser, repoRoot, runController } from "../../scripts/lib/cluster.js";
import { makePlatform, makeSite } from "../../scripts/lib/fixtures.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { Action } from "../../shared/generated/quickmigrate/v1/agent.js";
import { apply, hello, insecureClient, preflight, startFrame } from "../helpers/agentRpc.js";
import { type Scenario, expectUnchanged, setupScenario } from "../helpers/scenario.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** One agent process with a config of our own (maxConcurrentOps), on 127.0.0.1:0. */
async function agentWith(extra: string): Promise<{ address: string; root: string; child: ResultPromise }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qm-limits-"));
  fs.mkdirSync(path.join(dir, "root"));
  const file = path.join(dir, "agent.yaml");
  fs.mkdirSync(path.join(dir, "state"));
  fs.writeFileSync(file, `listen: "127.0.0.1:0"\nroot: ${dir}/root\nstateDir: ${dir}/state\ninsecure: true\n${extra}`);
  const user = asAgentUser(path.join(dir, "root"), path.join(dir, "state"));
  const child = execa(process.execPath, [path.join(repoRoot(), "dist", "agent", "main.js"), "--config", file], { reject: false, buffer: false, ...user });
  cleanups.push(async () => {
    child.kill("SIGTERM");
    await child;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const address = await new Promise<string>((resolve, reject) => {
    let seen = "";
    child.stdout?.on("data", (d: Buffer) => {
      seen += d.toString();
      const m = /"address":"([^"]+)".*"msg":"agent listening"/.exec(seen);
      if (m?.[1]) resolve(m[1]);
    });
    child.once("exit", () => reject(new Error(`agent exited: ${seen}`)));
  });
  return { address, root: path.join(dir, "root"), child };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("limits", () => {
  it("maxConcurrentOps: a stream without its start frame holds no slot; one more operation is refused as busy, and served once a slot is free", async () => {
    const { address, root } = await agentWith("maxConcurrentOps: 1\n");
    makePlatform(root, "p1");
    makePlatform(root, "p2");
    makeSite(root, "p1", "a.com", { files: 2, privateFiles: 1 });
    // the tree belongs to the agent's user, as platforms belong to the aegir user
    asAgentUser(root);
    const c = insecureClient(address);
    cleanups.push(() => c.close());
    const reg = await preflight(c, { migration: { id: "limits-1", from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files", "private/files"] }, register: true, local: false });
    expect(reg.ok && reg.value.problems, JSON.stringify(reg)).toEqual([]);
    // the step order: a fetch follows the parking of the data
    const parked = await apply(c, { migrationId: "limits-1", step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    expect(parked.ok, JSON.stringify(parked)).toBe(true);
    // an rsync stream that has not sent its start frame yet: no slot taken
    const silent = c.rsync();
    silent.on("error", () => undefined);
    await sleep(300);
    expect(await hello(c, { protocolVersion: 1, controllerVersion: "" })).toMatchObject({ ok: true });
    // one whose start frame is in, its rsync daemon greeting: it holds the one slot
    const stream = c.rsync();
    stream.on("error", () => undefined);
    const greeted = new Promise((resolve, reject) => {
      stream.once("data", resolve);
      stream.once("error", reject);
    });
    stream.write(startFrame({ migrationId: "limits-1", step: "fetch-site", args: [...DAEMON_OVER_RSH] }));
    await greeted;
    const busy = await hello(c, { protocolVersion: 1, controllerVersion: "" });
    expect(busy).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, qmCode: "BUSY" });
    expect(busy.ok ? "" : busy.details).toBe("agent busy: 1 operations running (maxConcurrentOps 1)");
    stream.cancel();
    silent.cancel();
    await sleep(300);
    expect(await hello(c, { protocolVersion: 1, controllerVersion: "" })).toMatchObject({ ok: true });
  });

  it("a message over 4 MiB is refused with a clear error", async () => {
    const { address } = await agentWith("");
    const c = insecureClient(address);
    cleanups.push(() => c.close());
    const big = "a".repeat(5 * 1024 * 1024);
    const r = await preflight(c, { migration: { id: "m1", from: "p1", site: big, to: "p2", newSite: "x.com", dataDirs: ["files"] }, register: true, local: false });
    expect(r).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED });
    expect(r.ok ? "" : r.details).toMatch(/^Received message larger than max \(\d+ vs 4194304\)$/);
  });

  it("an agent that does not answer within the deadline: the controller refuses, naming it", async () => {
    const s: Scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] });
    cleanups.push(() => s.cleanup());
    s.cluster.writeControllerConfig({ extra: { timeouts: { hello: 1, preflight: 1, apply: 1, rsync: 60 } } });
    const pid = s.cluster.front("web2").process?.pid as number;
    process.kill(pid, "SIGSTOP"); // alive, connected, silent
    cleanups.push(() => {
      process.kill(pid, "SIGCONT");
    });
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    process.kill(pid, "SIGCONT");
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(String(run.events.at(-1)?.message)).toMatch(/web2: agent unreachable: no answer within 1\.0 s(;|$)/);
    await expectUnchanged(s);
  });
});
