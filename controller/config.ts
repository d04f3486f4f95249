// The controller's configuration (/etc/quick-migrate/controller.yaml): one schema, defaults here,
// unknown keys rejected, every problem reported at once with file and key.
import * as z from "zod/mini";
import { absPath, checkTransport, hostPort, isLoopback, loadYamlConfig, logLevel, tlsFiles } from "../shared/config.js";
import { QmError } from "../shared/errors.js";
import { DEFAULT_DATA_DIRS, MAX_DATA_DIRS, checkDataDirSet } from "../shared/names.js";
import { MASTER } from "./events.js";
import { HOOK_NAMES, PLACEHOLDERS } from "./hookNames.js";

export { DEFAULT_CONTROLLER_CONFIG } from "./configFile.js";
export { MASTER };

/** a number of seconds above zero */
const seconds = () => z.number().check(z.positive());

const hookArgv = z.array(z.string()).check(z.minLength(1, "must name a command"));

const front = z.strictObject({
  name: z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, "must be a host name (letters, digits, . _ -)")),
  address: hostPort,
  local: z._default(z.boolean(), false),
});

const schema = z.strictObject({
  root: absPath,
  stateDir: absPath,
  dataDirs: z._default(z.array(z.string()).check(z.minLength(1), z.maxLength(MAX_DATA_DIRS)), [...DEFAULT_DATA_DIRS]),
  insecure: z._default(z.boolean(), false),
  tls: z.optional(tlsFiles),
  fronts: z.array(front).check(z.minLength(1, "at least one front is needed")),
  hooks: z._default(z.strictObject(Object.fromEntries(HOOK_NAMES.map((h) => [h, z.optional(hookArgv)])) as Record<(typeof HOOK_NAMES)[number], z.ZodMiniOptional<typeof hookArgv>>), {}),
  rsync: z._default(z.string(), "rsync"),
  /** deadlines of the calls to agents and of each hook, and how long a silent agent is waited for, in seconds */
  timeouts: z._default(
    z.strictObject({
      hello: z._default(seconds(), 10),
      preflight: z._default(seconds(), 60),
      apply: z._default(seconds(), 300),
      rsync: z._default(seconds(), 7200),
      unresponsive: z._default(z.number().check(z.minimum(1)), 30),
      /** a hook running longer is ended (its whole process group) and its step fails */
      hook: z._default(seconds(), 3600),
    }),
    { hello: 10, preflight: 60, apply: 300, rsync: 7200, unresponsive: 30, hook: 3600 },
  ),
  logLevel: z._default(logLevel, "warn"),
  /**
   * How much this controller does at once, over every front and every site of `migrate --all`:
   * agent calls in flight (hello, preflight, apply, inspect), and tunnelled rsync runs (each an rsync
   * and its remote shell on the hostmaster, reading the site from its disk). More wait their turn.
   */
  fanOut: z._default(
    z.strictObject({
      calls: z._default(z.int().check(z.minimum(1), z.maximum(1024)), 64),
      rsync: z._default(z.int().check(z.minimum(1), z.maximum(256)), 8),
    }),
    { calls: 64, rsync: 8 },
  ),

  /**
   * Prometheus figures of each run, written to this file for node_exporter's textfile collector (its
   * --collector.textfile.directory, a name ending in .prom); off when absent
   */
  metrics: z.optional(
    z.strictObject({ textfile: absPath.check(z.refine((p) => p.endsWith(".prom"), "must end in .prom (node_exporter's textfile collector reads only those)")) }),
  ),
});

export type ControllerConfig = Readonly<z.infer<typeof schema>>;
export type FrontConfig = Readonly<z.infer<typeof front>>;

export async function loadControllerConfig(file: string): Promise<ControllerConfig> {
  return loadYamlConfig(file, schema, (c, problem) => {
    checkTransport(c, problem);
    const names = new Set<string>();
    c.fronts.forEach((f, i) => {
      if (names.has(f.name)) problem(`fronts.${i}.name`, `front ${f.name} is listed twice`);
      if (f.name === MASTER) problem(`fronts.${i}.name`, `"${MASTER}" is reserved for the hostmaster itself; mark its front with local: true and another name`);
      names.add(f.name);
      if (c.insecure && !isLoopback(f.address)) {
        problem(`fronts.${i}.address`, `insecure (plaintext) mode is only allowed to a loopback address, not ${f.address}`);
      }
    });
    if (c.fronts.filter((f) => f.local).length > 1) problem("fronts", "at most one front can be local: true (the hostmaster itself)");
    try {
      checkDataDirSet(c.dataDirs);
    } catch (err) {
      problem("dataDirs", (err as QmError).message);
    }
    // without a dump there is nothing to restore: updatedb could not be undone, dbRestore would have no file
    for (const name of ["updatedb", "dbRestore"] as const) {
      if (c.hooks[name] && !c.hooks.dbDump) problem(`hooks.${name}`, "needs hooks.dbDump: a rollback restores the database from the dump it writes");
    }
    for (const [name, argv] of Object.entries(c.hooks)) {
      for (const arg of argv ?? []) {
        // the same pattern expandHook replaces: {name}; other braces are literal text
        for (const [, key] of arg.matchAll(/\{([A-Za-z]+)\}/g)) {
          if (!PLACEHOLDERS.includes(key as (typeof PLACEHOLDERS)[number])) {
            problem(`hooks.${name}`, `unknown placeholder {${key}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(" ")})`);
          }
        }
      }
    }
  });
}
