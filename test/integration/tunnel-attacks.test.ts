// The agent's Rsync stream driven directly, as a hostile client would: every start frame that is not
// what rsync asks a remote shell for to reach a daemon (`rsync --server --daemon .`), for a step of a
// registered migration, is refused before any rsync process starts (no data, stderr or exit frame comes
// back), and nothing is written anywhere: every root, a canary outside the registered folders and one
// outside the root stay byte-identical. The arguments of protocol 1 (`rsync --server …` with a path)
// are among the refused: the agent runs its own daemon, whatever a client names. Positive controls:
// the daemon invocation for fetch-site and push-site is served.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ClusterFront } from "../../scripts/lib/cluster.js";
import { makeSite } from "../../scripts/lib/fixtures.js";
import { type Manifest, diffManifests, manifest, summarizeDiff } from "../../scripts/lib/manifest.js";
import { Action, type AgentClient, type RsyncFrame } from "../../shared/generated/quickmigrate/v1/agent.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { apply, hello, insecureClient, preflight, rsyncRan, rsyncStarts, startFrame, tunnel } from "../helpers/agentRpc.js";
import { DATA_DIRS, type Scenario, setupScenario } from "../helpers/scenario.js";

const REG = "tunnel-attack-1";
const OTHER_REG = "tunnel-attack-other";
const OTHER_SITE = "other.example.com";
/** the short options `rsync --archive --delete` made the client ask for (rsync 3.x, protocol 1 of the tunnel) */
const SHORT = "-logDtpre.iLsfxCIvu";
const DAEMON = (): string[] => [...DAEMON_OVER_RSH];

let s: Scenario;
let web1: ClusterFront;
let client: AgentClient;
let outside: string;
let before: Map<string, Manifest>;

/** every root, the shared storage, a folder outside every root, and web1's state dir */
async function snapshot(): Promise<Map<string, Manifest>> {
  const out = new Map<string, Manifest>();
  for (const { name, root } of s.cluster.roots()) out.set(name, await manifest(root));
  out.set("shared-storage", await manifest(s.sharedStorage));
  out.set("outside", await manifest(outside));
  out.set("web1-state", await manifest(web1.stateDir));
  return out;
}

async function expectNothingWritten(what: string): Promise<void> {
  const after = await snapshot();
  for (const [name, m] of before) {
    const diff = diffManifests(m, after.get(name) ?? new Map());
    expect(diff, `${what}: ${name} changed:\n${summarizeDiff(diff)}`).toEqual([]);
  }
}

beforeAll(async () => {
  s = await setupScenario({ fronts: [{ name: "web1" }] });
  web1 = s.cluster.front("web1");
  // another site on the same platform (registered under another migration), canaries inside the root
  // but outside every registered folder, and one outside the root
  makeSite(web1.root, s.from, OTHER_SITE, { files: 3, privateFiles: 1 });
  fs.writeFileSync(path.join(web1.root, "canary.txt"), "root canary\n", { mode: 0o644 });
  fs.writeFileSync(path.join(web1.root, s.from, "sites", "canary.txt"), "sites canary\n", { mode: 0o644 });
  outside = path.join(s.baseDir, "outside");
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, "canary.txt"), "outside canary\n", { mode: 0o644 });
  s.cluster.handOver();
  client = insecureClient(web1.address);
  for (const [id, site] of [
    [REG, s.site],
    [OTHER_REG, OTHER_SITE],
  ] as const) {
    const res = await preflight(client, { migration: { id, from: s.from, site, to: s.to, newSite: site, dataDirs: [...DATA_DIRS] }, register: true, local: false });
    expect(res.ok && res.value.problems, JSON.stringify(res)).toEqual([]);
    // parked, as fronts-park-data leaves them: the step order allows their fetch-site and push-site now
    const parked = await apply(client, { migrationId: id, step: "fronts-park-data", action: Action.ACTION_PARK_DATA });
    expect(parked.ok, JSON.stringify(parked)).toBe(true);
  }
  before = await snapshot();
});

