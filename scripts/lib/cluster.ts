// A local cluster for the demo, the benchmark and the integration tests: a hostmaster root and one
// real agent process per web front on 127.0.0.1, each front with its own root folder.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { execa, type ResultPromise } from 'execa';
import YAML from 'yaml';

export const RSYNC_MISSING = 'rsync is not installed: apt-get install -y rsync';

/** Throws `RSYNC_MISSING` when no executable `rsync` is on PATH. Returns its path. */
export function checkRsync(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, 'rsync');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  throw new Error(RSYNC_MISSING);
}

/** The repository root: the nearest folder above this file with quick-migrate's package.json (works from src and dist). */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      const { name } = JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown };
      if (name === 'quick-migrate') return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`quick-migrate repository root not found above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/**
 * For the demo and the bench: SIGINT/SIGTERM abort the returned signal, so that the caller's cleanup
 * (stopping agents, removing `baseDir`) runs; a second signal exits at once.
 */
export function abortOnSignals(baseDir: string): AbortController {
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (abort.signal.aborted) process.exit(130);
    console.error(`\n${signal}: stopping agents and removing ${baseDir}`);
    abort.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return abort;
}

/** The unprivileged user test agents run as when the tests run as root (made once with useradd). */
export const TEST_AGENT_USER = 'qm-agent';

/** The user one front's agent runs as: the cluster's AgentUser, or one of its own (FrontSpec.user). */
export type FrontUser = { readonly name?: string; readonly uid: number; readonly gid: number };

/** A user the agents run as: an agent must not run as root (it refuses to, without allowRoot). */
export interface AgentUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

function run(file: string, args: readonly string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/**
 * The user agents run as by default: none to switch to when this process is not root (the agents run
 * as this user, already unprivileged); else TEST_AGENT_USER, made if it does not exist.
 */
export function defaultAgentUser(): AgentUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    run('id', ['-u', TEST_AGENT_USER]);
  } catch {
    try {
      run('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', TEST_AGENT_USER]);
    } catch (err) {
      // made meanwhile by a parallel test worker
      if (!/already exists/.test(String((err as { stderr?: unknown }).stderr))) throw err;
    }
  }
  return { name: TEST_AGENT_USER, uid: Number(run('id', ['-u', TEST_AGENT_USER])), gid: Number(run('id', ['-g', TEST_AGENT_USER])) };
}

/**
 * For an agent process a test starts itself: the process options that run it as the default agent
 * user, after giving it `dirs` (its root, state dir…). Empty when no user is switched.
 */
export function asAgentUser(...dirs: string[]): { uid?: number; gid?: number } {
  const user = defaultAgentUser();
  if (user === undefined) return {};
  for (const dir of dirs) {
    fs.chmodSync(path.dirname(dir), 0o755);
    run('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
  }
  return { uid: user.uid, gid: user.gid };
}

/**
 * Runs `quick-migrate-agent <args…> --config <front's config>` (e.g. `parked restore <id>`) as the
 * front's agent user, as an operator would with `sudo -u aegir`; never throws on a non-zero exit.
 */
