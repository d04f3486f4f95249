// The step table (DESIGN §4): every step of a migration, once. Each entry says which hosts acknowledge
// it, what it does, which paths it creates, renames or removes on which host, how it runs on a host
// and — right after — how it is undone, as a saga pushes each compensation next to its action. The
// plan and --dry-run, the runner, the undo order and the journal replay all read this table; adding a
// step means adding one entry here. A step that reaches the fronts is built from its front half in
// shared/frontSteps.ts (its name, the action it sends and the one that undoes it), which the agent reads
// too and which may not live here: the agent never loads controller code. The entries are written
// against StepIO, the runner's edge to the hosts, so this file does no I/O of its own.
import { allInOrder } from "../shared/allInOrder.js";
import { type MigrationSpec, PARK_FOLDER, newSiteRel, oldSiteRel, parkRel, placeRel, staleSiteRel, stagingRel } from "../shared/migration.js";
import type { ChangeRecord, Ledger, SiteTree } from "../shared/siteTree.js";
import { FRONT_STEP, type FrontStep } from "../shared/frontSteps.js";
import type { FrontAction } from "../shared/wire.js";
import type { HookName } from "./hooks.js";

/** The shape of one migration's plan, as far as the steps need to know it. */
export interface PlanShape {
  readonly migration: MigrationSpec;
  readonly master: string;
  /** every front, the local one (the hostmaster itself) included */
  readonly fronts: ReadonlyArray<{ readonly name: string; readonly local: boolean }>;
  /** the front whose site folder is fetched */
  readonly fetchFrom: string;
  /** the hostmaster is one of the fronts: its site folder and data are live */
  readonly masterIsFront: boolean;
  readonly keepMasterData: boolean;
  /** the hooks configured; a hook step without its hook is skipped */
  readonly hooks: ReadonlySet<HookName>;
}

/**
 * One path a step creates, renames or removes on one host (paths are relative to that host's root).
 * `mkdir` makes a folder that is missing (one already there is kept); `rmdir` removes a folder only
 * when it is empty (the park folders, which other migrations or kept data may still use).
 */
export interface Move {
  readonly host: string;
  readonly what: string;
  readonly op: "rename" | "copy" | "remove" | "mkdir" | "rmdir";
  /** empty for a mkdir */
  readonly from: string;
  /** empty for a removal (remove, rmdir) */
  readonly to: string;
}

/** What a step does on the hosts, bound to one step and one direction (forward or undo) by the runner. */
export interface StepIO {
  /** the plan being run (a fresh one, or one read back from a journal) */
  readonly plan: Omit<PlanShape, "hooks">;
  /** the hostmaster's own tree under its root */
  readonly master: SiteTree;
  /** the hostmaster's record of its parked stale data dirs, kept in the journal folder */
  masterLedger(): Ledger;
  /** the read-only checks on one host (registering the migration with its agent unless dry-running) */
  preflight(host: string): Promise<string>;
  /** takes the site lock and opens the journal (or says the lock was taken over, when resuming) */
  lock(): Promise<string>;
  unlock(): Promise<string>;
  /** asks a front's agent for one action of this step */
  apply(host: string, action: FrontAction): Promise<ChangeRecord[]>;
  /** runs a hostmaster hook, journaling its intent first; when undoing, with the values as they were before the migration */
  hook(name: HookName): Promise<string>;
  /** journals a part of this step before it happens, so that its undo knows it did */
  intent(part: string): Promise<void>;
  /** whether a part of this step was journaled as begun (read from the journal, so it survives a crash) */
  began(part: string): boolean;
  /** real rsync through the agent channel: a front's folder into one of the hostmaster's, or back */
  rsync(host: string, direction: "fetch" | "push", remoteRel: string, localRel: string, copyDestRel?: string): Promise<void>;
}