afterAll(async () => {
  client?.close();
  await s?.cleanup();
});

interface Attack {
  readonly name: string;
  readonly migrationId?: string;
  readonly step?: string;
  /** the start frame's args (ignored when `frames` is given) */
  readonly args?: readonly string[];
  /** frames to send instead of a single start frame */
  readonly frames?: () => RsyncFrame[];
  /** half-close our side after the frames */
  readonly endInput?: boolean;
  /** default PERMISSION_DENIED (TUNNEL_REFUSED) */
  readonly code?: grpc.status;
  readonly qmCode?: string;
}

interface Paths {
  readonly from: string;
  readonly to: string;
  readonly site: string;
  readonly baseDir: string;
  readonly root: string;
}

/** The attacks on a scenario's paths (the names do not depend on them: the tests are named before the scenario exists). */
function attacks(s: Paths): Attack[] {
  const F = `${s.from}/sites/${s.site}/`;
  const P = `${s.to}/sites/${s.site}/`;
  const fetch = (...tail: string[]): string[] => ["rsync", "--server", "--sender", SHORT, ".", ...tail];
  const fetchWith = (...opts: string[]): string[] => ["rsync", "--server", "--sender", SHORT, ...opts, ".", F];
  const push = (...tail: string[]): string[] => ["rsync", "--server", SHORT, "--delete", ".", ...tail];
  const pushWith = (...opts: string[]): string[] => ["rsync", "--server", SHORT, "--delete", ...opts, ".", P];
  const f = (name: string, args: string[]): Attack => ({ name: `fetch-site: ${name}`, step: "fetch-site", args });
  const p = (name: string, args: string[]): Attack => ({ name: `push-site: ${name}`, step: "push-site", args });
  return [
    // what protocol 1's controller sent: the plain server on a path, not the daemon
    f("protocol 1's exact fetch-site arguments", fetch(F)),
    p("protocol 1's exact push-site arguments", push(P)),
    // the daemon, with something of the client's own
    f("the daemon with a config of the client's", ["rsync", "--server", "--daemon", "--config=/tmp/x.conf", "."]),
    p("the daemon with a config of the client's", ["rsync", "--server", "--daemon", "--config=/tmp/x.conf", "."]),
    f("the daemon with a path", ["rsync", "--server", "--daemon", ".", F]),
    p("the daemon without its dot", ["rsync", "--server", "--daemon"]),
    f("the daemon with --sender", ["rsync", "--server", "--sender", "--daemon", "."]),
    f("the daemon through sh -c", ["sh", "-c", "rsync --server --daemon ."]),
    f("the daemon with --address", ["rsync", "--daemon", "--address=0.0.0.0", "--port=8873"]),
    // a remote shell of our choosing
    f("-e 'sh -c x' before the options", ["rsync", "--server", "--sender", "-e", "sh -c x", SHORT, ".", F]),
    f("-e 'sh -c x' after the options", fetchWith("-e", "sh -c x")),
    f("--rsh=sh -c x", fetchWith("--rsh=sh -c x")),
    f("--rsh sh -c x (two words)", fetchWith("--rsh", "sh -c x")),
    f("-e with a command inside the short option cluster", ["rsync", "--server", "--sender", "-logDtpesh", ".", F]),
    p("--rsh=sh -c 'touch /tmp/x'", pushWith("--rsh=sh -c 'touch /tmp/x'")),
    p("-e sh", pushWith("-e", "sh")),
    // options that delete, move or write elsewhere
    f("--remove-source-files", fetchWith("--remove-source-files")),
    f("--remove-sent-files", fetchWith("--remove-sent-files")),
    p("--remove-source-files", pushWith("--remove-source-files")),
    p("--delete-excluded (would delete the data dirs)", pushWith("--delete-excluded")),
    p("--delete-before --force", pushWith("--delete-before", "--force")),
    p("--backup-dir outside the root", pushWith("--backup", "--backup-dir=../../outside")),
    p("--log-file outside the root", pushWith(`--log-file=${path.join(s.baseDir, "outside", "log")}`)),
    p("--write-batch", pushWith("--write-batch=../outside-batch")),
    p("--temp-dir=/tmp", pushWith("--temp-dir=/tmp")),
    p("--partial-dir outside", pushWith("--partial-dir=../../outside")),
    p("--link-dest=/", pushWith("--link-dest=/")),
    p("--copy-dest of another site", pushWith(`--copy-dest=../../../${s.from}/sites/${OTHER_SITE}`)),
    f("--files-from=/etc/passwd", fetchWith("--files-from=/etc/passwd")),
    f("--config (daemon)", fetchWith("--daemon", "--config=/tmp/x.conf")),
    f("--delete on the sender", fetchWith("--delete")),
    f("-v (a short option outside the allowlist)", ["rsync", "--server", "--sender", "-vlogDtpre.iLsfxCIvu", ".", F]),
    f("--server twice", ["rsync", "--server", "--server", "--sender", SHORT, ".", F]),
    f("--sender twice", ["rsync", "--server", "--sender", "--sender", SHORT, ".", F]),
    // extra paths
    f("an extra path after the site folder", fetch(F, "other")),
    f("the site folder twice", fetch(F, F)),
    f("a second path outside the root", fetch(F, "../")),
    p("an extra path", push(P, `${s.from}/sites/${OTHER_SITE}/`)),
    f("no `.` before the path", ["rsync", "--server", "--sender", SHORT, F]),
    f("no path at all", fetch()),
    // one path, but not the registered folder
    f("another site's folder", fetch(`${s.from}/sites/${OTHER_SITE}/`)),
    f("../", fetch("../")),
    f("the site folder, then ..", fetch(`${F}../`)),
    f("another site through ..", fetch(`${F}../${OTHER_SITE}/`)),
    f("absolute /etc/", fetch("/etc/")),
    f("absolute /", fetch("/")),
    f("absolute path of the site folder", fetch(`${path.join(s.root, F)}/`)),
    f("the parent sites/", fetch(`${s.from}/sites/`)),
    f("the parent sites (no slash)", fetch(`${s.from}/sites`)),
    f("the platform", fetch(`${s.from}/`)),
    f("the root (.)", fetch(".")),
    f("a data dir (files/)", fetch(`${F}files/`)),
    f("a data dir (private/files/)", fetch(`${F}private/files/`)),
    f("the new site folder", fetch(P)),
    f("the site folder with a NUL", fetch(`${F}\u0000`)),
    f("the site folder with a newline", fetch(`${F}\n../`)),
    f("~/", fetch("~/")),
    f("an option as the path", fetch("--delete")),
    p("the old site folder", push(F)),
    p("the parent sites/", push(`${s.to}/sites/`)),
    p("another site's new folder", push(`${s.to}/sites/${OTHER_SITE}/`)),
    p("../", push("../")),
    p("/tmp/", push("/tmp/")),
    p("a data dir of the new site folder", push(`${P}files/`)),
    // not `rsync --server`
    f("--server missing", ["rsync", "--sender", SHORT, ".", F]),
    f("--server and --sender missing", ["rsync", SHORT, ".", F]),
    p("--server missing", ["rsync", SHORT, "--delete", ".", P]),
    f("rsync replaced by sh", ["sh", "--server", "--sender", SHORT, ".", F]),
    f("sh -c 'rsync --server …'", ["sh", "-c", `rsync --server --sender ${SHORT} . ${F}`]),
    f("an absolute rsync path", ["/usr/bin/rsync", "--server", "--sender", SHORT, ".", F]),
    f("env rsync", ["env", "rsync", "--server", "--sender", SHORT, ".", F]),
    f("'rsync ' with a trailing space", ["rsync ", "--server", "--sender", SHORT, ".", F]),
    f("empty args", []),
    f("only rsync", ["rsync"]),
    // direction and step
    p("--sender on push-site (read the new folder)", ["rsync", "--server", "--sender", SHORT, ".", P]),
    p("--sender on push-site (read the old folder)", ["rsync", "--server", "--sender", SHORT, ".", F]),
    f("no --sender on fetch-site (write into the old folder, with --delete)", push(F)),
    f("no --sender on fetch-site (write into the old folder)", ["rsync", "--server", SHORT, ".", F]),
    ...["park-data", "restore-data", "remove-old-site", "fetch", "push", "master-move-site"].map(
      (step): Attack => ({ name: `step ${step} with fetch-site's arguments`, step, args: fetch(F) }),
    ),
    // the daemon is served only for the two rsync steps
    ...["park-data", "restore-data", "remove-old-site", "remove-new-site", "fetch", "push", "master-move-site", "fronts-restore-data"].map(
      (step): Attack => ({ name: `step ${step} with the daemon`, step, args: DAEMON() }),
    ),
    // not even a step name: refused as an invalid name before anything else is looked at
    ...["Fetch-site", "fetch-site2"].map(
      (step): Attack => ({ name: `step ${step} with fetch-site's arguments`, step, args: fetch(F), code: grpc.status.INVALID_ARGUMENT, qmCode: "INVALID_NAME" }),
    ),
    { name: "step push with push-site's arguments", step: "push", args: push(P) },
    // the migration
    { name: "a migration id never registered", migrationId: "never-registered-1", step: "fetch-site", args: DAEMON(), code: grpc.status.FAILED_PRECONDITION, qmCode: "NOT_REGISTERED" },
    { name: "another registered migration's id for this site's folder", migrationId: OTHER_REG, step: "fetch-site", args: fetch(F) },
    { name: "this migration's id for another registered migration's folder", step: "fetch-site", args: fetch(`${s.from}/sites/${OTHER_SITE}/`) },
    // the frames
    {
      name: "a data frame first",
      frames: () => [{ frame: { $case: "data", value: Buffer.from("\u001f\u0000\u0000\u0000") } }, startFrame({ migrationId: REG, step: "fetch-site", args: DAEMON() })],
      code: grpc.status.INVALID_ARGUMENT,
      qmCode: "USAGE",
    },
    {
      name: "a data frame only, then end of input",
      frames: () => [{ frame: { $case: "data", value: Buffer.from("x") } }],
      endInput: true,
      code: grpc.status.INVALID_ARGUMENT,
      qmCode: "USAGE",
    },
    { name: "an exit frame first", frames: () => [{ frame: { $case: "exit", value: { code: 0, signal: "" } } }], code: grpc.status.INVALID_ARGUMENT, qmCode: "USAGE" },
    { name: "a stderr frame first", frames: () => [{ frame: { $case: "stderr", value: Buffer.from("x") } }], code: grpc.status.INVALID_ARGUMENT, qmCode: "USAGE" },
    { name: "an empty frame first", frames: () => [{ frame: undefined }], code: grpc.status.INVALID_ARGUMENT, qmCode: "USAGE" },
    { name: "no frame at all, end of input", frames: () => [], endInput: true, code: grpc.status.INVALID_ARGUMENT, qmCode: "USAGE" },
  ];
}

