// `npm run demo`: a real migration on a throw-away local cluster (hostmaster + two web-front agents),
// then a file-by-file check that every front's data came through untouched. Cleans up after itself.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { abortOnSignals, checkRsync, fakeDrushHooks, makeClusterPki, startCluster, runController, type Cluster } from './lib/cluster.js';
import { makePlatform, makeSite } from './lib/fixtures.js';
import { countTypes, diffManifests, excludePaths, manifest, manifestOrAbsent, summarizeDiff, type Manifest } from './lib/manifest.js';

const SITE = 'shop.example.com';
const FROM = 'drupal-7.98';
const TO = 'drupal-7.99';
const DATA_DIRS = ['files', 'private/files'] as const;
const FILES = 3000;
const PRIVATE_FILES = 200;
const PARK = '.quick-migrate-park';

interface Before {
  files: Manifest;
  privateFiles: Manifest;
  /** the shared-storage folder behind a symlinked files/ */
  shared: Manifest | null;
}

async function main(): Promise<number> {
  try {
    checkRsync();
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
  const keep = process.argv.includes('--keep');
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quick-migrate-demo-'));
  let cluster: Cluster | undefined;
  // A signal aborts the run; the finally below then stops the agents and removes the temp dir.
  const abort = abortOnSignals(baseDir);
  const checkpoint = (): void => abort.signal.throwIfAborted();

  try {
    console.log(`quick-migrate demo in ${baseDir}`);
    const sharedFiles = path.join(baseDir, 'shared-storage', SITE, 'files');
    const drushLog = path.join(baseDir, 'fake-drush.log');
    let t = performance.now();
    // mutual TLS, as in production: a private CA, the controller's certificate and one per front
    const pki = path.join(baseDir, 'pki');
    makeClusterPki(pki, 'hostmaster', ['web1=127.0.0.1', 'web2=127.0.0.1']);
    console.log(`certificates: deploy/tls/make-certs.sh made a CA, hostmaster's and one per front in ${pki} (${ms(t)})`);
    t = performance.now();
    cluster = await startCluster({ baseDir, fronts: [{ name: 'web1' }, { name: 'web2' }], hooks: fakeDrushHooks(), tls: { dir: pki } });
    checkpoint();
    console.log(`agents (mTLS, allowedClients: [hostmaster]): ${cluster.fronts.map((f) => `${f.name} on ${f.address}`).join(', ')} (${ms(t)})`);

    t = performance.now();
    for (const { root } of cluster.roots()) {
      makePlatform(root, FROM);
      makePlatform(root, TO);
    }
    // The hostmaster holds the stale copy Aegir keeps: same code, an old and smaller files/.
    makeSite(cluster.masterRoot, FROM, SITE, { files: Math.floor(FILES / 3), privateFiles: Math.floor(PRIVATE_FILES / 4), seed: 'hostmaster-stale' });
    makeSite(cluster.frontRoot('web1'), FROM, SITE, { files: FILES, privateFiles: PRIVATE_FILES, seed: 'web1' });
    makeSite(cluster.frontRoot('web2'), FROM, SITE, { files: FILES, privateFiles: PRIVATE_FILES, seed: 'web2', filesSymlinkTo: sharedFiles });
    // the fronts' trees belong to the agents' user, as platforms belong to the aegir user
    cluster.handOver();
    console.log(`site ${SITE} on ${FROM}: ${FILES} files in files/ and ${PRIVATE_FILES} in private/files on each front; web2's files -> ${sharedFiles} (${ms(t)})`);

    checkpoint();
    const before = new Map<string, Before>();
    for (const f of cluster.fronts) {
      const site = path.join(f.root, FROM, 'sites', SITE);
      before.set(f.name, {
        files: await manifest(path.join(site, 'files')),
        privateFiles: await manifest(path.join(site, 'private', 'files')),
        shared: f.name === 'web2' ? await manifest(sharedFiles) : null,
      });
    }
    // fetch-site takes the code from the first front; every host must end up with exactly that.
    const expectedCode = excludePaths(await manifest(path.join(cluster.frontRoot('web1'), FROM, 'sites', SITE)), DATA_DIRS);

    const args = ['migrate', SITE, '--from', FROM, '--to', TO];
    console.log(`\n$ quick-migrate ${args.join(' ')} --config ${cluster.controllerConfig}\n`);
    checkpoint();
    const run = await runController(cluster.controllerConfig, args, { inherit: true, env: { QM_FAKE_DRUSH_LOG: drushLog }, signal: abort.signal });
    console.log('');
    checkpoint();

    const checks = new Checks();
    checks.add(`migrate exited ${run.exitCode}`, run.exitCode === 0, run.timedOut ? 'timed out' : '');
    for (const host of cluster.roots()) {
      const oldSite = path.join(host.root, FROM, 'sites', SITE);
      const newSite = path.join(host.root, TO, 'sites', SITE);
      const newManifest = await manifestOrAbsent(newSite);
      checks.add(`${host.name}: ${TO}/sites/${SITE} exists`, newManifest !== null);
      checks.add(`${host.name}: ${FROM}/sites/${SITE} is gone`, !fs.existsSync(oldSite));
      if (newManifest !== null) {
        const diff = diffManifests(expectedCode, excludePaths(newManifest, DATA_DIRS));
        checks.add(`${host.name}: code and settings identical to web1's`, diff.length === 0, summarizeDiff(diff, 5));
      }
    }
    const masterFiles = await manifestOrAbsent(path.join(cluster.masterRoot, TO, 'sites', SITE, 'files'));
    checks.add(
      `hostmaster: stale files/ copy not carried over`,
      masterFiles === null || (masterFiles.size === 1 && masterFiles.get('.')?.type === 'dir'),
      masterFiles === null ? '' : `${countTypes(masterFiles).file} files in it`,
    );
    for (const f of cluster.fronts) {
      const b = before.get(f.name);
      if (b === undefined) continue;
      const newSite = path.join(f.root, TO, 'sites', SITE);
      for (const [label, was, dir] of [
        ['files', b.files, path.join(newSite, 'files')],
        ['private/files', b.privateFiles, path.join(newSite, 'private', 'files')],
      ] as const) {
        const now = await manifestOrAbsent(dir);
        const diff = now === null ? ['missing'] : diffManifests(was, now);
        checks.add(`${f.name}: ${label}/ identical (${describe(was)})`, diff.length === 0, summarizeDiff(diff, 5));
      }
      if (b.shared !== null) {
        const diff = diffManifests(b.shared, await manifest(sharedFiles));
        checks.add(`${f.name}: shared storage untouched (${countTypes(b.shared).file} files)`, diff.length === 0, summarizeDiff(diff, 5));
      }
    }
    for (const host of cluster.roots()) {
      const left = leftovers(path.join(host.root, PARK));
      checks.add(`${host.name}: nothing left in ${PARK}/`, left.length === 0, left.slice(0, 5).join(', '));
    }
    const hooks = hooksRun(drushLog);
    if (hooks.length > 0) console.log(`hooks run (fake drush): ${hooks.join(', ')}`);

    console.log(`\nverification: ${checks.passed}/${checks.total} checks passed`);
    const secs = (run.durationMs / 1000).toFixed(2);
    if (run.exitCode === 0) console.log(`migrate took ${secs} s; ${FILES * 2} + ${PRIVATE_FILES * 2} data files renamed in place, none copied`);
    else console.log(`migrate failed with exit code ${run.exitCode} after ${secs} s`);
    return checks.failed === 0 ? 0 : 1;
  } catch (err) {
    if (abort.signal.aborted) return 130;
    console.error(`demo failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await cluster?.stop().catch((err: unknown) => console.error(`stopping agents: ${(err as Error).message}`));
    if (keep) console.log(`kept ${baseDir}`);
    else fs.rmSync(baseDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

class Checks {
  total = 0;
  passed = 0;
  get failed(): number {
    return this.total - this.passed;
  }
  add(what: string, ok: boolean, detail = ''): void {
    this.total++;
    if (ok) this.passed++;
    console.log(`${ok ? '✓' : '✗'} ${what}`);
    if (!ok && detail !== '') console.log(detail.replace(/^/gm, '    '));
  }
}

function describe(m: Manifest): string {
  const root = m.get('.');
  if (root?.type === 'symlink') return `symlink -> ${root.target ?? '?'}`;
  return `${countTypes(m).file} files`;
}

/** Everything under the park area that is not a directory. */
function leftovers(park: string): string[] {
  if (!fs.existsSync(park)) return [];
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(park, p));
    }
  };
  walk(park);
  return out;
}

function hooksRun(log: string): string[] {
  if (!fs.existsSync(log)) return [];
  return fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const { argv } = JSON.parse(l) as { argv: string[] };
      return argv.filter((a) => !a.startsWith('@') && !a.startsWith('--')).join(' ');
    });
}

function ms(since: number): string {
  return `${Math.round(performance.now() - since)} ms`;
}

process.exitCode = await main();
