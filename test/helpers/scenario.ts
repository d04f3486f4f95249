// A migration scenario on a real local cluster: agents as processes, a site on every root, snapshots
// of every tree before, and the checks a user would make after (trees byte for byte, links, park areas).
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "vitest";
import { type AgentUser, type Cluster, type FrontSpec, checkRsync, runController, startCluster } from "../../scripts/lib/cluster.js";
import { makePlatform, makeSite } from "../../scripts/lib/fixtures.js";
import { type Manifest, diffManifests, excludePaths, manifest, manifestOrAbsent, summarizeDiff } from "../../scripts/lib/manifest.js";
import { type TestPki, makeTestPki } from "./tls.js";

export const DATA_DIRS = ["files", "private/files"] as const;
export const PARK = ".quick-migrate-park";

export interface ScenarioOptions {
  fronts: FrontSpec[];
  site?: string;
  /** more sites made the same way as `site` on every root (`migrate --all`); see `forSite` */
  moreSites?: string[];
  from?: string;
  to?: string;
  files?: number;
  hooks?: Record<string, string[]>;
  /** fronts whose `files` is a symlink to shared storage (outside every root) */
  symlinkFiles?: string[];
  /** fronts without a private/files dir */
  noPrivateFiles?: string[];
  /** make the target platform on these roots ("hostmaster" or a front name); default every root */
  targetPlatformOn?: string[];
  /**
   * mutual TLS instead of plaintext: `true` makes a PKI for the fronts with deploy/tls/make-certs.sh in
   * `<baseDir>/pki` (see `Scenario.pki`); `{ dir }` uses one made before (passed on to startCluster)
   */
  tls?: true | { dir: string; allowedClients?: string[] };
  /** who the agents run as (passed on to startCluster): default an unprivileged user when the tests run as root */
  agentUser?: AgentUser | "root";
  /** the agents' entry point (passed on to startCluster), e.g. bin/quick-migrate-agent */
  agentBin?: string;
}

export interface Scenario {
  readonly cluster: Cluster;
  readonly baseDir: string;
  readonly site: string;
  readonly from: string;
  readonly to: string;
  readonly sharedStorage: string;
  /** every root (hostmaster first) and the shared storage, before the migration */
  readonly before: Map<string, Manifest>;
  /** per front: manifest of each data dir (walked without following links) before */
  readonly dataBefore: Map<string, Map<string, Manifest | null>>;
  /** the code (site folder minus data dirs) of each front before */
  readonly codeBefore: Map<string, Manifest>;
  /** the PKI made for `tls: true` */
  readonly pki: TestPki | undefined;
  cleanup(): Promise<void>;
}

export function siteDir(root: string, platform: string, site: string): string {
  return path.join(root, platform, "sites", site);
}

export async function setupScenario(opts: ScenarioOptions): Promise<Scenario> {
  checkRsync();
  const baseDir = await mkdtemp(path.join(tmpdir(), "qm-test-"));
  const site = opts.site ?? "shop.example.com";
  const from = opts.from ?? "drupal-7.98";
  const to = opts.to ?? "drupal-7.99";
  const sharedStorage = path.join(baseDir, "shared-storage");
  const pki = opts.tls === true ? await makeTestPki(path.join(baseDir, "pki"), { fronts: opts.fronts.map((f) => ({ name: f.name })) }) : undefined;
  const tls = opts.tls === true ? { dir: path.join(baseDir, "pki") } : opts.tls;
  const cluster = await startCluster({ baseDir, fronts: opts.fronts, ...(opts.hooks ? { hooks: opts.hooks } : {}), ...(tls ? { tls } : {}), ...(opts.agentUser ? { agentUser: opts.agentUser } : {}), ...(opts.agentBin ? { agentBin: opts.agentBin } : {}) });
  const masterIsFront = opts.fronts.some((f) => f.local);

  for (const { name, root } of cluster.roots()) {
    makePlatform(root, from);
    if (!opts.targetPlatformOn || opts.targetPlatformOn.includes(name)) makePlatform(root, to);
    const front = name !== "hostmaster" || masterIsFront;
    const frontName = name === "hostmaster" ? (opts.fronts.find((f) => f.local)?.name ?? name) : name;
    for (const uri of [site, ...(opts.moreSites ?? [])]) {
      const info = makeSite(root, from, uri, {
        files: front ? (opts.files ?? 120) : 7,
        privateFiles: front ? 15 : 2,
        seed: front ? `${uri}:${frontName}` : `${uri}:stale`,
        // the first site's shared storage where it always was, each other site's a folder of its own
        ...(opts.symlinkFiles?.includes(frontName) ? { filesSymlinkTo: path.join(sharedStorage, frontName, ...(uri === site ? [] : [uri]), "files") } : {}),
      });
      if (front) {
        // code the fronts have and the hostmaster's stale copy lacks: fetch-site must bring it
        fs.writeFileSync(path.join(info.siteDir, "modules", "custom", "m", "new.inc"), `<?php // ${uri} live\n`, { mode: 0o644 });
      } else {
        // code only the stale copy has: fetch-site (rsync --delete) must drop it
        fs.writeFileSync(path.join(info.siteDir, "modules", "custom", "m", "stale-only.inc"), "<?php // stale\n", { mode: 0o644 });
      }
      if (opts.noPrivateFiles?.includes(frontName)) fs.rmSync(info.privateFilesDir, { recursive: true });
    }
  }
  fs.mkdirSync(sharedStorage, { recursive: true });
  // the fronts' trees belong to the agents' user, as platforms belong to the aegir user
  cluster.handOver();

  return rescan({
    cluster,
    baseDir,
    site,
    from,
    to,
    sharedStorage,
    before: new Map(),
    dataBefore: new Map(),
    codeBefore: new Map(),
    pki,
    cleanup: async () => {
      await cluster.stop();
      await rm(baseDir, { recursive: true, force: true });
    },
  });
}

