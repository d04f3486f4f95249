// Builds Aegir-like platform and site trees on disk for the demo, the benchmark and the tests.
// Sync fs calls on purpose: 50,000 small files must take seconds, and no process is spawned per file.
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';

/** Data files are spread over subfolders of this many files each, as Drupal's styles/ and dated folders are. */
export const FILES_PER_FOLDER = 500;

export interface SiteOptions {
  /** Regular files in `files/` (plus `.htaccess` and one relative symlink when > 0). Default 10. */
  readonly files?: number;
  /** Regular files in `private/files/`. Default 5. */
  readonly privateFiles?: number;
  /** Absolute folder ("shared storage") to fill with the files; `files` becomes a symlink to it. */
  readonly filesSymlinkTo?: string;
  /** Same as `filesSymlinkTo`, for `private/files`. */
  readonly privateFilesSymlinkTo?: string;
  /** Varies the data files' contents and modes (default: the uri). Code and settings do not depend on it. */
  readonly seed?: string;
  /** Every data file this many bytes (random, incompressible) instead of 0–1.5 KB of seeded bytes: a size, not a count, that matters. */
  readonly fileBytes?: number;
}

export interface SiteInfo {
  /** `<root>/<platform>/sites/<uri>` */
  readonly siteDir: string;
  /** `<siteDir>/files` (a symlink when `filesSymlinkTo` was given) */
  readonly filesDir: string;
  /** where the files really are: `filesDir` or the symlink target */
  readonly filesData: string;
  /** `<siteDir>/private/files` (a symlink when `privateFilesSymlinkTo` was given) */
  readonly privateFilesDir: string;
  readonly privateFilesData: string;
}

/** `<root>/<platform>/sites/<uri>` */
export function sitePath(root: string, platform: string, uri: string): string {
  return path.join(root, checkPlatform(platform), 'sites', checkUri(uri));
}

/**
 * Creates `<root>/<platform>/` with a few code files and `sites/`. Idempotent.
 * Returns the platform folder.
 */
export function makePlatform(root: string, platform: string): string {
  const dir = path.join(root, checkPlatform(platform));
  mkdir(dir, 0o755);
  mkdir(path.join(dir, 'includes'), 0o755);
  mkdir(path.join(dir, 'sites'), 0o755);
  mkdir(path.join(dir, 'sites', 'all'), 0o755);
  mkdir(path.join(dir, 'sites', 'all', 'modules'), 0o755);
  write(path.join(dir, 'index.php'), `<?php\n// ${platform}\ndefine('DRUPAL_ROOT', getcwd());\nrequire_once DRUPAL_ROOT . '/includes/bootstrap.inc';\n`, 0o644);
  write(path.join(dir, 'includes', 'bootstrap.inc'), `<?php\ndefine('VERSION', '${platform}');\n`, 0o644);
  write(path.join(dir, 'sites', 'all', 'modules', 'README.txt'), 'Contributed modules go here.\n', 0o644);
  return dir;
}

/**
 * Creates the site folder `<root>/<platform>/sites/<uri>/` as Aegir lays it out (see AEGIR-NOTES.md).
 * The platform must exist (see makePlatform); the site must not.
 */
export function makeSite(root: string, platform: string, uri: string, opts: SiteOptions = {}): SiteInfo {
  const sitesDir = path.join(root, checkPlatform(platform), 'sites');
  if (!fs.existsSync(sitesDir)) throw new Error(`platform not found: ${sitesDir} (call makePlatform first)`);
  const siteDir = path.join(sitesDir, checkUri(uri));
  if (fs.existsSync(siteDir)) throw new Error(`site already exists: ${siteDir}`);
  const seed = opts.seed ?? uri;

  mkdir(siteDir, 0o755);
  // Code and settings depend on the uri only, so every host of a cluster holds the same ones.
  write(path.join(siteDir, 'settings.php'), settingsPhp(uri), 0o440);
  write(path.join(siteDir, 'drushrc.php'), `<?php\n$options['uri'] = 'http://${uri}';\n$options['site_path'] = 'sites/${uri}';\n`, 0o400);
  write(path.join(siteDir, 'local.settings.php'), `<?php\n$conf['site_name'] = '${uri}';\n`, 0o640);
  mkdir(path.join(siteDir, 'modules'), 0o755);
  mkdir(path.join(siteDir, 'modules', 'custom'), 0o755);
  mkdir(path.join(siteDir, 'modules', 'custom', 'm'), 0o755);
  write(path.join(siteDir, 'modules', 'custom', 'm', 'm.info'), 'name = M\ncore = 7.x\n', 0o644);
  write(path.join(siteDir, 'modules', 'custom', 'm', 'm.module'), `<?php\nfunction m_help() { return '${uri}'; }\n`, 0o644);
  mkdir(path.join(siteDir, 'themes'), 0o755);
  mkdir(path.join(siteDir, 'libraries'), 0o2775);
  write(path.join(siteDir, 'libraries', 'README.txt'), 'Site libraries.\n', 0o664);

  const filesDir = path.join(siteDir, 'files');
  const filesData = placeData(filesDir, opts.filesSymlinkTo);
  fillData(filesData, opts.files ?? 10, `${seed}:files`, true, opts.fileBytes);

  mkdir(path.join(siteDir, 'private'), 0o2770);
  mkdir(path.join(siteDir, 'private', 'temp'), 0o2770);
  mkdir(path.join(siteDir, 'private', 'config'), 0o2770);
  const privateFilesDir = path.join(siteDir, 'private', 'files');
  const privateFilesData = placeData(privateFilesDir, opts.privateFilesSymlinkTo);
  fillData(privateFilesData, opts.privateFiles ?? 5, `${seed}:private`, false, opts.fileBytes);

  return { siteDir, filesDir, filesData, privateFilesDir, privateFilesData };
}

