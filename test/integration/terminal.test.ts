// A person at a terminal (issue 14), on a real local cluster with the controller run through util-linux
// `script` on a pseudo-terminal: no JSON log line and no stack trace on the screen; the log in
// controller.log of the journal folder; the warnings that matter as one line each. With --json, or off
// a terminal, JSON events on stdout and JSON log lines on stderr, as before.
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { repoRoot, runController } from "../../scripts/lib/cluster.js";
import { eventually } from "../helpers/eventually.js";
import { type Scenario, expectUnchanged, forSite, setupScenario } from "../helpers/scenario.js";

const CONTROLLER_BIN = path.join(repoRoot(), "bin", "quick-migrate");
const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** updatedb prints 30 lines and why it failed on stderr, then exits 1: an expected failure, not a bug */
const FAILING_UPDATEDB = ["sh", "-c", "for i in $(seq 1 30); do echo \"updatedb line $i\"; done; echo 'drush: table cache_bootstrap missing' >&2; exit 1"];

let scenario: Scenario | undefined;
afterEach(async () => {
  await scenario?.cleanup();
  scenario = undefined;
});

async function setup(hooks: Record<string, string[]>, more: { moreSites?: string[]; targetPlatformOn?: string[] } = {}): Promise<Scenario> {
  scenario = await setupScenario({ fronts: [{ name: "web1" }, { name: "web2" }], hooks: { dbDump: ["true"], ...hooks }, ...more });
  return scenario;
}

/** The controller on a pseudo-terminal: what the screen shows (stdout and stderr both are the terminal). */
async function onTerminal(s: Scenario, args: string[], env: Record<string, string> = {}): Promise<{ exitCode: number; screen: string }> {
  const command = [CONTROLLER_BIN, ...args, "--config", s.cluster.controllerConfig].map(shellQuote).join(" ");
  // info: every line the logger has goes somewhere, so that "none on the screen" means something
  const run = await execa("script", ["-qfec", command, "/dev/null"], { reject: false, stdin: "ignore", env: { QM_LOG_LEVEL: "info", ...env }, timeout: 120_000 });
  return { exitCode: run.exitCode ?? -1, screen: String(run.stdout) + String(run.stderr) };
}

function journalDirs(s: Scenario): string[] {
  const dir = path.join(s.cluster.masterState, "migrations");
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((id) => path.join(dir, id)) : [];
}