describe("rsync tunnel attacks", () => {
  const names = attacks({ from: "<from>", to: "<to>", site: "<site>", baseDir: "<base>", root: "<root>" }).map((a) => a.name);

  it("covers many attacks", () => {
    expect(names.length).toBeGreaterThan(60);
    expect(new Set(names).size, "attack names are unique").toBe(names.length);
  });

  it.each(names.map((n, i) => [n, i] as const))("%s → refused before rsync starts, nothing written", async (name, index) => {
    const attack = attacks({ from: s.from, to: s.to, site: s.site, baseDir: s.baseDir, root: web1.root })[index] as Attack;
    expect(attack.name).toBe(name);
    const startsBefore = rsyncStarts(web1.logFile);
    const frames = attack.frames?.() ?? [startFrame({ migrationId: attack.migrationId ?? REG, step: attack.step ?? "fetch-site", args: [...(attack.args ?? [])] })];
    const o = await tunnel(client, frames, { endInput: attack.endInput ?? false, timeoutMs: 5000 });
    // no rsync process: no data, no stderr, no exit frame, no "rsync server start" in the agent's log
    expect({ dataFrames: o.dataFrames, stderr: o.stderr, exit: o.exit, cancelledByUs: o.cancelledByUs }).toEqual({
      dataFrames: 0,
      stderr: "",
      exit: undefined,
      cancelledByUs: undefined,
    });
    expect(rsyncRan(o)).toBe(false);
    expect(rsyncStarts(web1.logFile), "an rsync server was started").toBe(startsBefore);
    const code = attack.code ?? grpc.status.PERMISSION_DENIED;
    expect({ code: o.code, qmCode: o.qmCode }, o.details).toEqual({ code, qmCode: attack.qmCode ?? "TUNNEL_REFUSED" });
    await expectNothingWritten(name);
  });
});