export async function runAgentCommand(f: ClusterFront, args: readonly string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const bin = path.join(repoRoot(), 'dist', 'agent', 'main.js');
  const r = await execa(process.execPath, [bin, ...args, '--config', f.configFile], {
    reject: false,
    stdin: 'ignore',
    timeout: 30_000,
    ...(f.user !== undefined ? { uid: f.user.uid, gid: f.user.gid } : {}),
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Hooks that run scripts/fake-drush.mjs with the arguments a real drush would get. */
export function fakeDrushHooks(): Record<string, string[]> {
  const drush = [process.execPath, path.join(repoRoot(), 'scripts', 'fake-drush.mjs')];
  return {
    maintenanceOn: [...drush, '@{site}', 'vset', 'maintenance_mode', '1'],
    dbDump: [...drush, '@{site}', 'sql-dump', '--result-file={dump}'],
    deploy: [...drush, '@{newSite}', 'provision-verify'],
    updatedb: [...drush, '@{newSite}', 'updatedb', '-y'],
    maintenanceOff: [...drush, '@{newSite}', 'vset', 'maintenance_mode', '0'],
    dbRestore: [...drush, '@{site}', 'sql-query', '--file={dump}'],
  };
}

export interface FrontSpec {
  readonly name: string;
  /** the hostmaster is this web front: the agent serves the hostmaster's root */
  readonly local?: boolean;
  /** extra environment of this front's agent, e.g. `QM_AGENT_FAULT` */
  readonly env?: Record<string, string>;
  /**
   * Run this front's agent inside a network namespace (made by the caller, e.g. with netns.ts),
   * listening on `address` there: a front on a link the test can take down. Needs root, and TLS
   * (plaintext is only allowed on loopback).
   */
  readonly netns?: { readonly name: string; readonly address: string };
  /** more keys of this front's agent config (e.g. `keepFinished`, `timeouts: { unresponsive: 2 }`, or `dataDirs` other than the cluster's) */
  readonly agentConfig?: Record<string, unknown>;
  /**
   * Run this front's agent as this user instead of the cluster's agentUser (e.g. nobody, a user that
   * owns nothing else): its root and state dir are made theirs, and the folders above them searchable.
   * Needs root.
   */
  readonly user?: { readonly uid: number; readonly gid: number };
}

export interface ClusterOptions {
  readonly baseDir: string;
  readonly fronts: readonly FrontSpec[];
  readonly hooks?: Record<string, string[]>;
  /** the controller's and every agent's; default: theirs, written out as `[files, private/files]` for the controller */
  readonly dataDirs?: readonly string[];
  /** default `<repo>/dist/agent/main.js` (run with this Node); a file not ending in .js (bin/quick-migrate-agent) is run itself */
  readonly agentBin?: string;
  /** default 15000 */
  readonly listenTimeoutMs?: number;
  /** mutual TLS instead of the plaintext default (see ClusterTlsOptions) */
  readonly tls?: ClusterTlsOptions;
  /**
   * who the agents run as: default defaultAgentUser() (an unprivileged user when the tests run as
   * root); 'root' runs them as root with allowRoot: true (for what only root can try)
   */
  readonly agentUser?: AgentUser | 'root';
}

/**
 * A folder made by `deploy/tls/make-certs.sh`: `ca.pem`, `controller.pem`/`controller-key.pem`, and
 * `<front>.pem`/`<front>-key.pem` for every front of the cluster. Each agent then serves its front's
 * certificate and lets in `allowedClients`; the controller uses `controller.pem`.
 */
export interface ClusterTlsOptions {
  readonly dir: string;
  /** the agents' allowedClients; default: the CN of `controller.pem` */
  readonly allowedClients?: readonly string[];
}

/**
 * Makes the PKI of a cluster in `dir` with deploy/tls/make-certs.sh, as an operator does: a CA, the
 * controller's client certificate (CN `controller`) and a server certificate per front (`name` or
 * `name=address`). A failure is one line naming the script and its last word on why.
 */
export function makeClusterPki(dir: string, controller: string, fronts: readonly string[]): ClusterTlsOptions {
  try {
    execFileSync('bash', [path.join(repoRoot(), 'deploy', 'tls', 'make-certs.sh'), dir, controller, ...fronts], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const why = String((err as { stderr?: Buffer }).stderr ?? '').trim().split('\n').at(-1) || (err as Error).message;
    throw new Error(`cannot make the TLS certificates with deploy/tls/make-certs.sh: ${why}`);
  }
  return { dir };
}

/** The TLS files a cluster runs with (absolute paths). */
export interface ClusterTls {
  readonly dir: string;
  readonly ca: string;
  /** the controller's certificate and key */
  readonly cert: string;
  readonly key: string;
  /** the CN of the controller's certificate */
  readonly controllerName: string;
  readonly allowedClients: readonly string[];
  /** a front's certificate and key */
  front(name: string): { cert: string; key: string };
}

/** The subject CN of a PEM certificate file. */
export function certificateCommonName(file: string): string {
  const subject = new X509Certificate(fs.readFileSync(file)).subject;
  const cn = /^CN=(.*)$/m.exec(subject)?.[1];
  if (cn === undefined) throw new Error(`${file}: no CN in the subject ${JSON.stringify(subject)}`);
  return cn;
}

function resolveTls(opts: ClusterTlsOptions, fronts: readonly FrontSpec[]): ClusterTls {
  const dir = path.resolve(opts.dir);
  const file = (name: string): string => path.join(dir, name);
  const front = (name: string): { cert: string; key: string } => ({ cert: file(`${name}.pem`), key: file(`${name}-key.pem`) });
  const needed = [file('ca.pem'), file('controller.pem'), file('controller-key.pem'), ...fronts.flatMap((f) => Object.values(front(f.name)))];
  const missing = needed.filter((f) => !fs.existsSync(f));
  if (missing.length > 0) throw new Error(`tls: missing ${missing.join(', ')} (make them with deploy/tls/make-certs.sh)`);
  const controllerName = certificateCommonName(file('controller.pem'));
  return {
    dir,
    ca: file('ca.pem'),
    cert: file('controller.pem'),
    key: file('controller-key.pem'),
    controllerName,
    allowedClients: [...(opts.allowedClients ?? [controllerName])],
    front,
  };
}

export type AgentProcess = ResultPromise<{ buffer: false; reject: false; stdin: 'ignore'; stdout: 'pipe'; stderr: 'pipe' }>;

export interface ClusterFront {
  readonly name: string;
  readonly local: boolean;
  readonly root: string;
  readonly stateDir: string;
  /** `127.0.0.1:PORT` of the running agent (the last one, when stopped) */
  address: string;
  readonly configFile: string;
  /** stdout and stderr of every run of this front's agent */
  readonly logFile: string;
  /** null while stopped */
  process: AgentProcess | null;
  /** extra environment of this front's agent (FrontSpec.env, or the last one given to startAgent) */
  env: Record<string, string>;
  /** the network namespace its agent runs in, if any */
  readonly netns: string | undefined;
  /** the user its agent runs as (undefined: this process's) */
  readonly user: FrontUser | undefined;
}

export interface Cluster {
  readonly baseDir: string;
  readonly masterRoot: string;
  readonly masterState: string;
  readonly controllerConfig: string;
  readonly fronts: readonly ClusterFront[];
  /** the TLS files when started with `tls`; undefined for a plaintext cluster */
  readonly tls: ClusterTls | undefined;
  front(name: string): ClusterFront;
  frontRoot(name: string): string;
  /** every distinct root with a name for messages: `hostmaster` first, then each non-local front */
  roots(): Array<{ name: string; root: string }>;
  /** SIGTERM (SIGKILL after 5 s) and wait for the exit. No-op when stopped. */
  stopAgent(name: string): Promise<void>;
  /**
   * Starts a stopped agent with the same config; its port may change, so controller.yaml is rewritten.
   * `env` replaces the front's extra environment from now on (say `{}` to drop a fault).
   */
  startAgent(name: string, opts?: { env?: Record<string, string> }): Promise<void>;
  /** Rewrites controller.yaml, e.g. with other hooks or extra keys for a test. */
  writeControllerConfig(patch?: { hooks?: Record<string, string[]> | undefined; dataDirs?: readonly string[]; extra?: Record<string, unknown> }): void;
  /** Stops every agent and waits for them to exit. */
  stop(): Promise<void>;
  /** the user the agents run as; undefined when they run as this process's user */
  readonly agentUser: AgentUser | undefined;
  /**
   * Gives every front's root (and everything in it) to the agents' user, as on a real front where
   * the aegir user owns the platforms: call it after making trees in the roots as root.
   */
  handOver(): void;
}

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const baseDir = path.resolve(opts.baseDir);
  const agentBin = opts.agentBin ?? path.join(repoRoot(), 'dist', 'agent', 'main.js');
  if (!fs.existsSync(agentBin)) throw new Error(`agent not built: ${agentBin} is missing (run npm run build)`);
  const listenTimeoutMs = opts.listenTimeoutMs ?? 15_000;
  const names = new Set<string>(['hostmaster']);
  for (const f of opts.fronts) {
    if (!/^[a-z0-9][a-z0-9._-]*$/i.test(f.name) || names.has(f.name)) throw new Error(`bad or duplicate front name: ${f.name}`);
    names.add(f.name);
  }
  const tls = opts.tls === undefined ? undefined : resolveTls(opts.tls, opts.fronts);
  const asRoot = opts.agentUser === 'root';
  const user = opts.agentUser === 'root' ? undefined : (opts.agentUser ?? defaultAgentUser());
  // the agents' user must reach its root, state dir and config through the base dir
  if (user !== undefined || opts.fronts.some((f) => f.user !== undefined)) fs.chmodSync(baseDir, 0o755);

  const masterRoot = path.join(baseDir, 'hostmaster', 'root');
  const masterState = path.join(baseDir, 'hostmaster', 'state');
  fs.mkdirSync(masterRoot, { recursive: true });
  fs.mkdirSync(masterState, { recursive: true });
  const controllerConfig = path.join(baseDir, 'hostmaster', 'controller.yaml');

  const fronts: ClusterFront[] = opts.fronts.map((spec) => {
    const dir = path.join(baseDir, spec.name);
    const local = spec.local === true;
    const root = local ? masterRoot : path.join(dir, 'root');
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(root, { recursive: true });
    fs.mkdirSync(stateDir, { recursive: true });
    const frontUser: FrontUser | undefined = spec.user ?? user;
    const ownFront = (p: string, recursive = false): void => {
      if (frontUser !== undefined) run('chown', [...(recursive ? ['-R'] : []), `${frontUser.uid}:${frontUser.gid}`, p]);
    };
    fs.chmodSync(dir, 0o755);
    ownFront(root, true);
    ownFront(stateDir, true);
    const configFile = path.join(dir, 'agent.yaml');
    const security = tls === undefined ? { insecure: true } : { tls: { ca: tls.ca, ...tls.front(spec.name) }, allowedClients: [...tls.allowedClients] };
    if (tls !== undefined && frontUser !== undefined) {
      // the front's key is readable by its agent only, as make-certs.sh's install instructions say
      fs.chmodSync(path.dirname(tls.front(spec.name).key), 0o755);
      ownFront(tls.front(spec.name).key);
      ownFront(tls.front(spec.name).cert);
    }
    const listen = spec.netns === undefined ? '127.0.0.1:0' : `${spec.netns.address}:0`;
    const policy = opts.dataDirs === undefined ? {} : { dataDirs: [...opts.dataDirs] };
    // a front's own user replaces the cluster's; allowRoot only for an agent that does run as root
    const allowRoot = asRoot && spec.user === undefined;
    fs.writeFileSync(configFile, YAML.stringify({ listen, root, stateDir, ...security, ...policy, ...(allowRoot ? { allowRoot: true } : {}), ...spec.agentConfig }));
    return {
      name: spec.name,
      local,
      root,
      stateDir,
      address: '',
      configFile,
      logFile: path.join(dir, 'agent.log'),
      process: null,
      env: { ...spec.env },
      netns: spec.netns?.name,
      user: frontUser,
    };
  });

  let hooks = opts.hooks;
  let dataDirs: readonly string[] = opts.dataDirs ?? ['files', 'private/files'];
  let extra: Record<string, unknown> = {};
  const writeControllerConfig: Cluster['writeControllerConfig'] = (patch = {}) => {
    if ('hooks' in patch) hooks = patch.hooks;
    if (patch.dataDirs !== undefined) dataDirs = patch.dataDirs;
    if (patch.extra !== undefined) extra = patch.extra;
    const doc: Record<string, unknown> = {
      root: masterRoot,
      stateDir: masterState,
      dataDirs: [...dataDirs],
      ...(tls === undefined ? { insecure: true } : { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } }),
      fronts: fronts.map((f) => (f.local ? { name: f.name, address: f.address, local: true } : { name: f.name, address: f.address })),
      ...(hooks !== undefined ? { hooks } : {}),
      ...extra,
    };
    const tmp = `${controllerConfig}.tmp`;
    fs.writeFileSync(tmp, YAML.stringify(doc));
    fs.renameSync(tmp, controllerConfig);
  };

  const front = (name: string): ClusterFront => {
    const f = fronts.find((x) => x.name === name);
    if (f === undefined) throw new Error(`no front named ${name}`);
    return f;
  };

  const stopAgent = async (name: string): Promise<void> => {
    const f = front(name);
    const child = f.process;
    if (child === null) return;
    f.process = null;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); // execa sends SIGKILL after 5 s
    await child;
    await logClosed.get(child);
  };

  const stop = async (): Promise<void> => {
    await Promise.all(fronts.map((f) => stopAgent(f.name)));
  };

  const startAgent = async (name: string, startOpts: { env?: Record<string, string> } = {}): Promise<void> => {
    const f = front(name);
    if (f.process !== null) throw new Error(`agent ${name} is already running`);
    if (startOpts.env !== undefined) f.env = { ...startOpts.env };
    const { child, address } = await spawnAgent(f, agentBin, listenTimeoutMs);
    f.process = child;
    f.address = address;
    writeControllerConfig();
  };

  const started = await Promise.allSettled(
    fronts.map(async (f) => {
      const { child, address } = await spawnAgent(f, agentBin, listenTimeoutMs);
      f.process = child;
      f.address = address;
    }),
  );
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) {
    await stop();
    throw failed.reason;
  }
  writeControllerConfig();

  return {
    baseDir,
    masterRoot,
    masterState,
    controllerConfig,
    fronts,
    tls,
    front,
    frontRoot: (name) => front(name).root,
    agentUser: user,
    handOver: () => {
      for (const f of fronts) if (f.user !== undefined) run('chown', ['-R', `${f.user.uid}:${f.user.gid}`, f.root]);
    },
    roots: () => [{ name: 'hostmaster', root: masterRoot }, ...fronts.filter((f) => !f.local).map((f) => ({ name: f.name, root: f.root }))],
    stopAgent,
    startAgent,
    writeControllerConfig,
    stop,
  };
}