export interface StepDef<N extends string = string> {
  readonly name: N;
  /** the hosts that must acknowledge it, or why this plan skips it */
  hosts(p: PlanShape): readonly string[] | { readonly skipped: string };
  does(p: PlanShape): string;
  moves(p: PlanShape): Move[];
  /** runs the step's part on one of its hosts; returns the acknowledgement's one line */
  run(io: StepIO, host: string): Promise<string>;
  /** how a rollback puts back what `run` did on a host; absent: the step has no undo */
  readonly undo?: {
    does(p: PlanShape): string;
    run(io: StepIO, host: string): Promise<string>;
  };
  /** from this step on there is no rollback, only retry */
  readonly pointOfNoReturn?: true;
}

// ---- what the entries share ---------------------------------------------------------------------

const fronts = (p: PlanShape): string[] => p.fronts.map((f) => f.name);
const remoteFronts = (p: PlanShape): string[] => p.fronts.filter((f) => !f.local).map((f) => f.name);
const localFront = (p: PlanShape): string | undefined => p.fronts.find((f) => f.local)?.name;
/** fetch-site runs: the hostmaster's copy is not the live one (or the operator asked for another front's) */
export const fetches = (p: Pick<PlanShape, "fronts" | "fetchFrom">): boolean => !p.fronts.some((f) => f.name === p.fetchFrom && f.local);

const hookText = (p: PlanShape, h: HookName): string => (p.hooks.has(h) ? `hook ${h}` : `hook ${h} (not configured: skipped)`);

/**
 * The park area and this migration's folder in it: made (when missing) before anything goes into the
 * park area (SiteTree.makeParkFolder), removed when empty once it is emptied (removeEmptyParkFolders).
 */
function parkFolderMoves(p: PlanShape, host: string, op: "mkdir" | "rmdir"): Move[] {
  const folders = [
    { what: "the park area", rel: PARK_FOLDER },
    { what: "this migration's park folder", rel: parkRel(p.migration.id) },
  ];
  return op === "mkdir"
    ? folders.map((f) => ({ host, what: `make ${f.what} (if missing)`, op, from: "", to: f.rel }))
    : folders.reverse().map((f) => ({ host, what: `remove ${f.what} (if empty)`, op, from: f.rel, to: "" }));
}

/** Each data dir renamed on each host; into the park area after making its folders, out of it before removing them. */
function dataMoves(p: PlanShape, hosts: readonly string[], from: "old" | "park", to: "park" | "new", verb: string): Move[] {
  const m = p.migration;
  return hosts.flatMap((host) => [
    ...(to === "park" ? parkFolderMoves(p, host, "mkdir") : []),
    ...m.dataDirs.map((d): Move => ({ host, what: `${verb} ${d}`, op: "rename", from: placeRel(m, d, from), to: placeRel(m, d, to) })),
    ...(from === "park" ? parkFolderMoves(p, host, "rmdir") : []),
  ]);
}

/** One line on what an action did, for the acknowledgement. */
export function summarize(changes: ReadonlyArray<Pick<ChangeRecord, "dataDir" | "result" | "from" | "linkTarget">>): string {
  if (changes.length === 0) return "nothing to do";
  return changes.map((c) => `${c.dataDir || c.from}: ${c.result}${c.linkTarget ? ` (symlink → ${c.linkTarget})` : ""}`).join(", ");
}

/** A step that is one hostmaster hook; skipped when the hook is not configured. */
function hookStep<const N extends string>(name: N, hook: HookName, undoHook?: HookName): StepDef<N> {
  return {
    name,
    hosts: (p) => (p.hooks.has(hook) ? [p.master] : { skipped: `hook ${hook} not configured` }),
    does: (p) => hookText(p, hook),
    moves: () => [],
    run: (io) => io.hook(hook),
    ...(undoHook ? { undo: { does: (p: PlanShape) => hookText(p, undoHook), run: (io: StepIO) => io.hook(undoHook) } } : {}),
  };
}

