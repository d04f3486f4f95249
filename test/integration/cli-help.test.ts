// Help that teaches, run through the built bin/ wrappers: every command's --help ends with examples, and
// every example parses with the real CLI (run with a config that does not exist, it gets as far as reading
// the config: past every usage check); a usage error names what was wrong, then the
// usage line of the command meant, exit 2 (health: UNKNOWN, exit 3, on stdout).
import path from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

const BINS = { "quick-migrate": path.join(repoRoot(), "bin", "quick-migrate"), "quick-migrate-agent": path.join(repoRoot(), "bin", "quick-migrate-agent") } as const;
type Bin = keyof typeof BINS;
const NO_CONFIG = "/nonexistent/qm-cli-help.yaml";

async function run(bin: Bin, args: readonly string[], env: Record<string, string> = {}): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(BINS[bin], args, { reject: false, stdin: "ignore", timeout: 30_000, env: { QM_LOG_LEVEL: "warn", ...env } });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** The commands below each program, as its help lists them: every one must be in the tables below. */
const COMMANDS: Record<Bin, string[][]> = {
  "quick-migrate": [[], ["migrate"], ["status"], ["agents"], ["resume"], ["rollback"], ["health"]],
  "quick-migrate-agent": [[], ["parked"], ["parked", "list"], ["parked", "restore"], ["health"]],
};

/** The commands a help's `Commands:` section lists (not commander's own `help`). */
function listedCommands(help: string): string[] {
  const section = help.split(/\n\n/).find((p) => p.startsWith("Commands:")) ?? "";
  return [...section.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1] as string).filter((c) => c !== "help");
}

interface Example {
  readonly does: string;
  readonly line: string;
}

/** The Examples section that ends a help: `  # what it does` then `  $ the command`, nothing after. */
function examplesOf(help: string): Example[] {
  const at = help.lastIndexOf("\nExamples:\n");
  expect(at, help).toBeGreaterThan(0);
  const lines = help.slice(at + "\nExamples:\n".length).trimEnd().split("\n");
  expect(lines.length % 2, lines.join("\n")).toBe(0);
  const examples: Example[] = [];
  for (let i = 0; i < lines.length; i += 2) {
    const does = /^ {2}# (\S.*)$/.exec(lines[i] as string);
    const line = /^ {2}\$ (\S.*)$/.exec(lines[i + 1] as string);
    expect(does, lines[i]).not.toBeNull();
    expect(line, lines[i + 1]).not.toBeNull();
    examples.push({ does: (does as RegExpExecArray)[1] as string, line: (line as RegExpExecArray)[1] as string });
  }
  return examples;
}

/** An example as argv: the program and its arguments (an operator's `sudo -u aegir` in front is dropped). */
function argvOf(line: string): { bin: Bin; args: string[] } {
  expect(line, "an example is plain words: no quoting, no shell").toMatch(/^[\w ./:@=-]+$/);
  const words = line.replace(/^sudo -u aegir /, "").split(/ +/);
  const [bin, ...args] = words;
  expect(Object.keys(BINS)).toContain(bin);
  return { bin: bin as Bin, args };
}

for (const bin of Object.keys(BINS) as Bin[]) {
  describe(`${bin} --help`, () => {
    it("lists exactly the commands tested here", async () => {
      const top = await run(bin, ["--help"]);
      expect(listedCommands(top.stdout).sort()).toEqual(COMMANDS[bin].filter((c) => c.length === 1).map((c) => c[0]).sort());
      for (const parent of COMMANDS[bin].filter((c) => c.length === 1)) {
        const sub = await run(bin, [...parent, "--help"]);
        const below = COMMANDS[bin].filter((c) => c.length === 2 && c[0] === parent[0]).map((c) => c[1]);
        expect(listedCommands(sub.stdout).sort(), `${bin} ${parent.join(" ")}`).toEqual(below.sort());
      }
    });

    it.each(COMMANDS[bin].map((c) => [c.join(" ") || "(the program)", c] as const))("%s: ends with two or three examples, each of which parses", async (_name, cmd) => {
      const help = await run(bin, [...cmd, "--help"]);
      expect(help.exitCode, help.stderr).toBe(0);
      const examples = examplesOf(help.stdout);
      expect(examples.length).toBeGreaterThanOrEqual(2);
      expect(examples.length).toBeLessThanOrEqual(3);
      for (const e of examples) await expectParses(e.line);
    });
  });
}

