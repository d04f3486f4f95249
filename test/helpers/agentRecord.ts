// An agent's record as its file holds it now: the last whole version (agent/registry.ts, lastVersion); and
// a fresh agent state dir for each test of the registry's unit tests.
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach } from "vitest";
import { lastVersion } from "../../agent/registry.js";

/** The record in `file` (a migration's file under an agent's `migrations/` folder). */
export function readRecordFile<T = Record<string, unknown>>(file: string): T {
  return lastVersion(fs.readFileSync(file, "utf8")).value as T;
}

/** The record of migration `id` in the agent state dir `stateDir`. */
export function readRecord<T = Record<string, unknown>>(stateDir: string, id: string): T {
  return readRecordFile<T>(path.join(stateDir, "migrations", `${id}.json`));
}

/**
 * An agent state dir with its `migrations` folder, new for each test of the file that calls this at its
 * top level, and removed after it. Returns the current test's.
 */
export function agentStateDirEachTest(prefix: string): () => string {
  let dir: string | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), prefix));
    fs.mkdirSync(path.join(dir, "migrations"));
  });
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });
  return () => {
    if (dir === undefined) throw new Error("agentStateDirEachTest: no test is running");
    return dir;
  };
}