/** Either creates `dir` or creates the shared-storage `target` and makes `dir` an absolute symlink to it. */
function placeData(dir: string, target: string | undefined): string {
  if (target === undefined) {
    mkdir(dir, 0o2770);
    return dir;
  }
  if (!path.isAbsolute(target)) throw new Error(`symlink target must be absolute: ${target}`);
  fs.mkdirSync(target, { recursive: true });
  fs.chmodSync(target, 0o2770);
  fs.symlinkSync(target, dir);
  return target;
}

const EXTENSIONS = ['jpg', 'png', 'pdf', 'txt', 'css', 'js'] as const;

/** Fills `dir` (which exists) with `count` deterministic files in subfolders of FILES_PER_FOLDER. */
function fillData(dir: string, count: number, seed: string, publicDir: boolean, fileBytes?: number): void {
  if (!Number.isInteger(count) || count < 0) throw new Error(`bad file count: ${count}`);
  if (count === 0) return;
  // Drupal writes a read-only .htaccess into every files directory.
  write(path.join(dir, '.htaccess'), publicDir ? 'Options -Indexes\n' : 'Deny from all\n', 0o444);
  const seedWord = createHash('sha256').update(seed).digest().readUInt32LE(0);
  let folder = '';
  for (let i = 0; i < count; i++) {
    if (i % FILES_PER_FOLDER === 0) {
      folder = path.join(dir, `d${String(Math.floor(i / FILES_PER_FOLDER)).padStart(3, '0')}`);
      mkdir(folder, 0o2775);
    }
    const rng = mulberry32((seedWord ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
    const ext = EXTENSIONS[i % EXTENSIONS.length] ?? 'bin';
    const content = fileBytes === undefined ? fileContent(seed, i, rng) : randomBytes(fileBytes);
    write(path.join(folder, `f${String(i).padStart(5, '0')}.${ext}`), content, fileMode(rng));
  }
  // A relative link to a sibling, as image styles and some modules create.
  fs.symlinkSync(`d000/f00000.${EXTENSIONS[0]}`, path.join(dir, 'latest'));
}

/**
 * Adds site code to an existing site folder (not to its data dirs): `bigFiles` files of `bigBytes` in
 * `libraries/big/` and `smallFiles` files of `smallBytes` in `libraries/small/dNNN/`, random bytes (as
 * incompressible as the images and archives a site's code carries). For a site folder of a given size.
 */
export function addSiteCode(siteDir: string, opts: { bigFiles: number; bigBytes: number; smallFiles: number; smallBytes: number }): void {
  const big = path.join(siteDir, 'libraries', 'big');
  mkdir(big, 0o755);
  const chunk = 1024 * 1024;
  for (let i = 0; i < opts.bigFiles; i++) {
    const file = path.join(big, `blob${i}.bin`);
    const fd = fs.openSync(file, 'w', 0o644);
    for (let left = opts.bigBytes; left > 0; left -= chunk) fs.writeSync(fd, randomBytes(Math.min(chunk, left)));
    fs.closeSync(fd);
  }
  const small = path.join(siteDir, 'libraries', 'small');
  for (let i = 0; i < opts.smallFiles; i++) {
    const folder = path.join(small, `d${String(Math.floor(i / FILES_PER_FOLDER)).padStart(3, '0')}`);
    if (i % FILES_PER_FOLDER === 0) mkdir(folder, 0o755);
    write(path.join(folder, `s${String(i).padStart(5, '0')}.js`), randomBytes(opts.smallBytes), 0o644);
  }
}

function fileContent(seed: string, i: number, rng: () => number): Buffer {
  const header = Buffer.from(`${seed} #${i}\n`);
  const body = Buffer.allocUnsafe(Math.floor(rng() * 1500));
  for (let j = 0; j < body.length; j++) body[j] = Math.floor(rng() * 256);
  return Buffer.concat([header, body]);
}

function fileMode(rng: () => number): number {
  const r = rng();
  if (r < 0.1) return 0o600;
  if (r < 0.2) return 0o640;
  if (r < 0.35) return 0o664;
  return 0o644;
}

/** Small fast deterministic PRNG; the contents need only be varied and reproducible, not random. */
function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function settingsPhp(uri: string): string {
  const db = uri.replace(/[^a-z0-9]/gi, '_').slice(0, 32);
  return `<?php\n$databases['default']['default'] = array(\n  'driver' => 'mysql',\n  'database' => '${db}',\n  'username' => '${db}',\n  'host' => 'localhost',\n);\n$conf['file_public_path'] = 'sites/${uri}/files';\n$conf['file_private_path'] = 'sites/${uri}/private/files';\n$conf['file_temporary_path'] = 'sites/${uri}/private/temp';\n@include('sites/${uri}/local.settings.php');\n`;
}

// Explicit chmod after every create: the umask would otherwise strip bits (and never sets setgid).
function mkdir(dir: string, mode: number): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, mode);
}

function write(file: string, content: string | Buffer, mode: number): void {
  // A read-only file from a previous makePlatform would refuse the overwrite.
  if (fs.existsSync(file)) fs.chmodSync(file, 0o600);
  fs.writeFileSync(file, content);
  fs.chmodSync(file, mode);
}

function checkPlatform(platform: string): string {
  const parts = platform.split('/');
  if (path.isAbsolute(platform) || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new Error(`platform must be a relative path without empty, . or .. parts: ${platform}`);
  }
  return platform;
}

function checkUri(uri: string): string {
  if (uri === '' || uri.includes('/') || uri === '.' || uri === '..') throw new Error(`bad site uri: ${uri}`);
  return uri;
}
