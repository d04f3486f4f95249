// A local cluster for the demo, the benchmark and the integration tests: a hostmaster root and one
// real agent process per web front on 127.0.0.1, each front with its own root folder.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
  /** extra keys of this front's agent.yaml, e.g. `{ timeouts: { unresponsive: 2 } }` */
  readonly agentConfig?: Record<string, unknown>;
  /**
   * Run this front's agent as this (unprivileged) user, as production does: its root and state dir
   * are made theirs, and the folders above them searchable. Needs root; plaintext (the TLS key files
   * of a test PKI are root's).
   */
  readonly user?: { readonly uid: number; readonly gid: number };
}

export interface ClusterOptions {
  readonly baseDir: string;
  readonly fronts: readonly FrontSpec[];
  readonly hooks?: Record<string, string[]>;
  /** default: the controller's default, written out as `[files, private/files]` */
  readonly dataDirs?: readonly string[];
  /** default `<repo>/dist/agent/main.js` */
  readonly agentBin?: string;
  /** default 15000 */
  readonly listenTimeoutMs?: number;
  /** mutual TLS instead of the plaintext default (see ClusterTlsOptions) */
  readonly tls?: ClusterTlsOptions;
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
  /** the user its agent runs as, when not the test's own */
  readonly user: { readonly uid: number; readonly gid: number } | undefined;
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
    const configFile = path.join(dir, 'agent.yaml');
    const security = tls === undefined ? { insecure: true } : { tls: { ca: tls.ca, ...tls.front(spec.name) }, allowedClients: [...tls.allowedClients] };
    const listen = spec.netns === undefined ? '127.0.0.1:0' : `${spec.netns.address}:0`;
    fs.writeFileSync(configFile, YAML.stringify({ listen, root, stateDir, ...security, ...spec.agentConfig }));
    if (spec.user !== undefined) {
      for (const d of [baseDir, dir]) fs.chmodSync(d, 0o755);
      for (const d of [root, stateDir]) fs.chownSync(d, spec.user.uid, spec.user.gid);
    }
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
      user: spec.user,
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
  const command = [process.execPath, agentBin, '--config', f.configFile];
  const [file, ...args] = f.netns === undefined ? command : ['ip', 'netns', 'exec', f.netns, ...command];
  const child: AgentProcess = execa(file as string, args, {
    buffer: false,
    reject: false,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    // The listening line is logged at info; a QM_LOG_LEVEL=warn inherited from a test would hide it.
    env: { QM_LOG_LEVEL: process.env.QM_AGENT_LOG_LEVEL ?? 'info', ...f.env },
    ...(f.user !== undefined ? { uid: f.user.uid, gid: f.user.gid } : {}),
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
  /** default `<repo>/dist/controller/main.js` */
  readonly controllerBin?: string;
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

/** Runs `node dist/controller/main.js <args...> --config <configFile>`; never throws on a non-zero exit. */
export async function runController(configFile: string, args: readonly string[], opts: RunControllerOptions = {}): Promise<ControllerRun> {
  const bin = opts.controllerBin ?? path.join(repoRoot(), 'dist', 'controller', 'main.js');
  if (!fs.existsSync(bin)) throw new Error(`controller not built: ${bin} is missing (run npm run build)`);
  const started = performance.now();
  // `--config` goes before a `--` (after it, everything is an argument)
  const end = args.indexOf('--');
  const withConfig = end < 0 ? [...args, '--config', configFile] : [...args.slice(0, end), '--config', configFile, ...args.slice(end)];
  const result = await execa(process.execPath, [bin, ...withConfig], {
    reject: false,
    stdin: 'ignore',
    stdout: opts.inherit === true ? 'inherit' : 'pipe',
    stderr: opts.inherit === true ? 'inherit' : 'pipe',
    env: { QM_LOG_LEVEL: 'warn', ...opts.env },
    timeout: opts.timeoutMs ?? 120_000,
    ...(opts.signal !== undefined ? { cancelSignal: opts.signal } : {}),
  });
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