describe("positive controls", () => {
  it("the daemon invocation for fetch-site is served: the greeting of a real rsync daemon arrives", async () => {
    const startsBefore = rsyncStarts(web1.logFile);
    const o = await tunnel(client, [startFrame({ migrationId: REG, step: "fetch-site", args: DAEMON() })]);
    expect(o.cancelledByUs, o.details).toBe("data");
    expect(o.dataFrames).toBeGreaterThan(0);
    expect(o.code).toBe(grpc.status.CANCELLED);
    expect(rsyncStarts(web1.logFile)).toBe(startsBefore + 1);
    await expectNothingWritten("fetch-site positive control");
  });

  it("the daemon invocation for push-site is served too (cancelled at the greeting: only the empty new site folder is made)", async () => {
    // the other migration's push: a push moves its migration past fetch-site, which the tests below still need of REG's
    const startsBefore = rsyncStarts(web1.logFile);
    const o = await tunnel(client, [startFrame({ migrationId: OTHER_REG, step: "push-site", args: DAEMON() })]);
    expect(o.cancelledByUs, o.details).toBe("data");
    expect(o.dataFrames).toBeGreaterThan(0);
    expect(rsyncStarts(web1.logFile)).toBe(startsBefore + 1);
    // the agent kills its rsync on the cancel; give it a moment to be gone before the last look
    await new Promise((r) => setTimeout(r, 300));
    // the module's folder, made by the agent (mode 0700) for the daemon to work in; push-site's undo removes it
    const made = path.join(web1.root, s.to, "sites", OTHER_SITE);
    expect(fs.readdirSync(made)).toEqual([]);
    expect(fs.statSync(made).mode & 0o777).toBe(0o700);
    fs.rmdirSync(made);
    // and the agent's record of that migration says its push began
    const record = diffManifests(before.get("web1-state") as Manifest, await manifest(web1.stateDir));
    expect(record.length).toBeGreaterThan(0);
    expect(record.filter((line) => !line.startsWith(`changed: migrations/${OTHER_REG}.json: `))).toEqual([]);
    before.set("web1-state", await manifest(web1.stateDir));
    await expectNothingWritten("push-site positive control");
  });
});