/**
 * A step that is one agent action on every front (the hostmaster's own front included): its name, the
 * action it sends and the one that undoes it come from its front entry (shared/frontSteps.ts), and it
 * has an undo exactly when that entry has one.
 */
function frontsStep<const F extends FrontStep & { readonly forward: FrontAction }>(front: F, def: Pick<StepDef, "does" | "moves"> & { undoDoes?: string }): StepDef<F["step"]> {
  const undoAction = front.undo;
  return {
    name: front.step,
    hosts: fronts,
    ...def,
    run: async (io, host) => summarize(await io.apply(host, front.forward)),
    ...(undoAction ? { undo: { does: () => def.undoDoes ?? "", run: async (io: StepIO, host: string) => summarize(await io.apply(host, undoAction)) } } : {}),
  };
}

/** Keeps an entry's name as a literal type, so that StepName is read off the table. */
function step<const N extends string>(def: StepDef<N>): StepDef<N> {
  return def;
}

// ---- the table ----------------------------------------------------------------------------------

const preflight = step({
  name: "preflight",
  hosts: (p) => [p.master, ...fronts(p)],
  does: () => "read-only checks on every host",
  moves: () => [],
  run: (io, host) => io.preflight(host),
});

const lock = step({
  name: "lock",
  hosts: (p) => [p.master],
  does: () => "take the per-site lock, journal the plan",
  moves: () => [],
  run: (io) => io.lock(),
  undo: { does: () => "release the lock", run: (io) => io.unlock() },
});

const masterParkData = step({
  name: "master-park-data",
  hosts: (p) => (p.masterIsFront ? { skipped: `the hostmaster is front ${localFront(p)}: its data is live and parked as a front's` } : [p.master]),
  does: () => "park the hostmaster's stale data dirs",
  moves: (p) => dataMoves(p, [p.master], "old", "park", "park"),
  run: async (io) => summarize(await io.master.moveData(io.plan.migration, io.masterLedger(), "old", "park")),
  undo: {
    does: () => "rename each back, then remove the park folders if empty",
    run: async (io) => summarize(await io.master.moveData(io.plan.migration, io.masterLedger(), "park", "old")),
  },
});

const fetchSite = step({
  name: FRONT_STEP.fetchSite.step,
  // into a staging folder: the hostmaster's own copy stays as it was until master-move-site
  hosts: (p) => (fetches(p) ? [p.fetchFrom] : { skipped: `front ${p.fetchFrom} is the hostmaster itself` }),
  does: () => "rsync the site folder (data dirs excluded) into a staging folder on the hostmaster",
  moves: (p) => [
    // the staging folder's parent: made here too, as master-park-data makes it only when it has something to park
    ...parkFolderMoves(p, p.master, "mkdir"),
    { host: p.master, what: `copy the site folder from ${p.fetchFrom}`, op: "copy", from: `${p.fetchFrom}:${oldSiteRel(p.migration)}/`, to: `${stagingRel(p.migration)}/` },
  ],
  run: async (io, host) => {
    const m = io.plan.migration;
    await io.rsync(host, FRONT_STEP.fetchSite.rsync, oldSiteRel(m), stagingRel(m), oldSiteRel(m));
    return `site folder fetched from ${host}`;
  },
  undo: {
    does: () => "remove the staging folder",
    run: async (io) => summarize(await io.master.removeSiteFolder(stagingRel(io.plan.migration), io.plan.migration.dataDirs)),
  },
});