function logLines(file: string): Array<Record<string, unknown>> {
  return fs
    .readFileSync(file, "utf8")
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Nothing of the logger on the screen: no JSON line, no stack trace. */
function expectNoLogOnScreen(screen: string): void {
  expect(screen).not.toContain('{"level"');
  expect(screen).not.toMatch(/^\s*\{"/m);
  expect(screen).not.toMatch(/^\s+at .*\(?(file:|node:)/m);
}

describe("on a terminal", () => {
  it("a failed hook: the step table and its cross, no JSON and no stack trace; the log lines in controller.log of the journal", async () => {
    const s = await setup({ updatedb: FAILING_UPDATEDB });
    const { exitCode, screen } = await onTerminal(s, ["migrate", s.site, "--to", s.to]);
    expect(exitCode, screen).toBe(1);
    await expectUnchanged(s);
    expectNoLogOnScreen(screen);
    expect(screen).toMatch(/✘\S* master-move-site +hostmaster \S*✘/);
    expect(screen).toContain("hostmaster: hook updatedb (sh) failed: exit 1: drush: table cache_bootstrap missing");
    // why: the hook's last 20 lines, under the failed step; not the 11 before them
    const shown = [...screen.matchAll(/^ {6}\S*│ (.*?)(\x1b\[0m)?\r?$/gm)].map((m) => m[1]);
    expect(shown[0]).toMatch(/^last 20 lines of its output \(.*\/hooks\/02-updatedb\.log\):$/);
    expect(shown.slice(1)).toEqual([...Array.from({ length: 19 }, (_, i) => `updatedb line ${i + 12}`), "drush: table cache_bootstrap missing"]);
    // said once, by the step table: no notice repeats it
    expect(screen).not.toMatch(/! .*hook failed/);
    expect(screen).toMatch(/rolled-back: master-move-site failed on hostmaster: .*; rolled back/);
    expect(screen).not.toContain("bug");

    const [journal, ...others] = journalDirs(s);
    expect(others).toEqual([]);
    const log = logLines(path.join(journal as string, "controller.log"));
    // everything the logger had: info included, and the failure with its code and context, no stack
    expect(log.map((l) => l.msg)).toEqual(expect.arrayContaining(["hook start", "host failed step", "step failed", "controller finished"]));
    const failed = log.find((l) => l.msg === "host failed step");
    expect(failed?.err).toEqual({ type: "QmError", code: "HOOK_FAILED", message: expect.stringContaining("hook updatedb (sh) failed: exit 1"), context: { key: "hooks.updatedb" } });
    expect(JSON.stringify(log)).not.toContain("    at ");
    expect(fs.statSync(path.join(journal as string, "controller.log")).mode & 0o777).toBe(0o600);
    // nothing of it landed beside the journals
    expect(fs.existsSync(path.join(s.cluster.masterState, "controller.log"))).toBe(false);
  });

  it("--json on a terminal: every line is JSON, events and log lines, as off one", async () => {
    const s = await setup({ updatedb: FAILING_UPDATEDB });
    const { exitCode, screen } = await onTerminal(s, ["migrate", s.site, "--to", s.to, "--json"]);
    expect(exitCode, screen).toBe(1);
    const lines = screen.split(/\r?\n/).filter((l) => l.trim() !== "");
    for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.some((l) => l.event === "result" && l.outcome === "rolled-back")).toBe(true);
    expect(parsed.some((l) => l.msg === "host failed step")).toBe(true);
    // no controller.log: the log was on the terminal, as asked for
    for (const j of journalDirs(s)) expect(fs.existsSync(path.join(j, "controller.log"))).toBe(false);
  });

  it("a refusal before any journal (preflight): the refusal on the screen; its log lines beside the journals, in the state dir's controller.log", async () => {
    // web2 has no target platform: preflight refuses there, before the lock step makes a journal
    const s = await setup({}, { targetPlatformOn: ["hostmaster", "web1"] });
    const { exitCode, screen } = await onTerminal(s, ["migrate", s.site, "--to", s.to]);
    expect(exitCode, screen).toBe(2);
    await expectUnchanged(s);
    expectNoLogOnScreen(screen);
    expect(screen).toMatch(/✘\S* refused: preflight refused: web2: /);
    expect(journalDirs(s)).toEqual([]);
    const log = logLines(path.join(s.cluster.masterState, "controller.log"));
    expect(log.find((l) => l.msg === "host failed step")).toMatchObject({ host: "web2", err: { code: "TARGET_PLATFORM_MISSING" } });
  });

  it("an interrupt: the warning is one line in the table's style, not a JSON line", async () => {
    const pidFile = path.join(await fs.promises.mkdtemp("/tmp/qm-term-"), "controller.pid");
    // the hook's parent is the controller (bin/quick-migrate execs node, hooks run without a shell)
    const s = await setup({ updatedb: ["sh", "-c", `echo $PPID > ${pidFile}; exec sleep 30`] });
    const run = onTerminal(s, ["migrate", s.site, "--to", s.to]);
    const pid = await eventually(
      "updatedb started",
      () => (fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "utf8").trim() : ""),
      (text) => /^\d+$/.test(text),
      30_000,
    );
    process.kill(Number(pid), "SIGINT");
    const { exitCode, screen } = await run;
    expect(exitCode, screen).toBe(1);
    await expectUnchanged(s);
    expectNoLogOnScreen(screen);
    expect(screen).toMatch(/^ {2}\S*!\S* interrupted: cancelling the running step; the rollback still runs \(a second signal cancels it\) \(signal=SIGINT\)\r?$/m);
    expect(screen).toContain("cancelled (interrupted by SIGINT)");
  });

  it("migrate --all: no JSON on the screen; each site's log lines in its own journal", async () => {
    const s = await setup({ updatedb: FAILING_UPDATEDB }, { moreSites: ["blog.example.com"] });
    const other = await forSite(s, "blog.example.com");
    const { exitCode, screen } = await onTerminal(s, ["migrate", "--all", "--from", s.from, "--to", s.to, "--concurrency", "2"]);
    expect(exitCode, screen).toBe(1);
    await expectUnchanged(s);
    await expectUnchanged(other);
    expectNoLogOnScreen(screen);
    expect(screen).toContain("hostmaster: hook updatedb (sh) failed: exit 1");
    const journals = journalDirs(s);
    expect(journals).toHaveLength(2);
    for (const j of journals) {
      const log = logLines(path.join(j, "controller.log"));
      const id = path.basename(j);
      expect(log.filter((l) => l.migrationId !== undefined).every((l) => l.migrationId === id)).toBe(true);
      expect(log.some((l) => l.msg === "host failed step")).toBe(true);
    }
    // the batch's own line (no migration) beside the journals
    expect(logLines(path.join(s.cluster.masterState, "controller.log")).map((l) => l.msg)).toContain("batch finished");
  });

  it("an internal error (a bug in an agent): called so, with where its stack trace is; that agent's log has it", async () => {
    scenario = await setupScenario({ fronts: [{ name: "web1", env: { QM_AGENT_FAULT: "bug-mid:park-data" } }, { name: "web2" }] });
    const s = scenario;
    const { exitCode, screen } = await onTerminal(s, ["migrate", s.site, "--to", s.to]);
    expect(exitCode, screen).toBe(1);
    await expectUnchanged(s);
    expectNoLogOnScreen(screen);
    expect(screen).toMatch(/^ {6}\S*web1: internal error \(a bug in quick-migrate\): injected bug .*$/m);
    expect(screen).toContain(
      "this is a bug in quick-migrate, not a fault of your hosts: please report it with its stack trace, which is in the agent's log on web1 (journalctl -u quick-migrate-agent)",
    );
    // there it is: the agent's log line of the failed operation, with the stack (read once it has reached the file)
    const web1 = s.cluster.front("web1");
    const stackLine = () =>
      fs
        .readFileSync(web1.logFile, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { msg?: string; err?: { stack?: string } })
        .find((l) => l.msg === "operation" && l.err?.stack?.includes("TypeError: injected bug"));
    const line = await eventually("web1's log line of the failed operation", stackLine, (l) => l !== undefined);
    expect(line?.err?.stack).toMatch(/\n\s+at /);
  });

  it("colours on a terminal, none with NO_COLOR", async () => {
    const s = await setup({});
    const coloured = await onTerminal(s, ["migrate", s.site, "--to", s.to, "--dry-run"]);
    expect(coloured.exitCode, coloured.screen).toBe(0);
    expect(coloured.screen).toMatch(/\x1b\[32m✔\x1b\[0m dry-run: /);
    const plain = await onTerminal(s, ["migrate", s.site, "--to", s.to, "--dry-run"], { NO_COLOR: "1" });
    expect(plain.exitCode, plain.screen).toBe(0);
    expect(plain.screen).toMatch(/^✔ dry-run: /m);
    expect(plain.screen).not.toMatch(/\x1b\[\d+m/);
  });
});

describe("off a terminal", () => {
  it("as before: events on stdout (JSON with --json, lines without), JSON log lines on stderr", async () => {
    const s = await setup({ updatedb: FAILING_UPDATEDB });
    const json = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to, "--json"], { controllerBin: CONTROLLER_BIN });
    expect(json.exitCode, json.stdout + json.stderr).toBe(1);
    expect(json.events.at(-1)).toMatchObject({ event: "result", outcome: "rolled-back", code: "HOOK_FAILED" });
    const logs = json.stderr
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logs.find((l) => l.msg === "host failed step")?.err).toMatchObject({ code: "HOOK_FAILED" });
    expect(json.stderr).not.toContain("    at ");

    const human = await runController(s.cluster.controllerConfig, ["migrate", s.site, "--to", s.to], { controllerBin: CONTROLLER_BIN });
    expect(human.exitCode, human.stdout + human.stderr).toBe(1);
    expect(human.stdout).not.toContain('{"level"');
    expect(human.stdout).not.toContain("\x1b");
    expect(human.stderr).toContain('"msg":"host failed step"');
    for (const j of journalDirs(s)) expect(fs.existsSync(path.join(j, "controller.log"))).toBe(false);
  });
});
