// `quick-migrate status`: every migration's state, read from its journal and its lock.
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { QmError } from "../shared/errors.js";
import { type MigrationSpec, checkMigration } from "../shared/migration.js";
import { Journal } from "./journal.js";
import { type LockHolder, SiteLock } from "./siteLock.js";
import { type MigrationStateName, replay, stateOf } from "./journalState.js";
import type { Plan } from "./plan.js";
import { STEP_NAMES } from "./steps.js";

export interface MigrationStatus {
  readonly id: string;
  readonly site: string;
  readonly newSite: string;
  readonly from: string;
  readonly to: string;
  readonly state: MigrationStateName;
  readonly createdAt: string;
  /** the last step started, "undo <step>" while rolling back */
  readonly lastStep: string | null;
  /** each host's last step and whether it acknowledged it ("ok", "failed", "in flight") */
  readonly hosts: Record<string, string>;
  readonly message: string | null;
  /**
   * each host's failed step not made good since, with its acknowledgement's detail: a failed hook's goes
   * on, below its first line, with its last lines of output ("undo <step>" for an undo)
   */
  readonly failures: ReadonlyArray<{ readonly host: string; readonly step: string; readonly detail: string }>;
  readonly journal: string;
}

/** Reads and checks the plan document a journal starts with. */
export function planFromDocument(document: unknown, dir: string): { plan: Plan; createdAt: string } {
  const doc = document as { plan?: Plan; createdAt?: string } | null;
  const plan = doc?.plan;
  const bad = (why: string) => new QmError("JOURNAL_INVALID", `journal ${dir} does not parse: plan.json ${why}`, { path: dir });
  if (!plan || typeof plan !== "object" || !Array.isArray(plan.steps) || !Array.isArray(plan.fronts)) throw bad("has no plan");
  try {
    checkMigration(plan.migration as MigrationSpec);
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (plan.steps.map((s) => s.name).join() !== STEP_NAMES.join()) throw bad("has other steps than this version knows");
  return { plan, createdAt: String(doc?.createdAt ?? "") };
}

export async function readStatus(stateDir: string, migrationId: string): Promise<MigrationStatus> {
  const { journal, document, events } = await Journal.load(stateDir, migrationId);
  const { plan, createdAt } = planFromDocument(document, journal.dir);
  const m = plan.migration;
  const r = replay(events);
  const holder = await SiteLock.holder(stateDir, m.site);
  const alive = holder !== undefined && holder.migrationId === m.id && SiteLock.isAlive(holder);
  const hosts: Record<string, string> = {};
  for (const [host, p] of r.hosts) {
    hosts[host] = `${p.undo ? "undo " : ""}${p.step} ${p.ok === undefined ? "in flight" : p.ok ? "ok" : "failed"}`;
  }
  return {
    id: m.id,
    site: m.site,
    newSite: m.newSite,
    from: m.from,
    to: m.to,
    state: stateOf(r, alive),
    createdAt,
    lastStep: r.lastStep ? `${r.lastStep.undo ? "undo " : ""}${r.lastStep.step}` : null,
    hosts,
    message: r.result?.message ?? null,
    failures: r.failures.map((f) => ({ host: f.host, step: `${f.undo ? "undo " : ""}${f.step}`, detail: f.detail })),
    journal: journal.dir,
  };
}

export async function listStatuses(stateDir: string): Promise<MigrationStatus[]> {
  let ids: string[];
  try {
    ids = (await readdir(join(stateDir, "migrations"))).filter((n) => !n.startsWith(".")).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  // one unreadable journal must not hide the others: it is listed as needing attention
  return Promise.all(
    ids.map((id) =>
      readStatus(stateDir, id).catch(
        (err: unknown): MigrationStatus => ({
          id,
          site: "?",
          newSite: "?",
          from: "?",
          to: "?",
          state: "needs-attention",
          createdAt: "",
          lastStep: null,
          hosts: {},
          message: (err as Error).message,
          failures: [],
          journal: Journal.folder(stateDir, id),
        }),
      ),
    ),
  );
}

/** "migration <id> (<state>)" for the message of a refused migrate. */
export async function describeLockHolder(stateDir: string, holder: LockHolder): Promise<string> {
  try {
    const s = await readStatus(stateDir, holder.migrationId);
    return `migration ${holder.migrationId} (${s.state})`;
  } catch {
    return `migration ${holder.migrationId}`;
  }
}