/** Resolves once an agent has exited and its log file is flushed and closed. */
const logClosed = new WeakMap<AgentProcess, Promise<void>>();

/** Starts one agent and resolves once it logged `agent listening`; its output goes on into the front's log file. */
function spawnAgent(f: ClusterFront, agentBin: string, timeoutMs: number): Promise<{ child: AgentProcess; address: string }> {
  const log = fs.createWriteStream(f.logFile, { flags: 'a' });
  // A test may remove the base dir right after stop(); a lost log line must not crash it.
  log.on('error', () => undefined);
  const command = [...nodeCommand(agentBin), '--config', f.configFile];
  // in a namespace: `ip netns exec` needs root, so the user is switched after it (setpriv)
  const asUser = f.user === undefined ? [] : ['setpriv', `--reuid=${f.user.uid}`, `--regid=${f.user.gid}`, '--clear-groups'];
  const [file, ...args] = f.netns === undefined ? command : ['ip', 'netns', 'exec', f.netns, ...asUser, ...command];
  const child: AgentProcess = execa(file as string, args, {
    ...(f.user !== undefined && f.netns === undefined ? { uid: f.user.uid, gid: f.user.gid } : {}),
    buffer: false,
    reject: false,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    // The listening line is logged at info; a QM_LOG_LEVEL=warn inherited from a test would hide it.
    env: { QM_LOG_LEVEL: process.env.QM_AGENT_LOG_LEVEL ?? 'info', ...f.env },
  });
  child.stdout.on('data', (chunk: Buffer) => log.write(chunk));
  child.stderr.on('data', (chunk: Buffer) => log.write(chunk));
  const closed = child.then(
    () =>
      new Promise<void>((resolve) => {
        log.once('close', resolve);
        log.end();
      }),
  );
  logClosed.set(child, closed);

  return new Promise((resolve, reject) => {
    let output = '';
    let pending = '';
    let settled = false;
    const done = (): void => {
      settled = true;
      clearTimeout(timer);
      child.stdout.off('data', onStdout);
      child.stderr.off('data', onStderr);
      child.off('close', onClose);
    };
    const fail = (why: string): void => {
      done();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      const tail = output.length > 4000 ? `...${output.slice(-4000)}` : output;
      reject(new Error(`agent ${f.name} (${f.configFile}) ${why}; its output:\n${tail || '(none)'}`));
    };
    const onStdout = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      output += text;
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const address = listeningAddress(line);
        if (address !== null && !settled) {
          done();
          resolve({ child, address });
          return;
        }
      }
    };
    const onStderr = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
    };
    const onClose = (): void => {
      if (!settled) fail(`exited (code ${String(child.exitCode)}, signal ${String(child.signalCode)}) before listening`);
    };
    const timer = setTimeout(() => fail(`did not log "agent listening" within ${timeoutMs / 1000} s`), timeoutMs);
    child.stdout.on('data', onStdout);
    child.stderr.on('data', onStderr);
    child.on('close', onClose);
  });
}

