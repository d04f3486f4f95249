// Every string field of every RPC, driven straight at a real agent (plaintext loopback), tried with
// `../`, absolute paths, NUL, newline, a leading `-`, 10,000 characters and more: each is refused with
// INVALID_ARGUMENT, nothing is registered or recorded, and every tree is byte-identical afterwards.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClusterFront } from "../../scripts/lib/cluster.js";
import { type Manifest, diffManifests, manifest, manifestOrAbsent, summarizeDiff } from "../../scripts/lib/manifest.js";
import { Action, type AgentClient, type Migration } from "../../shared/generated/quickmigrate/v1/agent.js";
import {
  HOSTILE,
  type RpcOutcome,
  type TunnelOutcome,
  apply,
  hello,
  insecureClient,
  preflight,
  rsyncRan,
  rsyncStarts,
  show,
  startFrame,
  tunnel,
} from "../helpers/agentRpc.js";
import { DAEMON_OVER_RSH } from "../../shared/rsyncArgs.js";
import { DATA_DIRS, type Scenario, expectUnchanged, setupScenario } from "../helpers/scenario.js";

const REGISTERED = "hostile-input-registered";
const ACTIONS = [
  Action.ACTION_PARK_DATA,
  Action.ACTION_UNPARK_DATA,
  Action.ACTION_RESTORE_DATA,
  Action.ACTION_UNRESTORE_DATA,
  Action.ACTION_REMOVE_OLD_SITE,
  Action.ACTION_REMOVE_NEW_SITE,
] as const;

let s: Scenario;
let web1: ClusterFront;
let client: AgentClient;
/** web1's state dir after the one valid registration: nothing refused may change it */
let stateBefore: Manifest;

beforeAll(async () => {
  s = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }] });
  web1 = s.cluster.front("web1");
  client = insecureClient(web1.address);
  const ok = await preflight(client, { migration: valid(REGISTERED), register: true, local: false });
  expect(ok.ok && ok.value.problems, JSON.stringify(ok)).toEqual([]);
  stateBefore = await manifest(web1.stateDir);
});

afterAll(async () => {
  client?.close();
  await s?.cleanup();
});

function valid(id: string): Migration {
  return { id, from: s.from, site: s.site, to: s.to, newSite: s.site, dataDirs: [...DATA_DIRS] };
}

interface Tried {
  readonly label: string;
  readonly code: grpc.status;
  readonly qmCode: string | undefined;
  readonly details: string;
}

function tried(label: string, o: RpcOutcome<unknown> | TunnelOutcome): Tried {
  return { label, code: o.code, qmCode: "qmCode" in o ? o.qmCode : undefined, details: "details" in o ? o.details.slice(0, 160) : "(ok)" };
}

/** The tries that did not end with INVALID_ARGUMENT, for one readable failure listing them all. */
function notInvalidArgument(all: readonly Tried[]): Tried[] {
  return all.filter((t) => t.code !== grpc.status.INVALID_ARGUMENT);
}

async function expectStateUnchanged(): Promise<void> {
  const diff = diffManifests(stateBefore, await manifest(web1.stateDir));
  expect(diff, `web1's state dir changed:\n${summarizeDiff(diff)}`).toEqual([]);
}

describe("Preflight with register: true", () => {
  const fields = ["id", "from", "site", "to", "newSite"] as const;
  for (const field of fields) {
    it(`migration.${field} hostile → INVALID_ARGUMENT, nothing registered`, async () => {
      const results: Tried[] = [];
      let n = 0;
      for (const value of HOSTILE) {
        // a distinct valid id per try, so that an accepted registration would show as a new file
        const m = { ...valid(`hostile-${field}-${n++}`), [field]: value };
        results.push(tried(`${field}=${show(value)}`, await preflight(client, { migration: m, register: true, local: false })));
        results.push(tried(`${field}=${show(value)} local`, await preflight(client, { migration: m, register: true, local: true })));
      }
      expect(results).toHaveLength(HOSTILE.length * 2);
      expect(notInvalidArgument(results)).toEqual([]);
      await expectStateUnchanged();
    });
  }

  for (const index of DATA_DIRS.keys()) {
    it(`migration.dataDirs[${index}] hostile → INVALID_ARGUMENT, nothing registered`, async () => {
      const results: Tried[] = [];
      let n = 0;
      for (const value of HOSTILE) {
        const dataDirs: string[] = [...DATA_DIRS];
        dataDirs[index] = value;
        const m = { ...valid(`hostile-datadir-${index}-${n++}`), dataDirs };
        results.push(tried(`dataDirs[${index}]=${show(value)}`, await preflight(client, { migration: m, register: true, local: false })));
      }
      expect(notInvalidArgument(results)).toEqual([]);
      await expectStateUnchanged();
    });
  }

  it("a hostile data dir added as an extra element → INVALID_ARGUMENT, nothing registered", async () => {
    const results: Tried[] = [];
    let n = 0;
    for (const value of HOSTILE) {
      const m = { ...valid(`hostile-datadir-extra-${n++}`), dataDirs: [...DATA_DIRS, value] };
      results.push(tried(`dataDirs+=${show(value)}`, await preflight(client, { migration: m, register: true, local: false })));
    }
    expect(notInvalidArgument(results)).toEqual([]);
    await expectStateUnchanged();
  });

  it("the agent registered nothing but the one valid migration", () => {
    expect(fs.readdirSync(path.join(web1.stateDir, "migrations")).sort()).toEqual([`${REGISTERED}.json`]);
  });
});