/**
 * The example's command line passes every usage check: run with a config that does not exist (a
 * `--config` given last wins over the example's own), it fails on reading that config, not on usage.
 */
async function expectParses(line: string): Promise<void> {
  const { bin, args } = argvOf(line);
  const r = await run(bin, [...args, "--config", NO_CONFIG]);
  const out = r.stdout + r.stderr;
  expect(out, line).toContain(`${NO_CONFIG}: cannot read config: ENOENT`);
  expect(out, line).not.toContain("usage:");
}

describe("the parse check catches an example that would not run", () => {
  it.each([
    ["a misspelt option", ["migrate", "shop.example.com", "--to", "drupal-7.99", "--dryrun"]],
    ["a missing option", ["migrate", "shop.example.com"]],
    ["the command's own usage rule", ["migrate", "--all", "--to", "drupal-7.99"]],
    ["an invalid id", ["resume", "../etc"]],
  ])("%s", async (_what, args) => {
    await expect(expectParses(["quick-migrate", ...args].join(" "))).rejects.toThrow();
  });
});

const usage = (bin: Bin, form: string, cmd: string) => `usage: ${bin} ${cmd}${cmd ? " " : ""}${form}  (${bin}${cmd ? ` ${cmd}` : ""} --help for examples)`;

describe("a usage error names what was wrong and the form that is right, exit 2, before any config is read", () => {
  const cases: Array<[string, Bin, string[], string, string]> = [
    ["unknown command", "quick-migrate", ["frobnicate"], "quick-migrate: unknown command 'frobnicate'", usage("quick-migrate", "[options] [command]", "")],
    ["a misspelt command", "quick-migrate", ["migarte"], "quick-migrate: unknown command 'migarte' (did you mean migrate?)", usage("quick-migrate", "[options] [command]", "")],
    ["unknown option", "quick-migrate", ["migrate", "shop.example.com", "--to", "d7", "--verbose"], "quick-migrate migrate: unknown option '--verbose'", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["a misspelt option", "quick-migrate", ["migrate", "shop.example.com", "--to", "d7", "--fron", "d6"], "quick-migrate migrate: unknown option '--fron' (did you mean --from?)", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["resume without its id", "quick-migrate", ["resume"], "quick-migrate resume: missing required argument 'id'", usage("quick-migrate", "[options] <id>", "resume")],
    ["rollback with two ids", "quick-migrate", ["rollback", "a", "b"], "quick-migrate rollback: too many arguments for 'rollback'. Expected 1 argument but got 2.", usage("quick-migrate", "[options] <id>", "rollback")],
    ["--concurrency 0", "quick-migrate", ["migrate", "--all", "--from", "d6", "--to", "d7", "--concurrency", "0"], "quick-migrate migrate: option '--concurrency <n>' argument '0' is invalid. must be a whole number from 1", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["migrate without --to", "quick-migrate", ["migrate", "shop.example.com"], "quick-migrate migrate: required option '--to <platform>' not specified", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["neither a uri nor --all", "quick-migrate", ["migrate", "--to", "d7"], "quick-migrate migrate: missing required argument 'uri' (or --all for every site of --from)", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["--all without --from", "quick-migrate", ["migrate", "--all", "--to", "d7"], "quick-migrate migrate: --all needs --from <platform>: the platform whose sites are migrated", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["a uri and --all", "quick-migrate", ["migrate", "shop.example.com", "--all", "--from", "d6", "--to", "d7"], "quick-migrate migrate: --all and a site (shop.example.com) are mutually exclusive: give one or the other", usage("quick-migrate", "[options] [uri]", "migrate")],
    ["an invalid site name", "quick-migrate", ["migrate", "shop_example.com", "--to", "d7"], 'quick-migrate migrate: invalid site "shop_example.com": a site name must be a hostname (letters, digits, inner hyphens, dot-separated)', usage("quick-migrate", "[options] [uri]", "migrate")],
    ["an invalid new site name", "quick-migrate", ["migrate", "shop.example.com", "--to", "d7", "--new-uri", "-shop"], 'quick-migrate migrate: invalid new site "-shop": a site name must be a hostname (letters, digits, inner hyphens, dot-separated)', usage("quick-migrate", "[options] [uri]", "migrate")],
    ["an invalid migration id", "quick-migrate", ["rollback", "../../etc"], 'quick-migrate rollback: invalid migration id "../../etc": an id as `quick-migrate status` lists it, e.g. 20261126T101500Z-3f9a0c', usage("quick-migrate", "[options] <id>", "rollback")],
    ["status of an invalid id", "quick-migrate", ["status", "a/b"], 'quick-migrate status: invalid migration id "a/b": an id as `quick-migrate status` lists it, e.g. 20261126T101500Z-3f9a0c', usage("quick-migrate", "[options] [id]", "status")],
    ["agent: unknown command", "quick-migrate-agent", ["frobnicate"], "quick-migrate-agent: unknown command 'frobnicate'", usage("quick-migrate-agent", "[options] [command]", "")],
    ["agent: unknown option", "quick-migrate-agent", ["--frob"], "quick-migrate-agent: unknown option '--frob'", usage("quick-migrate-agent", "[options] [command]", "")],
    ["agent: a misspelt parked command", "quick-migrate-agent", ["parked", "lst"], "quick-migrate-agent parked: unknown command 'lst' (did you mean list?)", usage("quick-migrate-agent", "[options] [command]", "parked")],
    ["agent: parked list, unknown option", "quick-migrate-agent", ["parked", "list", "--frob"], "quick-migrate-agent parked list: unknown option '--frob'", usage("quick-migrate-agent", "[options]", "parked list")],
    ["agent: restore without its id", "quick-migrate-agent", ["parked", "restore"], "quick-migrate-agent parked restore: missing required argument 'migration-id'", usage("quick-migrate-agent", "[options] <migration-id>", "parked restore")],
    ["agent: restore of an invalid id", "quick-migrate-agent", ["parked", "restore", "../x"], 'quick-migrate-agent parked restore: invalid migration id "../x": an id as `quick-migrate-agent parked list` shows it, e.g. 20261126T101500Z-3f9a0c', usage("quick-migrate-agent", "[options] <migration-id>", "parked restore")],
  ];
  it.each(cases)("%s", async (_what, bin, args, first, second) => {
    const r = await run(bin, [...args, "--config", NO_CONFIG]);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stdout).toBe("");
    // a config error would name the file: the usage is checked first
    expect(r.stderr.trimEnd().split("\n")).toEqual([first, second]);
  });

  it("with --json: the same on stderr, and a result event on stdout, as every refusal ends", async () => {
    for (const args of [["resume", "--json"], ["migrate", "--all", "--to", "d7", "--json"], ["migrate", "x.example.com", "--to", "d7", "--json", "--frob"]]) {
      const r = await run("quick-migrate", [...args, "--config", NO_CONFIG]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr.trimEnd().split("\n")[1]).toMatch(/^usage: quick-migrate (resume|migrate) /);
      const events = r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events).toEqual([expect.objectContaining({ event: "result", migrationId: null, outcome: "refused", exitCode: 2, code: "USAGE" })]);
      expect(String(events[0]?.message)).not.toContain("\n");
    }
  });

  it("health: UNKNOWN, exit 3, on stdout (the Monitoring Plugins guidelines), then the usage line; --json: one object", async () => {
    for (const [bin, service] of [["quick-migrate", "QUICK-MIGRATE"], ["quick-migrate-agent", "QUICK-MIGRATE-AGENT"]] as const) {
      const r = await run(bin, ["health", "--warm-ms", "300", "--config", NO_CONFIG]);
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toBe("");
      expect(r.stdout.trimEnd().split("\n")).toEqual([`${service} UNKNOWN - unknown option '--warm-ms' (did you mean --warn-ms?)`, usage(bin, "[options]", "health")]);
      const json = await run(bin, ["health", "--crit-ms", "0", "--json", "--config", NO_CONFIG]);
      expect(json.exitCode).toBe(3);
      expect(JSON.parse(json.stdout)).toMatchObject({ state: "UNKNOWN", exitCode: 3, summary: `${service} UNKNOWN - option '--crit-ms <ms>' argument '0' is invalid. expected whole milliseconds, 1 or more.` });
    }
  });
});