function listeningAddress(line: string): string | null {
  if (!line.includes('agent listening')) return null;
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof rec !== 'object' || rec === null) return null;
  const { msg, address, port } = rec as { msg?: unknown; address?: unknown; port?: unknown };
  if (msg !== 'agent listening') return null;
  if (typeof address === 'string' && address !== '') return address;
  if (typeof port === 'number') return `127.0.0.1:${port}`;
  return null;
}

export interface RunControllerOptions {
  /** added to the environment (after `QM_LOG_LEVEL=warn`, so it can be overridden) */
  readonly env?: Record<string, string>;
  /** stdout and stderr go to this process's (the demo); `stdout`/`stderr` are then empty */
  readonly inherit?: boolean;
  /** default 120000; the controller is killed after it */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** default `<repo>/dist/controller/main.js` (run with this Node); a file not ending in .js (bin/quick-migrate) is run itself */
  readonly controllerBin?: string;
  /** called once the controller is started, e.g. to signal it or to watch its output as it comes */
  readonly onSpawn?: (controller: ChildProcess) => void;
}

export type ControllerEvent = Record<string, unknown> & { readonly event?: string };

export interface ControllerRun {
  /** -1 when killed by a signal or the timeout */
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout's JSON lines when `--json` is among the arguments (lines that are not JSON objects are skipped) */
  readonly events: ControllerEvent[];
  readonly durationMs: number;
  readonly timedOut: boolean;
}