/**
 * The scenario of another of its sites (`moreSites`), to check with expectMigrated and the like. Its
 * "before" is taken now: call it before migrating.
 */
export function forSite(s: Scenario, site: string): Promise<Scenario> {
  return rescan({ ...s, site });
}

/** The scenario with its "before" taken again: after a test changed the trees on purpose, before it migrates. */
export async function rescan(s: Scenario): Promise<Scenario> {
  const before = await snapshotAll(s.cluster, s.sharedStorage);
  const dataBefore = new Map<string, Map<string, Manifest | null>>();
  const codeBefore = new Map<string, Manifest>();
  for (const f of s.cluster.fronts) {
    const dir = siteDir(f.root, s.from, s.site);
    const data = new Map<string, Manifest | null>();
    for (const d of DATA_DIRS) data.set(d, await manifestOrAbsent(path.join(dir, d)));
    dataBefore.set(f.name, data);
    codeBefore.set(f.name, excludePaths(await manifest(dir), [...DATA_DIRS]));
  }
  return { ...s, before, dataBefore, codeBefore };
}

export async function snapshotAll(cluster: Cluster, sharedStorage: string): Promise<Map<string, Manifest>> {
  const out = new Map<string, Manifest>();
  for (const { name, root } of cluster.roots()) out.set(name, await manifest(root));
  out.set("shared-storage", await manifest(sharedStorage));
  return out;
}

/** Every root and the shared storage are exactly as before: content, mode, link targets. */
export async function expectUnchanged(s: Scenario): Promise<void> {
  const after = await snapshotAll(s.cluster, s.sharedStorage);
  for (const [name, m] of s.before) {
    const diff = diffManifests(m, after.get(name) ?? new Map());
    expect(diff, `${name} changed:\n${summarizeDiff(diff)}`).toEqual([]);
  }
}

/** Runs the controller, expects a refusal with the given exit code, and every tree as it was. */
export async function expectRefused(s: Scenario, args: string[], exitCode = 2): Promise<string> {
  const before: Map<string, Manifest> = await snapshotAll(s.cluster, s.sharedStorage);
  const run = await runController(s.cluster.controllerConfig, args.includes("--json") ? args : [...args, "--json"]);
  expect(run.exitCode, run.stdout + run.stderr).toBe(exitCode);
  const result = run.events.at(-1);
  expect(result).toMatchObject({ event: "result", outcome: exitCode === 4 ? "locked" : "refused", exitCode });
  const message = String(result?.message);
  expect(message).not.toContain("\n");
  const after = await snapshotAll(s.cluster, s.sharedStorage);
  for (const [name, m] of before) {
    const diff = diffManifests(m, after.get(name) ?? new Map());
    expect(diff, `${name} changed:\n${summarizeDiff(diff)}`).toEqual([]);
  }
  expect(fs.existsSync(path.join(s.cluster.masterState, "migrations")), "no journal for a refused migration").toBe(false);
  return message;
}

/** The entries of a manifest under `prefix`, keyed as a manifest of that folder would be. */
function subtree(m: Manifest, prefix: string): Manifest {
  const out = new Map<string, Manifest extends ReadonlyMap<string, infer E> ? E : never>();
  for (const [k, v] of m) {
    if (k === prefix) out.set(".", v);
    else if (k.startsWith(`${prefix}/`)) out.set(k.slice(prefix.length + 1), v);
  }
  return out;
}

function expectNoPark(name: string, root: string): void {
  const park = path.join(root, PARK);
  const left = fs.existsSync(park) ? fs.readdirSync(park, { recursive: true }) : [];
  expect(left, `${name}: park area not empty`).toEqual([]);
}

/**
 * The migration is complete on every host: the old site folder is gone, the new one holds the fetched
 * code, and each front's data dirs are the very same trees (or the same links) as before.
 */
