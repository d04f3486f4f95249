// Makes the release tarball: quick-migrate-<version>.tar.gz, one folder quick-migrate-<version>/ with bin/,
// dist/ (compiled afresh, without the demo, bench and test helpers, and bundled into dist/bundle/, which
// bin/ runs, from the very dependencies packed), production dependencies only, deploy/
// and the README. deploy/install.sh installs it. Checks that the packed binaries run before packing.
//
//   npm run release [-- --out DIR]
//
// --out: where the tarball and its .sha256 go (default release/). The version is package.json's: a
// release bumps it and commits first.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";

const top = new URL("..", import.meta.url).pathname;
const started = Date.now();

function usage(message) {
  console.error(`release: ${message}\nusage: npm run release [-- --out DIR]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let outDir = join(top, "release");
while (args.length > 0) {
  const arg = args.shift();
  if (arg === "--out" && args.length > 0) outDir = resolve(args.shift());
  else usage(`unknown or incomplete option ${arg}`);
}

const pkg = JSON.parse(readFileSync(join(top, "package.json"), "utf8"));
const { version } = pkg;
// the version names the install folder (/opt/quick-migrate/<version>): a plain semver, nothing else
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$/.test(version)) usage(`version ${JSON.stringify(version)} is not X.Y.Z or X.Y.Z-tag`);

const name = `quick-migrate-${version}`;
// staged outside the checkout: Node must not find the checkout's node_modules (devDependencies) above it
const work = mkdtempSync(join(tmpdir(), "qm-release-"));
const stage = join(work, name);

const run = (file, argv, cwd = top, stdio = ["ignore", "inherit", "inherit"]) => execFileSync(file, argv, { cwd, stdio, encoding: "utf8" });

try {
  // dist/ compiled afresh into the stage: no file left over from a source since removed; no source maps (no sources shipped)
  run(join(top, "node_modules/.bin/tsc"), ["-p", "tsconfig.json", "--outDir", join(stage, "dist"), "--sourceMap", "false"]);
  // the demo, the bench and the local-cluster helpers the tests use do not run on a host
  rmSync(join(stage, "dist", "scripts"), { recursive: true });
  // the schema the agent serves by gRPC reflection (as scripts/copy-proto.mjs puts it in a checkout's dist/)
  cpSync(join(top, "proto"), join(stage, "dist", "proto"), { recursive: true, filter: (src) => !/\.ya?ml$/.test(src) });

  for (const part of ["bin", "deploy", "README.md", "package-lock.json", ...(existsSync(join(top, "LICENSE")) ? ["LICENSE"] : [])]) {
    cpSync(join(top, part), join(stage, part), { recursive: true });
  }
  // package.json without its scripts: they build and test a checkout, which this is not
  const { scripts: _scripts, ...packed } = pkg;
  writeFileSync(join(stage, "package.json"), `${JSON.stringify(packed, null, 2)}\n`);
  const lock = JSON.parse(readFileSync(join(top, "package-lock.json"), "utf8"));

  // production dependencies only, exactly as locked; no install scripts (none is needed: all are plain JavaScript)
  run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], stage);
  // the bundle bin/ runs, made from the stage's own dist/ and the dependencies just installed in it
  run(process.execPath, [join(top, "scripts", "bundle.mjs"), "--dist", join(stage, "dist")]);
  // (what only the devDependencies need is marked dev in the lock; @types/node is not: protobufjs depends on it)
  for (const [where, entry] of Object.entries(lock.packages ?? {})) {
    if (entry.dev === true && existsSync(join(stage, where))) throw new Error(`${where}, a development dependency, was installed into the release`);
  }
  // the binaries run from the stage, with nothing but what it holds
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  for (const bin of ["quick-migrate", "quick-migrate-agent"]) {
    const said = execFileSync(join(stage, "bin", bin), ["--version"], { cwd: work, env, encoding: "utf8" }).trim();
    if (said !== version) throw new Error(`the packed ${bin} --version says ${JSON.stringify(said)}, not ${version}`);
  }

  // the tar: sorted, owned by root, one mtime (the last commit's), gzip without a timestamp: the same inputs make the same bytes
  const mtime = process.env.SOURCE_DATE_EPOCH ?? lastCommitTime() ?? String(Math.floor(Date.now() / 1000));
  const tarFile = join(work, `${name}.tar`);
  // modes too, whatever the checkout's umask was: nothing writable but by its owner (executables 0755, the rest 0644)
  run("tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mode=go-w", `--mtime=@${mtime}`, "-C", work, "-cf", tarFile, name]);
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `${name}.tar.gz`);
  await pipeline(createReadStream(tarFile), createGzip({ level: 9 }), createWriteStream(`${out}.tmp`));
  renameSync(`${out}.tmp`, out);
  const sha256 = createHash("sha256").update(readFileSync(out)).digest("hex");
  writeFileSync(`${out}.sha256`, `${sha256}  ${name}.tar.gz\n`);
  const mib = (statSync(out).size / 1024 / 1024).toFixed(1);
  console.log(`${out}  ${mib} MiB  sha256 ${sha256}  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}

function lastCommitTime() {
  try {
    return run("git", ["log", "-1", "--format=%ct"], top, ["ignore", "pipe", "ignore"]).trim() || undefined;
  } catch {
    return undefined;
  }
}