const masterMoveSite = step({
  name: "master-move-site",
  hosts: (p) => [p.master],
  does: (p) =>
    `${fetches(p) ? "set the hostmaster's site folder aside and put the fetched one in its new place" : "rename the site folder into the target platform"}, then ${hookText(p, "deploy")} and ${hookText(p, "updatedb")}`,
  moves: (p) => {
    const m = p.migration;
    return fetches(p)
      ? [
          { host: p.master, what: "set the stale site folder aside", op: "rename", from: oldSiteRel(m), to: staleSiteRel(m) },
          { host: p.master, what: "put the fetched site folder in place", op: "rename", from: stagingRel(m), to: newSiteRel(m) },
        ]
      : [{ host: p.master, what: "rename site folder", op: "rename", from: oldSiteRel(m), to: newSiteRel(m) }];
  },
  run: async (io) => {
    const m = io.plan.migration;
    await io.intent("rename-site");
    if (fetches(io.plan)) {
      await io.master.moveSiteFolder(oldSiteRel(m), staleSiteRel(m));
      await io.master.moveSiteFolder(stagingRel(m), newSiteRel(m));
    } else {
      await io.master.moveSiteFolder(oldSiteRel(m), newSiteRel(m));
    }
    return [`${oldSiteRel(m)} → ${newSiteRel(m)}`, await io.hook("deploy"), await io.hook("updatedb")].join("; ");
  },
  undo: {
    does: (p) => `${hookText(p, "dbRestore")} if updatedb ran, rename back, ${hookText(p, "deploy")} for the old platform`,
    run: async (io) => {
      const m = io.plan.migration;
      const parts: string[] = [];
      if (io.began("hook:updatedb")) parts.push(await io.hook("dbRestore"));
      if (fetches(io.plan)) {
        await io.master.moveSiteFolder(newSiteRel(m), stagingRel(m));
        await io.master.moveSiteFolder(staleSiteRel(m), oldSiteRel(m));
      } else {
        await io.master.moveSiteFolder(newSiteRel(m), oldSiteRel(m));
      }
      parts.push(`${newSiteRel(m)} → ${oldSiteRel(m)}`);
      if (io.began("rename-site")) parts.push(await io.hook("deploy"));
      return parts.join("; ");
    },
  },
});

const pushSite = step({
  name: FRONT_STEP.pushSite.step,
  hosts: (p) => (remoteFronts(p).length > 0 ? remoteFronts(p) : { skipped: "no front other than the hostmaster" }),
  does: () => "rsync the new site folder (data dirs excluded) to every front",
  moves: (p) => remoteFronts(p).map((host): Move => ({ host, what: "copy the new site folder from the hostmaster", op: "copy", from: `${p.master}:${newSiteRel(p.migration)}/`, to: `${newSiteRel(p.migration)}/` })),
  run: async (io, host) => {
    const m = io.plan.migration;
    await io.rsync(host, FRONT_STEP.pushSite.rsync, newSiteRel(m), newSiteRel(m));
    return `site folder pushed to ${host}`;
  },
  undo: {
    does: () => "remove the copy this step created",
    run: async (io, host) => summarize(await io.apply(host, FRONT_STEP.pushSite.undo)),
  },
});