describe("Apply", () => {
  it("migrationId hostile → INVALID_ARGUMENT for every action", async () => {
    const results: Tried[] = [];
    for (const value of HOSTILE) {
      for (const action of ACTIONS) {
        results.push(tried(`migrationId=${show(value)} action=${action}`, await apply(client, { migrationId: value, step: "fronts-park-data", action })));
      }
    }
    expect(results).toHaveLength(HOSTILE.length * ACTIONS.length);
    expect(notInvalidArgument(results)).toEqual([]);
    await expectStateUnchanged();
  });

  it("step hostile on a registered migration → INVALID_ARGUMENT for every action, nothing recorded", async () => {
    const results: Tried[] = [];
    for (const value of HOSTILE) {
      for (const action of ACTIONS) {
        results.push(tried(`step=${show(value)} action=${action}`, await apply(client, { migrationId: REGISTERED, step: value, action })));
      }
    }
    expect(notInvalidArgument(results)).toEqual([]);
    // no operation recorded under a hostile key, no ledger entry: the record file is byte-identical
    await expectStateUnchanged();
  });

  it("an unknown action → INVALID_ARGUMENT, nothing recorded", async () => {
    const results: Tried[] = [];
    for (const action of [Action.ACTION_UNSPECIFIED, 7, 99, -1]) {
      results.push(tried(`action=${action}`, await apply(client, { migrationId: REGISTERED, step: "fronts-park-data", action: action as Action })));
    }
    expect(notInvalidArgument(results)).toEqual([]);
    await expectStateUnchanged();
  });
});

describe("Rsync start frame", () => {
  // what a real client asks its remote shell for: only the hostile field is wrong
  const fetchArgs = (): string[] => [...DAEMON_OVER_RSH];

  it("migrationId hostile → the stream ends with INVALID_ARGUMENT, no rsync runs", async () => {
    const startsBefore = rsyncStarts(web1.logFile);
    const results: Array<Tried & { rsyncRan: boolean }> = [];
    for (const value of HOSTILE) {
      const o = await tunnel(client, [startFrame({ migrationId: value, step: "fetch-site", args: fetchArgs() })]);
      results.push({ ...tried(`migrationId=${show(value)}`, o), rsyncRan: rsyncRan(o) });
    }
    expect(results.filter((r) => r.rsyncRan)).toEqual([]);
    expect(notInvalidArgument(results)).toEqual([]);
    expect(rsyncStarts(web1.logFile)).toBe(startsBefore);
    await expectStateUnchanged();
  });

  const stepResults: Array<Tried & { rsyncRan: boolean }> = [];

  it("step hostile on a registered migration → refused before rsync starts", async () => {
    const startsBefore = rsyncStarts(web1.logFile);
    for (const value of HOSTILE) {
      const o = await tunnel(client, [startFrame({ migrationId: REGISTERED, step: value, args: fetchArgs() })]);
      stepResults.push({ ...tried(`step=${show(value)}`, o), rsyncRan: rsyncRan(o) });
    }
    expect(stepResults).toHaveLength(HOSTILE.length);
    expect(stepResults.filter((r) => r.rsyncRan || r.code === grpc.status.OK || r.code === grpc.status.CANCELLED)).toEqual([]);
    expect(rsyncStarts(web1.logFile)).toBe(startsBefore);
    await expectStateUnchanged();
  });

  it("step hostile on a registered migration → the stream ends with INVALID_ARGUMENT (an invalid name, like Apply's step)", () => {
    expect(stepResults).toHaveLength(HOSTILE.length);
    expect(notInvalidArgument(stepResults)).toEqual([]);
  });
});

describe("Hello", () => {
  it("controllerVersion hostile → INVALID_ARGUMENT", async () => {
    const results: Tried[] = [];
    for (const value of HOSTILE.filter((v) => v !== "")) {
      results.push(tried(`controllerVersion=${show(value)}`, await hello(client, { protocolVersion: 1, controllerVersion: value })));
    }
    expect(notInvalidArgument(results)).toEqual([]);
  });
});

describe("afterwards", () => {
  it("every root (and the shared storage) is byte-identical to before, and the registered migration's record is unchanged", async () => {
    await expectUnchanged(s);
    await expectStateUnchanged();
    for (const f of s.cluster.fronts) {
      expect(await manifestOrAbsent(path.join(f.root, ".quick-migrate-park")), `${f.name}: a park area appeared`).toBeNull();
    }
  });
});
