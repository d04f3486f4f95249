// The tree builder and the manifest/diff that the integration tests rely on to compare hosts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FILES_PER_FOLDER, makePlatform, makeSite } from '../../scripts/lib/fixtures.js';
import { countTypes, diffManifests, excludePaths, manifest, manifestOrAbsent } from '../../scripts/lib/manifest.js';
import { checkRsync, RSYNC_MISSING } from '../../scripts/lib/cluster.js';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qm-fixtures-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('makeSite', () => {
  it('lays out an Aegir site with the modes Aegir uses', async () => {
    const root = path.join(tmp, 'root');
    makePlatform(root, 'd10/web');
    const site = makeSite(root, 'd10/web', 'a.example.com', { files: FILES_PER_FOLDER + 20, privateFiles: 3 });
    expect(site.siteDir).toBe(path.join(root, 'd10/web/sites/a.example.com'));
    expect(fs.existsSync(path.join(root, 'd10/web/index.php'))).toBe(true);

    const m = await manifest(site.siteDir);
    expect(m.get('settings.php')?.mode).toBe(0o440);
    expect(m.get('drushrc.php')?.mode).toBe(0o400);
    expect(m.get('libraries')?.mode).toBe(0o2775);
    expect(m.get('files')).toEqual({ type: 'dir', mode: 0o2770 });
    expect(m.get('private/files')?.mode).toBe(0o2770);
    expect(m.get('private/temp')?.type).toBe('dir');
    expect(m.get('private/config')?.type).toBe('dir');
    expect(m.get('modules/custom/m/m.module')?.type).toBe('file');
    expect(m.get('files/latest')).toEqual({ type: 'symlink', mode: 0o777, target: 'd000/f00000.jpg' });

    const files = excludePaths(await manifest(site.filesDir), ['.htaccess', 'latest']);
    expect(countTypes(files)).toEqual({ file: FILES_PER_FOLDER + 20, dir: 3, symlink: 0, other: 0 });
    const modes = new Set([...files.values()].filter((e) => e.type === 'file').map((e) => e.mode));
    expect(modes.size).toBeGreaterThan(1);
    expect(countTypes(await manifest(site.privateFilesDir)).file).toBe(3 + 1); // + .htaccess
  });

  it('is deterministic per seed, and different seeds give different data but the same code', async () => {
    const [r1, r2, r3] = ['r1', 'r2', 'r3'].map((n) => path.join(tmp, n)) as [string, string, string];
    for (const r of [r1, r2, r3]) makePlatform(r, 'p');
    const a = makeSite(r1, 'p', 's.test', { files: 30, seed: 'x' });
    const b = makeSite(r2, 'p', 's.test', { files: 30, seed: 'x' });
    const c = makeSite(r3, 'p', 's.test', { files: 30, seed: 'y' });
    expect(diffManifests(await manifest(a.siteDir), await manifest(b.siteDir))).toEqual([]);
    expect(diffManifests(await manifest(a.filesDir), await manifest(c.filesDir)).length).toBeGreaterThan(0);
    const code = ['files', 'private/files'];
    expect(diffManifests(excludePaths(await manifest(a.siteDir), code), excludePaths(await manifest(c.siteDir), code))).toEqual([]);
  });

  it('makes files a symlink to shared storage, and files: 0 an empty dir', async () => {
    const root = path.join(tmp, 'root');
    const shared = path.join(tmp, 'shared', 'files');
    makePlatform(root, 'p');
    const site = makeSite(root, 'p', 's.test', { files: 12, privateFiles: 0, filesSymlinkTo: shared });
    const m = await manifest(site.siteDir);
    expect(m.get('files')).toMatchObject({ type: 'symlink', target: shared });
    expect(m.has('files/latest')).toBe(false); // not followed
    expect(await manifest(site.filesDir)).toEqual(new Map([['.', { type: 'symlink', mode: 0o777, target: shared }]]));
    expect(countTypes(await manifest(shared)).file).toBe(12 + 1);
    expect(await manifest(site.privateFilesDir)).toEqual(new Map([['.', { type: 'dir', mode: 0o2770 }]]));
    expect(() => makeSite(root, 'p', 's.test')).toThrow(/already exists/);
  });
});

describe('diffManifests', () => {
  it('reports a changed byte, a mode, a link target, missing and extra entries', async () => {
    const root = path.join(tmp, 'root');
    makePlatform(root, 'p');
    const site = makeSite(root, 'p', 's.test', { files: 5, privateFiles: 1 });
    const before = await manifest(site.siteDir);

    const victim = path.join(site.filesDir, 'd000', 'f00002.pdf');
    const bytes = fs.readFileSync(victim);
    bytes[bytes.length - 1] = (bytes.at(-1) ?? 0) ^ 1;
    fs.writeFileSync(victim, bytes);
    fs.chmodSync(path.join(site.siteDir, 'libraries'), 0o755);
    fs.unlinkSync(path.join(site.filesDir, 'latest'));
    fs.symlinkSync('d000/f00001.png', path.join(site.filesDir, 'latest'));
    fs.rmSync(path.join(site.siteDir, 'private', 'temp'), { recursive: true });
    fs.writeFileSync(path.join(site.siteDir, 'new.txt'), 'x');

    const diff = diffManifests(before, await manifest(site.siteDir));
    expect(diff).toEqual([
      expect.stringMatching(/^changed: files\/d000\/f00002\.pdf: sha256 [0-9a-f]{12} -> [0-9a-f]{12}$/),
      'changed: files/latest: target d000/f00000.jpg -> d000/f00001.png',
      'changed: libraries: mode 2775 -> 0755',
      'extra: new.txt (file)',
      'missing: private/temp (dir)',
    ]);
  });

  it('manifestOrAbsent is null for a missing path, not for a dangling symlink', async () => {
    expect(await manifestOrAbsent(path.join(tmp, 'nope'))).toBeNull();
    fs.symlinkSync(path.join(tmp, 'nope'), path.join(tmp, 'dangling'));
    expect((await manifestOrAbsent(path.join(tmp, 'dangling')))?.get('.')?.type).toBe('symlink');
  });
});

describe('checkRsync', () => {
  it('names the install command when rsync is not on PATH', () => {
    const saved = process.env.PATH;
    process.env.PATH = tmp;
    try {
      expect(() => checkRsync()).toThrow(RSYNC_MISSING);
    } finally {
      process.env.PATH = saved;
    }
  });
});
