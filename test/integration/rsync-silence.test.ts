// Streams that say nothing are dropped (issue 9, item 5): an rsync stream takes an operation slot only
// once its start frame is in, which must come within 5 s; an rsync that moves no byte either way for
// the agent's timeouts.unresponsive is ended, its daemon gone. Meanwhile the agent serves migrations,
// and one whose bytes keep moving is not cut off by that bound.
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClusterFront, runController } from "../../scripts/lib/cluster.js";
import { Action, type AgentClient, type RsyncFrame } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { type AuditLine, auditLines, auditLinesAfter } from "../helpers/auditLog.js";
import { type LogLine, logLines, waitForLines } from "../helpers/agentLog.js";
import { apply, hello, insecureClient, preflight, startFrame } from "../helpers/agentRpc.js";
import { DATA_DIRS, type Scenario, expectMigrated, setupScenario } from "../helpers/scenario.js";

const START_MS = 5000;
const IDLE_S = 2;

interface Ended {
  readonly code: grpc.status;
  readonly qmCode: string | undefined;
  readonly details: string;
  /** ms from opening the stream to its end */
  readonly after: number;
  readonly dataFrames: number;
}

/** Opens an Rsync stream, writes `frames`, and resolves when the agent ends it (the test never does). */
function openStream(c: AgentClient, frames: RsyncFrame[] = [], onData?: (f: RsyncFrame, call: grpc.ClientDuplexStream<RsyncFrame, RsyncFrame>) => void): Promise<Ended> {
  const opened = Date.now();
  return new Promise((resolve) => {
    const call = c.rsync();
    let dataFrames = 0;
    let error: grpc.ServiceError | undefined;
    call.on("data", (f: RsyncFrame) => {
      if (f.frame?.$case === "data") dataFrames++;
      onData?.(f, call);
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("status", (st: grpc.StatusObject) => {
      setImmediate(() =>
        resolve({
          code: error?.code ?? st.code,
          qmCode: String((error?.metadata ?? st.metadata)?.get("qm-error-code")[0] ?? "") || undefined,
          details: error?.details ?? st.details,
          after: Date.now() - opened,
          dataFrames,
        }),
      );
    });
    for (const f of frames) call.write(f);
  });
}

/** The rsync processes whose parent is `pid`. */
function rsyncChildren(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid && comm === "rsync") out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

let s: Scenario;
let web1: ClusterFront;
let client: AgentClient;

beforeAll(async () => {
  s = await setupScenario({ fronts: [{ name: "web1", agentConfig: { timeouts: { unresponsive: IDLE_S } } }, { name: "web2" }] });
  web1 = s.cluster.front("web1");
  client = insecureClient(web1.address);
});

afterAll(async () => {
  client?.close();
  await s?.cleanup();
});

describe("streams that say nothing", () => {
  const SILENT = 20;

  it(`${SILENT} streams that never send a start frame hold no slot, the agent serves a migration meanwhile, and each is ended within the start bound`, async () => {
    const since = auditLines(web1.logFile).length;
    const silent = Array.from({ length: SILENT }, () => openStream(client));
    await new Promise((r) => setTimeout(r, 200));
    // more streams than maxConcurrentOps (16): none holds a slot
    expect(await hello(client, { protocolVersion: 1, controllerVersion: "silence-test" })).toMatchObject({ ok: true });
    // web1's idle bound is 2 s: a migration whose rsync keeps moving bytes is not cut off by it
    const run = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    await expectMigrated(s);

    const ended = await Promise.all(silent);
    for (const e of ended) {
      expect({ code: e.code, qmCode: e.qmCode, details: e.details, dataFrames: e.dataFrames }).toEqual({
        code: grpc.status.UNAVAILABLE,
        qmCode: "STREAM_IDLE",
        details: "rsync tunnel: no start frame within 5 s",
        dataFrames: 0,
      });
      expect(e.after).toBeGreaterThanOrEqual(START_MS - 100);
      // the bound, plus a loaded machine's lag
      expect(e.after).toBeLessThan(START_MS + 4000);
    }
    // the agent's output reaches its log file asynchronously: wait for the lines, then count them
    const idle = (lines: AuditLine[]): AuditLine[] => lines.filter((l) => l.op === "rsync" && l.code === "STREAM_IDLE");
    expect(idle(await auditLinesAfter(web1.logFile, since, (lines) => idle(lines).length >= SILENT))).toHaveLength(SILENT);
  });
});

describe("an rsync that stops moving bytes", () => {
  // a site of its own, registered straight on web1: the migration above holds the scenario's
  beforeAll(async () => {
    const reg = await preflight(client, {
      migration: { id: "silence-idle-1", from: s.to, site: s.site, to: s.from, newSite: s.site, dataDirs: [...DATA_DIRS] },
      register: true,
      local: false,
    });
    expect(reg.ok && reg.value.problems, JSON.stringify(reg)).toEqual([]);
    // the step order: a fetch follows the parking of the data
    const parked = await apply(client, { migrationId: "silence-idle-1", step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    expect(parked.ok, JSON.stringify(parked)).toBe(true);
  });

  const cases: Array<[string, (call: grpc.ClientDuplexStream<RsyncFrame, RsyncFrame>) => void]> = [
    ["after the daemon's greeting, the client says nothing", () => undefined],
    [
      "after greeting and module, the client says nothing",
      (call) => {
        call.write({ frame: { $case: "data", value: Buffer.from("@RSYNCD: 31.0\nsite\n") } });
      },
    ],
  ];

  it.each(cases)("%s: ended after timeouts.unresponsive, its daemon gone", async (_what, afterGreeting) => {
    const serverEnd = (l: LogLine) => l.msg === "rsync server end" && l.migrationId === "silence-idle-1";
    const before = logLines(web1.logFile).filter(serverEnd).length;
    let greeted = false;
    const ended = await openStream(client, [startFrame({ migrationId: "silence-idle-1", step: "fetch-site", args: [...DAEMON_OVER_RSH] })], (f, call) => {
      if (f.frame?.$case === "data" && f.frame.value.length > 0 && !greeted) {
        greeted = true;
        afterGreeting(call);
      }
    });
    expect(greeted, "the daemon greeted").toBe(true);
    expect({ code: ended.code, qmCode: ended.qmCode, details: ended.details }).toEqual({
      code: grpc.status.UNAVAILABLE,
      qmCode: "STREAM_IDLE",
      details: `rsync tunnel: no byte moved either way for ${IDLE_S} s (timeouts.unresponsive): rsync ended`,
    });
    expect(ended.after).toBeGreaterThanOrEqual(IDLE_S * 1000);
    expect(ended.after).toBeLessThan(IDLE_S * 1000 + 4000);
    expect(rsyncChildren(web1.process?.pid as number)).toEqual([]);
    // the agent's log reaches its file after the stream's end reached the client
    const ends = await waitForLines(web1.logFile, serverEnd, "this run's rsync server end", before + 1);
    expect(JSON.stringify(ends.at(-1))).toMatch(/"idle":true/);
    // and the agent still serves
    expect(await hello(client, { protocolVersion: 1, controllerVersion: "silence-test" })).toMatchObject({ ok: true });
  });
});
