// The migration plan as data: every step of DESIGN §4 with the hosts that must acknowledge it, what it
// does, its undo, and which path goes where on which host. Built without any I/O; the runner executes it.
import { type MigrationSpec, newSiteRel, oldSiteRel, placeRel } from "../shared/migration.js";
import type { HookName } from "./hooks.js";

export const STEP_NAMES = [
  "preflight",
  "lock",
  "maintenance-on",
  "db-dump",
  "master-park-data",
  "fronts-park-data",
  "fetch-site",
  "master-move-site",
  "push-site",
  "fronts-restore-data",
  "fronts-remove-old",
  "maintenance-off",
  "finish",
] as const;
export type StepName = (typeof STEP_NAMES)[number];

/** From this step on there is no rollback, only retry (roll forward). */
export const POINT_OF_NO_RETURN: StepName = "fronts-remove-old";

export interface PlanFront {
  readonly name: string;
  readonly local: boolean;
}

export interface Move {
  readonly host: string;
  readonly what: string;
  readonly from: string;
  readonly to: string;
}

export interface PlanStep {
  readonly name: StepName;
  /** the hosts that must acknowledge; empty when the step is skipped */
  readonly hosts: readonly string[];
  readonly does: string;
  readonly undo: string | null;
  readonly skipped?: string;
  readonly moves: readonly Move[];
}

export interface Plan {
  readonly migration: MigrationSpec;
  readonly master: string;
  readonly fronts: readonly PlanFront[];
  /** the front whose site folder is fetched; a local front means the hostmaster's copy is live and no fetch is needed */
  readonly fetchFrom: string;
  readonly masterIsFront: boolean;
  readonly keepMasterData: boolean;
  readonly steps: readonly PlanStep[];
}

export interface PlanInput {
  readonly migration: MigrationSpec;
  readonly master: string;
  readonly fronts: readonly PlanFront[];
  readonly fetchFrom?: string;
  readonly hooks: ReadonlySet<HookName>;
  readonly keepMasterData?: boolean;
}

export function buildPlan(input: PlanInput): Plan {
  const { migration: m, master, fronts } = input;
  if (fronts.length === 0) throw new Error("a plan needs at least one front");
  const local = fronts.find((f) => f.local);
  const fetchFrom = input.fetchFrom ?? local?.name ?? (fronts[0] as PlanFront).name;
  if (!fronts.some((f) => f.name === fetchFrom)) throw new Error(`fetch-from front ${fetchFrom} is not in the config`);
  const fetchIsLocal = fronts.some((f) => f.name === fetchFrom && f.local);
  const all = fronts.map((f) => f.name);
  const remote = fronts.filter((f) => !f.local).map((f) => f.name);
  const oldRel = oldSiteRel(m);
  const newRel = newSiteRel(m);
  const hook = (name: HookName) => (input.hooks.has(name) ? `hook ${name}` : `hook ${name} (not configured: skipped)`);

  const dataMoves = (hosts: readonly string[], from: "old" | "park", to: "park" | "new", what: string): Move[] =>
    hosts.flatMap((host) => m.dataDirs.map((d) => ({ host, what: `${what} ${d}`, from: placeRel(m, d, from), to: placeRel(m, d, to) })));

  const step = (s: PlanStep): PlanStep => Object.freeze(s);
  const hookStep = (name: StepName, h: HookName, undo: string | null): PlanStep =>
    input.hooks.has(h)
      ? step({ name, hosts: [master], does: hook(h), undo, moves: [] })
      : step({ name, hosts: [], does: hook(h), undo: null, skipped: `hook ${h} not configured`, moves: [] });
  const steps: PlanStep[] = [
    step({ name: "preflight", hosts: [master, ...all], does: "read-only checks on every host", undo: null, moves: [] }),
    step({ name: "lock", hosts: [master], does: "take the per-site lock, journal the plan", undo: "release the lock", moves: [] }),
    hookStep("maintenance-on", "maintenanceOn", hook("maintenanceOff")),
    hookStep("db-dump", "dbDump", null),
    local
      ? step({
          name: "master-park-data",
          hosts: [],
          does: "park the hostmaster's stale data dirs",
          undo: "rename back",
          skipped: `the hostmaster is front ${local?.name}: its data is live and parked as a front's`,
          moves: [],
        })
      : step({
          name: "master-park-data",
          hosts: [master],
          does: "park the hostmaster's stale data dirs",
          undo: "rename back",
          moves: dataMoves([master], "old", "park", "park"),
        }),
    step({
      name: "fronts-park-data",
      hosts: all,
      does: "rename each data dir into the park area",
      undo: "rename back",
      moves: dataMoves(all, "old", "park", "park"),
    }),
    fetchIsLocal
      ? step({ name: "fetch-site", hosts: [], does: "rsync the site folder to the hostmaster", undo: null, skipped: `front ${fetchFrom} is the hostmaster itself`, moves: [] })
      : step({
          name: "fetch-site",
          hosts: [fetchFrom],
          does: "rsync the site folder (data dirs excluded) to the hostmaster",
          undo: null,
          moves: [{ host: master, what: `rsync from ${fetchFrom}`, from: `${fetchFrom}:${oldRel}/`, to: `${oldRel}/` }],
        }),
    step({
      name: "master-move-site",
      hosts: [master],
      does: `rename the site folder, then ${hook("deploy")} and ${hook("updatedb")}`,
      undo: `rename back, ${hook("deploy")} for the old platform, ${hook("dbRestore")} if updatedb ran`,
      moves: [{ host: master, what: "rename site folder", from: oldRel, to: newRel }],
    }),
    remote.length === 0
      ? step({ name: "push-site", hosts: [], does: "rsync the new site folder to every front", undo: null, skipped: "no front other than the hostmaster", moves: [] })
      : step({
          name: "push-site",
          hosts: remote,
          does: "rsync the new site folder (data dirs excluded) to every front",
          undo: "remove the copy this step created",
          moves: remote.map((host) => ({ host, what: "rsync from hostmaster", from: `${master}:${newRel}/`, to: `${newRel}/` })),
        }),
    step({
      name: "fronts-restore-data",
      hosts: all,
      does: "rename the parked data dirs into the new site folder",
      undo: "rename back into the park area",
      moves: dataMoves(all, "park", "new", "restore"),
    }),
    step({
      name: "fronts-remove-old",
      hosts: all,
      does: "remove the old site folder (refused while it holds data) — point of no return",
      undo: null,
      moves: all.map((host) => ({ host, what: "remove", from: oldRel, to: "" })),
    }),
    hookStep("maintenance-off", "maintenanceOff", null),
    step({
      name: "finish",
      hosts: [master],
      does: input.keepMasterData || local ? "release the lock (nothing parked on the hostmaster is deleted)" : "delete the hostmaster's parked stale data, release the lock",
      undo: null,
      moves: [],
    }),
  ];
  return Object.freeze({
    migration: m,
    master,
    fronts: Object.freeze([...fronts]),
    fetchFrom,
    masterIsFront: local !== undefined,
    keepMasterData: input.keepMasterData ?? false,
    steps: Object.freeze(steps),
  });
}
