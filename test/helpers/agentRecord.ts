// An agent's record as its file holds it now: the last whole version (agent/registry.ts, lastVersion).
import fs from "node:fs";
import path from "node:path";
import { lastVersion } from "../../agent/registry.js";

/** The record in `file` (a migration's file under an agent's `migrations/` folder). */
export function readRecordFile<T = Record<string, unknown>>(file: string): T {
  return lastVersion(fs.readFileSync(file, "utf8")).value as T;
}

/** The record of migration `id` in the agent state dir `stateDir`. */
export function readRecord<T = Record<string, unknown>>(stateDir: string, id: string): T {
  return readRecordFile<T>(path.join(stateDir, "migrations", `${id}.json`));
}