const finish = step({
  name: "finish",
  hosts: (p) => [p.master],
  does: (p) => {
    const stale = fetches(p) ? "remove the hostmaster's stale site folder (its code only), " : "";
    if (p.masterIsFront) return `${stale}release the lock (nothing parked on the hostmaster is deleted)`;
    if (p.keepMasterData) return `${stale}release the lock (nothing parked on the hostmaster is deleted: its stale data dirs stay in ${parkRel(p.migration.id)})`;
    return `${stale}delete the hostmaster's parked stale data dirs, release the lock`;
  },
  moves: (p) => {
    const m = p.migration;
    const stale: Move[] = fetches(p) ? [{ host: p.master, what: "delete the stale site folder", op: "remove", from: staleSiteRel(m), to: "" }] : [];
    const discards = !p.masterIsFront && !p.keepMasterData;
    const data: Move[] = discards ? m.dataDirs.map((d) => ({ host: p.master, what: `delete the stale ${d}`, op: "remove", from: placeRel(m, d, "park"), to: "" })) : [];
    // emptied of the stale site folder or the stale data: the park folders go too (kept data keeps them)
    return [...stale, ...data, ...(fetches(p) || discards ? parkFolderMoves(p, p.master, "rmdir") : [])];
  },
  run: async (io) => {
    const m = io.plan.migration;
    const fetched = fetches(io.plan);
    const discards = !io.plan.masterIsFront && !io.plan.keepMasterData;
    // the stale site folder holds no data dirs (they were parked): a guarded removal. It and the parked
    // stale data are apart in the park folder: removed side by side, each let finish before the step
    // answers (a failure of one is thrown once the other is over, so a retry of the step never overlaps
    // it); then nothing of this migration is left in the park area (on a hostmaster that is a front, no
    // other step empties it)
    const none = Promise.resolve<ChangeRecord[]>([]);
    const [stale, discarded] = await allInOrder([
      fetched ? io.master.removeSiteFolder(staleSiteRel(m), m.dataDirs) : none,
      discards ? io.master.discardParked(m, io.masterLedger()) : none,
    ]);
    const parts: string[] = [];
    if (fetched) {
      parts.push(`stale site folder ${summarize(stale)}`);
      await io.master.removeEmptyParkFolders(m.id);
    }
    if (!io.plan.masterIsFront) {
      parts.push(io.plan.keepMasterData ? `hostmaster's stale data kept in ${parkRel(m.id)}` : `${discarded.length} stale data dir(s) deleted on the hostmaster`);
    }
    parts.push(await io.unlock());
    return parts.join("; ");
  },
});

/** Every step, in the order it runs. A rollback undoes them in the reverse order. */
export const STEPS = [
  preflight,
  lock,
  hookStep("maintenance-on", "maintenanceOn", "maintenanceOff"),
  hookStep("db-dump", "dbDump"),
  masterParkData,
  frontsStep(FRONT_STEP.parkData, {
    does: () => "rename each data dir into the park area",
    moves: (p) => dataMoves(p, fronts(p), "old", "park", "park"),
    undoDoes: "rename back into the old site folder, then remove the park folders if empty",
  }),
  fetchSite,
  masterMoveSite,
  pushSite,
  frontsStep(FRONT_STEP.restoreData, {
    does: () => "rename the parked data dirs into the new site folder (an empty placeholder directory there is removed first)",
    moves: (p) => dataMoves(p, fronts(p), "park", "new", "restore"),
    undoDoes: "rename back into the park area (its folders made again if missing)",
  }),
  {
    ...frontsStep(FRONT_STEP.removeOld, {
      does: () => "remove the old site folder (refused while it holds data) — point of no return",
      // on the hostmaster's own front the old folder was moved by master-move-site: nothing is left to remove
      moves: (p) => remoteFronts(p).map((host): Move => ({ host, what: "remove the old site folder", op: "remove", from: oldSiteRel(p.migration), to: "" })),
    }),
    pointOfNoReturn: true,
  },
  hookStep("maintenance-off", "maintenanceOff"),
  finish,
] as const;

export type StepName = (typeof STEPS)[number]["name"];

export const STEP_NAMES: readonly StepName[] = Object.freeze(STEPS.map((s) => s.name));

export function stepDef(name: string): StepDef | undefined {
  return STEPS.find((s) => s.name === name);
}

export function isStepName(s: string | undefined): s is StepName {
  return s !== undefined && (STEP_NAMES as readonly string[]).includes(s);
}

/** From this step on there is no rollback, only retry (roll forward). */
export const POINT_OF_NO_RETURN = STEP_NAMES[STEPS.findIndex((s) => "pointOfNoReturn" in s && s.pointOfNoReturn)] as StepName;

/** Steps that have an undo, in the order they run. */
export const UNDOABLE: ReadonlySet<StepName> = new Set(STEP_NAMES.filter((n) => stepDef(n)?.undo));

export function isPastPointOfNoReturn(step: StepName): boolean {
  return STEP_NAMES.indexOf(step) >= STEP_NAMES.indexOf(POINT_OF_NO_RETURN);
}
