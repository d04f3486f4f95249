// Hooks are argument arrays with placeholders replaced inside each argument, run without a shell (DESIGN §9).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type HookValues, HookRunner, expandHook, hookEnv } from "../../controller/hooks.js";
import { type HookGroup, groupMembers } from "../../controller/processGroup.js";
import { QmError, ackDetail } from "../../shared/errors.js";
import { running } from "../helpers/processes.js";

const values: HookValues = {
  site: "a.com",
  newSite: "b.com",
  from: "p1",
  to: "d10/web",
  fromPath: "/var/aegir/platforms/p1",
  toPath: "/var/aegir/platforms/d10/web",
  dump: "/var/lib/quick-migrate/m1/db dump.sql",
  migrationId: "m1",
};

describe("expandHook", () => {
  it("replaces placeholders inside arguments", () => {
    expect(expandHook(["drush", "@{site}", "sql-dump", "--result-file={dump}"], values)).toEqual([
      "drush",
      "@a.com",
      "sql-dump",
      "--result-file=/var/lib/quick-migrate/m1/db dump.sql",
    ]);
  });

  it("replaces every placeholder, several per argument and repeated ones", () => {
    expect(expandHook(["{from}/{site}->{to}/{newSite}:{site}", "{fromPath}|{toPath}|{migrationId}"], values)).toEqual([
      "p1/a.com->d10/web/b.com:a.com",
      "/var/aegir/platforms/p1|/var/aegir/platforms/d10/web|m1",
    ]);
  });

  it("leaves unknown and malformed braces alone", () => {
    const argv = ["{nope}", "{}", "{ site }", "{site", "site}", "{{site}}", "{SITE}", "${HOME}", "{site-name}"];
    expect(expandHook(argv, values)).toEqual(["{nope}", "{}", "{ site }", "{site", "site}", "{a.com}", "{SITE}", "${HOME}", "{site-name}"]);
  });

  it("leaves braces naming Object.prototype members alone", () => {
    expect(expandHook(["{constructor}", "{toString}", "{hasOwnProperty}", "{valueOf}"], values)).toEqual([
      "{constructor}",
      "{toString}",
      "{hasOwnProperty}",
      "{valueOf}",
    ]);
  });

  it("never splits or joins arguments", () => {
    const argv = ["cmd", "an arg with spaces", "{dump}", "", "a;b", "x y {site}"];
    const out = expandHook(argv, values);
    expect(out).toHaveLength(argv.length);
    expect(out).toEqual(["cmd", "an arg with spaces", "/var/lib/quick-migrate/m1/db dump.sql", "", "a;b", "x y a.com"]);
  });

  it("inserts values literally (no $-patterns, no re-expansion)", () => {
    const odd: HookValues = { ...values, dump: "$&-$1-{site}", site: "$'" };
    expect(expandHook(["{dump}", "{site}"], odd)).toEqual(["$&-$1-{site}", "$'"]);
  });

  it("does not change the input array", () => {
    const argv = ["@{site}"];
    expandHook(argv, values);
    expect(argv).toEqual(["@{site}"]);
  });
});

describe("hookEnv", () => {
  it("gives every value as a QM_* variable", () => {
    expect(hookEnv(values)).toEqual({
      QM_SITE: "a.com",
      QM_NEW_SITE: "b.com",
      QM_FROM: "p1",
      QM_TO: "d10/web",
      QM_FROM_PATH: "/var/aegir/platforms/p1",
      QM_TO_PATH: "/var/aegir/platforms/d10/web",
      QM_DUMP: "/var/lib/quick-migrate/m1/db dump.sql",
      QM_MIGRATION_ID: "m1",
    });
  });
});