describe("afterwards", () => {
  it("every root, the canaries, the folder outside the root and the agent's records are byte-identical", async () => {
    await expectNothingWritten("after all attacks");
    expect(fs.readFileSync(path.join(web1.root, "canary.txt"), "utf8")).toBe("root canary\n");
    expect(fs.readdirSync(outside)).toEqual(["canary.txt"]);
  });
});

/** How many rsync servers the agent saw end, from its log. */
function rsyncEnds(logFile: string): number {
  return fs.readFileSync(logFile, "utf8").split("\n").filter((l) => l.includes('"msg":"rsync server end"')).length;
}

async function eventually(what: string, check: () => Promise<boolean> | boolean, ms = 8000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Last in the file: when the agent leaks a slot of its concurrency bound (maxConcurrentOps, 16 by
// default) per call, these leave it answering BUSY to everything.
describe("a client that goes away mid-tunnel does not wedge the agent", () => {
  const fetchArgs = DAEMON;
  const CALLS = 17;

  // a fresh agent for each: an agent wedged by the one before would fail the next for the same reason
  beforeEach(async () => {
    client.close();
    await s.cluster.stopAgent("web1");
    await s.cluster.startAgent("web1");
    client = insecureClient(web1.address);
  });

  it(`${CALLS} calls cancelled after the first data frame: each rsync server ends, and the agent still answers`, async () => {
    const endsBefore = rsyncEnds(web1.logFile);
    let endsSeen = true;
    for (let i = 0; i < CALLS; i++) {
      const o = await tunnel(client, [startFrame({ migrationId: REG, step: "fetch-site", args: fetchArgs() })], { timeoutMs: 5000 });
      expect({ i, code: o.code, cancelledByUs: o.cancelledByUs }, o.details).toEqual({ i, code: grpc.status.CANCELLED, cancelledByUs: "data" });
      // the agent holds the call's slot until its rsync is gone (a killed rsync takes a moment): wait
      // for that, unless a first one never ended (then go on: the agent is leaking slots)
      if (endsSeen) endsSeen = await eventually(`rsync server ${i} ends`, () => rsyncEnds(web1.logFile) >= endsBefore + i + 1, 3000).then(() => true, () => false);
    }
    await eventually("every cancelled rsync server ends", () => rsyncEnds(web1.logFile) >= endsBefore + CALLS).catch(() => undefined);
    await eventually("the agent answers Hello again", async () => (await hello(client, { protocolVersion: 1, controllerVersion: "test" })).ok).catch(() => undefined);
    const h = await hello(client, { protocolVersion: 1, controllerVersion: "test" });
    expect({ code: h.code, details: h.ok ? "" : h.details }).toEqual({ code: grpc.status.OK, details: "" });
    expect(rsyncEnds(web1.logFile) - endsBefore, "rsync servers that ended").toBe(CALLS);
    await expectNothingWritten("after cancelled tunnels");
  });

  it(`${CALLS} calls that half-close right after a valid start frame: each ends by itself with an exit frame, and the agent still answers`, async () => {
    const endsBefore = rsyncEnds(web1.logFile);
    const outcomes = [];
    for (let i = 0; i < CALLS; i++) {
      const o = await tunnel(client, [startFrame({ migrationId: REG, step: "fetch-site", args: fetchArgs() })], { endInput: true, cancelOnData: false, timeoutMs: 15_000 });
      outcomes.push({ i, code: o.code, details: o.details, endedBy: o.cancelledByUs ?? "agent", exitFrame: o.exit !== undefined });
      if (o.cancelledByUs !== undefined || o.exit === undefined) break; // one is enough to show it
    }
    // rsync sees end of input at once and exits with an error: the agent passes on its exit and ends the call
    expect(outcomes.filter((o) => o.endedBy !== "agent" || !o.exitFrame)).toEqual([]);
    await eventually("every rsync server ends", () => rsyncEnds(web1.logFile) >= endsBefore + CALLS).catch(() => undefined);
    const h = await hello(client, { protocolVersion: 1, controllerVersion: "test" });
    expect({ code: h.code, details: h.ok ? "" : h.details }).toEqual({ code: grpc.status.OK, details: "" });
    await expectNothingWritten("after half-closed tunnels");
  });
});