/** A `.js` entry point is run with this Node; anything else (the bin/ wrappers) is run itself. */
function nodeCommand(bin: string): string[] {
  return bin.endsWith('.js') ? [process.execPath, bin] : [bin];
}

/** Runs `node dist/controller/main.js <args...> --config <configFile>`; never throws on a non-zero exit. */
export async function runController(configFile: string, args: readonly string[], opts: RunControllerOptions = {}): Promise<ControllerRun> {
  const bin = opts.controllerBin ?? path.join(repoRoot(), 'dist', 'controller', 'main.js');
  if (!fs.existsSync(bin)) throw new Error(`controller not built: ${bin} is missing (run npm run build)`);
  const started = performance.now();
  // `--config` goes before a `--` (after it, everything is an argument)
  const end = args.indexOf('--');
  const withConfig = end < 0 ? [...args, '--config', configFile] : [...args.slice(0, end), '--config', configFile, ...args.slice(end)];
  const [file, ...pre] = nodeCommand(bin);
  const subprocess = execa(file as string, [...pre, ...withConfig], {
    reject: false,
    stdin: 'ignore',
    stdout: opts.inherit === true ? 'inherit' : 'pipe',
    stderr: opts.inherit === true ? 'inherit' : 'pipe',
    env: { QM_LOG_LEVEL: 'warn', ...opts.env },
    timeout: opts.timeoutMs ?? 120_000,
    ...(opts.signal !== undefined ? { cancelSignal: opts.signal } : {}),
  });
  opts.onSpawn?.(subprocess);
  const result = await subprocess;
  const durationMs = performance.now() - started;
  const stdout = typeof result.stdout === 'string' ? result.stdout : '';
  const stderr = typeof result.stderr === 'string' ? result.stderr : '';
  return {
    exitCode: result.exitCode ?? -1,
    stdout,
    stderr,
    events: args.includes('--json') ? parseJsonLines(stdout) : [],
    durationMs,
    timedOut: result.timedOut,
  };
}

function parseJsonLines(text: string): ControllerEvent[] {
  const events: ControllerEvent[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) events.push(value as ControllerEvent);
    } catch {
      // not an event line
    }
  }
  return events;
}