// the tests that run real hooks: a silent logger, and a temp folder of their own each
const log = pino({ level: "silent" });
let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-hooks-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("HookRunner.run with a real command", () => {

  // A hook that records its argv, cwd-independent env and stdin state as JSON into the file named by its first argument.
  const RECORDER = [
    'const fs = require("node:fs");',
    "const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith(\"QM_\")));",
    "fs.writeFileSync(process.argv[1], JSON.stringify([process.argv.slice(2), env]));",
  ].join("\n");

  function recorded(out: string): [string[], Record<string, string>] {
    return JSON.parse(fs.readFileSync(out, "utf8")) as [string[], Record<string, string>];
  }

  it("passes expanded arguments one by one and the QM_* environment", async () => {
    const out = path.join(tmp, "out.json");
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", RECORDER, "--", out, "@{site}", "--result-file={dump}", "two words"] }, log);
    expect(runner.has("dbDump")).toBe(true);
    const result = await runner.run("dbDump", values);
    expect(result.skipped).toBe(false);
    const [argv, env] = recorded(out);
    expect(argv).toEqual(["@a.com", "--result-file=/var/lib/quick-migrate/m1/db dump.sql", "two words"]);
    expect(env).toEqual(hookEnv(values));
  });

  it("uses no shell: shell syntax arrives literally and is not executed", async () => {
    const out = path.join(tmp, "out.json");
    const marker = path.join(tmp, "marker");
    const nasty = [`$(touch ${marker})`, `\`touch ${marker}\``, `; touch ${marker}`, `&& touch ${marker}`, "; rm -rf /", "| cat", "$HOME", "*", "'\"", "a\nb"];
    const runner = new HookRunner({ maintenanceOn: [process.execPath, "-e", RECORDER, "--", out, ...nasty] }, log);
    await runner.run("maintenanceOn", values);
    const [argv] = recorded(out);
    expect(argv).toEqual(nasty);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it("a placeholder value with shell syntax stays one literal argument", async () => {
    const out = path.join(tmp, "out.json");
    const marker = path.join(tmp, "marker2");
    const odd: HookValues = { ...values, dump: `x; touch ${marker} $(touch ${marker})` };
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", RECORDER, "--", out, "--result-file={dump}"] }, log);
    await runner.run("dbDump", odd);
    const [argv, env] = recorded(out);
    expect(argv).toEqual([`--result-file=x; touch ${marker} $(touch ${marker})`]);
    expect(env.QM_DUMP).toBe(odd.dump);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it("a non-zero exit throws HOOK_FAILED naming the hook, the exit code and the last output line", async () => {
    const runner = new HookRunner(
      { updatedb: [process.execPath, "-e", 'console.log("first"); console.error("updb: table missing"); process.exit(3)'] },
      log,
    );
    const err = await runner.run("updatedb", values).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QmError);
    const q = err as QmError;
    expect(q.code).toBe("HOOK_FAILED");
    expect(q.message).toContain("hook updatedb");
    expect(q.message).toContain("exit 3");
    expect(q.message).toContain("updb: table missing");
    expect(q.context.key).toBe("hooks.updatedb");
  });

  it("a command that does not exist throws HOOK_FAILED naming the hook", async () => {
    const runner = new HookRunner({ deploy: [path.join(tmp, "no-such-command"), "{site}"] }, log);
    await expect(runner.run("deploy", values)).rejects.toMatchObject({ code: "HOOK_FAILED", message: expect.stringContaining("hook deploy") });
  });

  it("a missing hook is skipped and nothing runs", async () => {
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", "process.exit(1)"] }, log);
    expect(runner.has("maintenanceOff")).toBe(false);
    const result = await runner.run("maintenanceOff", values);
    expect(result.skipped).toBe(true);
    expect(result.detail).toContain("maintenanceOff");
  });

  it("the hook gets no stdin (it cannot hang waiting for input)", async () => {
    const out = path.join(tmp, "stdin.txt");
    const script = 'let s = ""; process.stdin.on("data", (d) => (s += d)); process.stdin.on("end", () => require("node:fs").writeFileSync(process.argv[1], "eof:" + s));';
    const runner = new HookRunner({ maintenanceOn: [process.execPath, "-e", script, "--", out] }, log);
    await runner.run("maintenanceOn", values);
    expect(fs.readFileSync(out, "utf8")).toBe("eof:");
  });

  it("an aborted hook is stopped and reported as failed", async () => {
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", "setTimeout(() => {}, 60000)"] }, log);
    const ac = new AbortController();
    const started = Date.now();
    const p = runner.run("dbDump", values, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    await expect(p).rejects.toMatchObject({ code: "HOOK_FAILED" });
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

// A hook that starts a child of its own (as drush starts php), writes both pids to the file named by its
// first argument and waits; with "ignore-term" both ignore SIGTERM.
const FAMILY = [
  'const { spawn } = require("node:child_process");',
  'const ignore = process.argv[2] === "ignore-term";',
  'if (ignore) process.on("SIGTERM", () => {});',
  'const child = spawn(process.execPath, ["-e", (ignore ? "process.on(\'SIGTERM\', () => {});" : "") + "setInterval(() => {}, 1000)"], { stdio: "ignore" });',
  'require("node:fs").writeFileSync(process.argv[1], JSON.stringify([process.pid, child.pid]));',
  "setInterval(() => {}, 1000);",
].join("\n");


async function pidsIn(file: string): Promise<number[]> {
  for (let i = 0; i < 200 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 40; i++) {
    try {
      return JSON.parse(fs.readFileSync(file, "utf8")) as number[];
    } catch {
      await new Promise((r) => setTimeout(r, 25)); // written meanwhile
    }
  }
  throw new Error(`${file}: no pids`);
}

describe("HookRunner: a hook and everything it started are bounded", () => {

  it("runs as the leader of its own process group, reported to started() with its start time", async () => {
    const pids = path.join(tmp, "pids.json");
    const runner = new HookRunner({ deploy: [process.execPath, "-e", 'require("node:fs").writeFileSync(process.argv[1], JSON.stringify([process.pid]))', "--", pids] }, log);
    const groups: HookGroup[] = [];
    await runner.run("deploy", values, { started: async (g) => void groups.push(g) });
    expect(groups).toHaveLength(1);
    expect(groups[0]?.pgid).toBe((await pidsIn(pids))[0]);
    expect(groups[0]?.startTime).toMatch(/^\d+$/);
    expect(groupMembers(groups[0]?.pgid ?? 0)).toEqual([]);
  });

  it("past its timeout, its whole process group gets SIGTERM and the step fails as for a non-zero exit", async () => {
    const pids = path.join(tmp, "pids.json");
    const runner = new HookRunner({ updatedb: [process.execPath, "-e", FAMILY, "--", pids] }, log, { timeoutMs: 1000 });
    const started = Date.now();
    const err = await runner.run("updatedb", values).catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect(err).toMatchObject({ code: "HOOK_FAILED", message: expect.stringContaining("hook updatedb") });
    expect((err as Error).message).toContain("timed out after 1 s");
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThan(5000);
    const [leader, child] = await pidsIn(pids);
    expect(running(leader ?? 0), "the hook").toBe(false);
    expect(running(child ?? 0), "what the hook started").toBe(false);
  });

  it("a group that ignores SIGTERM gets SIGKILL after the grace", async () => {
    const pids = path.join(tmp, "pids.json");
    const runner = new HookRunner({ updatedb: [process.execPath, "-e", FAMILY, "--", pids, "ignore-term"] }, log, { timeoutMs: 500, killGraceMs: 700 });
    const started = Date.now();
    await expect(runner.run("updatedb", values)).rejects.toMatchObject({ code: "HOOK_FAILED", message: expect.stringContaining("timed out after 0.5 s") });
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(1200);
    expect(elapsed).toBeLessThan(5000);
    for (const pid of await pidsIn(pids)) expect(running(pid), String(pid)).toBe(false);
  });

  it("cancelling ends the whole group, not only the hook's own process", async () => {
    const pids = path.join(tmp, "pids.json");
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", FAMILY, "--", pids] }, log);
    const ac = new AbortController();
    const p = runner.run("dbDump", values, { signal: ac.signal });
    const [leader, child] = await pidsIn(pids);
    expect(running(child ?? 0)).toBe(true);
    ac.abort(new Error("interrupted by SIGTERM"));
    await expect(p).rejects.toMatchObject({ code: "HOOK_FAILED", message: expect.stringContaining("cancelled (interrupted by SIGTERM)") });
    expect(running(leader ?? 0)).toBe(false);
    expect(running(child ?? 0)).toBe(false);
  });

  it("an already cancelled signal starts nothing", async () => {
    const marker = path.join(tmp, "ran");
    const runner = new HookRunner({ maintenanceOff: [process.execPath, "-e", 'require("node:fs").writeFileSync(process.argv[1], "")', "--", marker] }, log);
    const ac = new AbortController();
    ac.abort(new Error("interrupted by SIGINT"));
    await expect(runner.run("maintenanceOff", values, { signal: ac.signal })).rejects.toMatchObject({ code: "HOOK_FAILED", message: expect.stringContaining("cancelled before it started") });
    expect(fs.existsSync(marker)).toBe(false);
  });

  it("what a hook leaves running in its group after it exits is ended with it; its exit still decides", async () => {
    const pids = path.join(tmp, "pids.json");
    // the leader exits at once; its child has its output closed, so nothing waits for it
    const script = FAMILY.replace("setInterval(() => {}, 1000);", "process.exit(0);");
    const runner = new HookRunner({ deploy: [process.execPath, "-e", script, "--", pids] }, log);
    const groups: HookGroup[] = [];
    const result = await runner.run("deploy", values, { started: async (g) => void groups.push(g) });
    expect(result).toEqual({ skipped: false, detail: "hook deploy ran (it left 1 process(es) running: ended)" });
    const [, child] = await pidsIn(pids);
    expect(running(child ?? 0)).toBe(false);
    expect(groupMembers(groups[0]?.pgid ?? 0)).toEqual([]);
  });

  it("a hook whose start cannot be journaled is ended, and the journal's error is thrown", async () => {
    const pids = path.join(tmp, "pids.json");
    const runner = new HookRunner({ dbDump: [process.execPath, "-e", FAMILY, "--", pids] }, log);
    let pgid = 0;
    const err = await runner
      .run("dbDump", values, {
        started: async (g) => {
          pgid = g.pgid;
          await pidsIn(pids);
          throw new QmError("IO", "journal: ENOSPC");
        },
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "IO", message: "journal: ENOSPC" });
    expect(groupMembers(pgid)).toEqual([]);
  });
});

// A hook that prints numbered lines (`count` of them, "<prefix> <n>"), then exits with `code` or, with
// "hang", waits to be ended.
function printing(count: number, prefix: string, end: string): string[] {
  return ["sh", "-c", `i=1; while [ $i -le ${count} ]; do echo "${prefix} $i"; i=$((i+1)); done; ${end}`];
}

describe("HookRunner: a failed hook shows why", () => {

  const numbered = (prefix: string, from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix} ${from + i}`);

  it("a hook that fails after 30 lines: its file holds them all, the acknowledgement its last 20, the message stays one line", async () => {
    const file = path.join(tmp, "journal", "hooks", "04-updatedb.log");
    const runner = new HookRunner({ updatedb: printing(30, "updb", "echo 'updb: table missing' >&2; exit 1") }, log);
    const err = await runner.run("updatedb", values, { outputFile: file }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "HOOK_FAILED", message: "hook updatedb (sh) failed: exit 1: updb: table missing" });
    const lines = [...numbered("updb", 12, 30), "updb: table missing"];
    expect((err as QmError).ackLines).toEqual([`last 20 lines of its output (${file}):`, ...lines]);
    expect(ackDetail(err)).toBe(["hook updatedb (sh) failed: exit 1: updb: table missing", `last 20 lines of its output (${file}):`, ...lines].join("\n"));
    expect(fs.readFileSync(file, "utf8")).toBe(`${[...numbered("updb", 1, 30), "updb: table missing"].join("\n")}\n`);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
  });

  it("a timed-out hook: the acknowledgement holds the last 20 lines it printed before it was ended", async () => {
    const file = path.join(tmp, "hooks", "01-dbDump.log");
    const runner = new HookRunner({ dbDump: printing(30, "dumping", "sleep 60") }, log, { timeoutMs: 1000 });
    const err = await runner.run("dbDump", values, { outputFile: file }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "HOOK_FAILED", message: "hook dbDump (sh) failed: timed out after 1 s: dumping 30" });
    expect(ackDetail(err).split("\n")).toEqual(["hook dbDump (sh) failed: timed out after 1 s: dumping 30", `last 20 lines of its output (${file}):`, ...numbered("dumping", 11, 30)]);
  });

  it("without a file (no journal), the last lines come from a bounded tail in memory", async () => {
    const runner = new HookRunner({ updatedb: printing(30, "updb", "exit 2") }, log);
    const err = await runner.run("updatedb", values).catch((e: unknown) => e);
    expect((err as QmError).ackLines).toEqual(["last 20 lines of its output (kept in memory):", ...numbered("updb", 11, 30)]);
  });

  it("a file that cannot be made does not stop the hook: its tail is kept in memory", async () => {
    fs.writeFileSync(path.join(tmp, "not-a-folder"), "");
    const runner = new HookRunner({ updatedb: printing(3, "updb", "exit 1") }, log);
    const err = await runner.run("updatedb", values, { outputFile: path.join(tmp, "not-a-folder", "hooks", "01-updatedb.log") }).catch((e: unknown) => e);
    expect((err as QmError).ackLines).toEqual(["last 3 lines of its output (kept in memory):", ...numbered("updb", 1, 3)]);
  });

  it("a hook that prints megabytes: its file stays within the cap and ends with what it printed last", async () => {
    const file = path.join(tmp, "hooks", "01-deploy.log");
    const runner = new HookRunner({ deploy: ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'z' | fold -w 100; echo; echo 'deploy: done badly'; exit 4"] }, log, { outputCapBytes: 64 * 1024 });
    const err = await runner.run("deploy", values, { outputFile: file }).catch((e: unknown) => e);
    expect(err).toMatchObject({ message: "hook deploy (sh) failed: exit 4: deploy: done badly" });
    const kept = fs.readFileSync(file, "utf8");
    expect(kept.length).toBeLessThanOrEqual(64 * 1024);
    expect(kept).toMatch(/^\[… [\d,]+ earlier bytes cut …\]\n/);
    expect(kept.endsWith(`\n${"z".repeat(100)}\ndeploy: done badly\n`)).toBe(true);
    expect((err as QmError).ackLines.slice(-2)).toEqual(["z".repeat(100), "deploy: done badly"]);
  });

  it("a hook that succeeds still has its file; a hook that prints nothing and fails adds no lines", async () => {
    const file = path.join(tmp, "hooks", "01-maintenanceOn.log");
    const ok = new HookRunner({ maintenanceOn: ["sh", "-c", "echo 'maintenance_mode set to 1'"] }, log);
    expect(await ok.run("maintenanceOn", values, { outputFile: file })).toEqual({ skipped: false, detail: "hook maintenanceOn ran" });
    expect(fs.readFileSync(file, "utf8")).toBe("maintenance_mode set to 1\n");
    const silent = new HookRunner({ maintenanceOn: ["sh", "-c", "exit 5"] }, log);
    const err = await silent.run("maintenanceOn", values, { outputFile: path.join(tmp, "hooks", "02-maintenanceOn.log") }).catch((e: unknown) => e);
    expect(ackDetail(err)).toBe("hook maintenanceOn (sh) failed: exit 5");
  });

  it("the message names the last line that says something, not trailing blank lines", async () => {
    const runner = new HookRunner({ updatedb: ["sh", "-c", "echo 'updb: failed'; echo; echo '   '; exit 1"] }, log);
    const err = await runner.run("updatedb", values).catch((e: unknown) => e);
    expect(err).toMatchObject({ message: "hook updatedb (sh) failed: exit 1: updb: failed" });
    expect((err as QmError).ackLines).toEqual(["last 3 lines of its output (kept in memory):", "updb: failed", "", "   "]);
  });

  it("a command that cannot start: a one-line message, and its (empty) file", async () => {
    const file = path.join(tmp, "hooks", "01-deploy.log");
    const runner = new HookRunner({ deploy: [path.join(tmp, "no-such-command")] }, log);
    const err = await runner.run("deploy", values, { outputFile: file }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "HOOK_FAILED" });
    expect((err as Error).message).not.toContain("\n");
    expect(ackDetail(err)).toBe((err as Error).message);
    expect(fs.readFileSync(file, "utf8")).toBe("");
  });
});
