#!/usr/bin/env node
// Stands in for drush in the demo and the tests: records how a hook called it, fakes a dump,
// and fails on demand (QM_FAKE_DRUSH_FAIL or QM_FAKE_DRUSH_FAIL_ALSO=<an argument value>, e.g. updatedb), first killing the process
// QM_FAKE_DRUSH_KILL_PID if set. QM_FAKE_DRUSH_HANG=<an argument value> makes it never end instead, with a
// child of its own (as drush runs php), their pids written to QM_FAKE_DRUSH_PIDS; with
// QM_FAKE_DRUSH_KILL_PARENT=1 it first SIGKILLs the controller that started it.
import { spawn } from "node:child_process";
import { appendFileSync, renameSync, writeFileSync } from "node:fs";

const argv = process.argv.slice(2);

const log = process.env.QM_FAKE_DRUSH_LOG;
if (log) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("QM_") && !k.startsWith("QM_FAKE_")));
  appendFileSync(log, `${JSON.stringify({ argv, env, cwd: process.cwd(), pid: process.pid, time: new Date().toISOString() })}\n`);
}

const fails = [process.env.QM_FAKE_DRUSH_FAIL, process.env.QM_FAKE_DRUSH_FAIL_ALSO].filter(Boolean);
const fail = fails.find((f) => argv.includes(f));
if (fail) {
  // a host going away at the worst moment: the tests name an agent's pid to kill before failing
  const victim = Number(process.env.QM_FAKE_DRUSH_KILL_PID);
  if (victim > 0) process.kill(victim, "SIGKILL");
  process.stderr.write(`fake drush: failing on purpose (QM_FAKE_DRUSH_FAIL=${fail})\n`);
  process.exit(1);
}

const hang = process.env.QM_FAKE_DRUSH_HANG;
if (hang && argv.includes(hang)) {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  const pids = process.env.QM_FAKE_DRUSH_PIDS;
  if (pids) {
    // whole or not at all: the test polls for this file
    writeFileSync(`${pids}.tmp`, JSON.stringify({ hook: process.pid, child: child.pid, controller: process.ppid }));
    renameSync(`${pids}.tmp`, pids);
  }
  if (process.env.QM_FAKE_DRUSH_KILL_PARENT === "1") process.kill(process.ppid, "SIGKILL");
  setInterval(() => {}, 1000);
  await new Promise(() => {}); // never: whoever ends its process group ends it
}

for (const arg of argv) {
  if (arg.startsWith("--result-file=")) {
    const site = argv.find((a) => a.startsWith("@")) ?? "@unknown";
    writeFileSync(
      arg.slice("--result-file=".length),
      `-- fake drush sql-dump of ${site}\nCREATE TABLE variable (name varchar(128), value longblob);\nINSERT INTO variable VALUES ('maintenance_mode', 'i:1;');\n`,
    );
  }
}
process.exit(0);