export async function expectMigrated(s: Scenario, opts: { newSite?: string; fetchFrom?: string; keptStaleData?: { migrationId: string } } = {}): Promise<void> {
  const newSite = opts.newSite ?? s.site;
  const fetchFrom = opts.fetchFrom ?? (s.cluster.fronts.find((f) => f.local) ?? s.cluster.fronts[0])?.name ?? "";
  const code = s.codeBefore.get(fetchFrom);
  if (!code) throw new Error(`no front ${fetchFrom}`);

  for (const f of s.cluster.fronts) {
    const oldDir = siteDir(f.root, s.from, s.site);
    const newDir = siteDir(f.root, s.to, newSite);
    expect(fs.existsSync(oldDir), `${f.name}: old site folder still there`).toBe(false);
    const after = await manifest(newDir);
    const codeDiff = diffManifests(code, excludePaths(after, [...DATA_DIRS]));
    expect(codeDiff, `${f.name}: code differs:\n${summarizeDiff(codeDiff)}`).toEqual([]);
    for (const d of DATA_DIRS) {
      const expected = s.dataBefore.get(f.name)?.get(d) ?? null;
      const actual = await manifestOrAbsent(path.join(newDir, d));
      if (expected === null) {
        expect(actual, `${f.name}: ${d} appeared`).toBeNull();
      } else {
        expect(actual, `${f.name}: ${d} missing`).not.toBeNull();
        const diff = diffManifests(expected, actual as Manifest);
        expect(diff, `${f.name}: ${d} differs:\n${summarizeDiff(diff)}`).toEqual([]);
      }
    }
    expectNoPark(f.name, f.root);
  }
  if (!s.cluster.fronts.some((f) => f.local)) {
    const root = s.cluster.masterRoot;
    expect(fs.existsSync(siteDir(root, s.from, s.site)), "hostmaster: old site folder still there").toBe(false);
    const after = await manifest(siteDir(root, s.to, newSite));
    const diff = diffManifests(code, after);
    expect(diff, `hostmaster: new site folder differs from the fetched code (stale data must be gone):\n${summarizeDiff(diff)}`).toEqual([]);
    if (opts.keptStaleData) {
      // --keep-master-data: the stale data dirs, byte for byte as they were, and nothing else in the park area
      const park = path.join(root, PARK, opts.keptStaleData.migrationId);
      const before = s.before.get("hostmaster") ?? new Map();
      for (const d of DATA_DIRS) {
        const diff = diffManifests(subtree(before, `${s.from}/sites/${s.site}/${d}`), (await manifestOrAbsent(path.join(park, encodeURIComponent(d)))) ?? new Map());
        expect(diff, `hostmaster: kept stale ${d} differs:\n${summarizeDiff(diff)}`).toEqual([]);
      }
      expect(fs.readdirSync(path.join(root, PARK)), "hostmaster: only this migration's park folder").toEqual([opts.keptStaleData.migrationId]);
      expect(fs.readdirSync(park).sort(), "hostmaster: only the stale data dirs are kept").toEqual(DATA_DIRS.map((d) => encodeURIComponent(d)).sort());
    } else {
      expectNoPark("hostmaster", root);
    }
  }
  const shared = await manifest(s.sharedStorage);
  const sharedDiff = diffManifests(s.before.get("shared-storage") ?? new Map(), shared);
  expect(sharedDiff, `shared storage changed:\n${summarizeDiff(sharedDiff)}`).toEqual([]);
}

/**
 * Wherever a migration stopped, each data dir that existed before is in exactly one place on its host:
 * the old site folder, the park area or the new site folder (a rename moves the whole tree, so this
 * holds for every file in it). Its content is checked too, wherever it is.
 */
export async function expectDataExactlyOnce(s: Scenario, migrationId: string, newSite = s.site): Promise<void> {
  for (const f of s.cluster.fronts) {
    for (const d of DATA_DIRS) {
      const expected = s.dataBefore.get(f.name)?.get(d) ?? null;
      if (expected === null) continue;
      const places = [
        path.join(siteDir(f.root, s.from, s.site), d),
        path.join(f.root, PARK, migrationId, encodeURIComponent(d)),
        path.join(siteDir(f.root, s.to, newSite), d),
      ];
      const found: string[] = [];
      for (const p of places) {
        const m = await manifestOrAbsent(p);
        if (m === null || (m.get(".")?.type === "dir" && m.size === 1 && expected.size > 1)) continue;
        found.push(p);
        const diff = diffManifests(expected, m);
        expect(diff, `${f.name}: ${d} at ${p} differs:\n${summarizeDiff(diff)}`).toEqual([]);
      }
      expect(found, `${f.name}: ${d} must be in exactly one place`).toHaveLength(1);
    }
  }
}
