// The one vocabulary of the wire: the actions a controller asks of an agent and the kinds of entry an
// agent reports, each mapped once to its proto enum. Both ends import it; neither keeps its own list.
import { Action, EntryKind } from "./generated/quickmigrate/v1/agent.js";

/** What a front's agent can be asked to do on its own root; the undo of each is an action too. */
export const FRONT_ACTIONS = ["park-data", "unpark-data", "restore-data", "unrestore-data", "remove-old-site", "remove-new-site"] as const;
export type FrontAction = (typeof FRONT_ACTIONS)[number];

/** The actions that rename data dirs (the others remove a site folder). */
export const RENAMING_ACTIONS = ["park-data", "unpark-data", "restore-data", "unrestore-data"] as const satisfies readonly FrontAction[];

const ACTION_TO_WIRE: Readonly<Record<FrontAction, Action>> = {
  "park-data": Action.ACTION_PARK_DATA,
  "unpark-data": Action.ACTION_UNPARK_DATA,
  "restore-data": Action.ACTION_RESTORE_DATA,
  "unrestore-data": Action.ACTION_UNRESTORE_DATA,
  "remove-old-site": Action.ACTION_REMOVE_OLD_SITE,
  "remove-new-site": Action.ACTION_REMOVE_NEW_SITE,
};

const ACTION_FROM_WIRE: ReadonlyMap<Action, FrontAction> = new Map(FRONT_ACTIONS.map((a) => [ACTION_TO_WIRE[a], a]));

export function actionToWire(action: FrontAction): Action {
  return ACTION_TO_WIRE[action];
}

/** undefined for a value no action has (ACTION_UNSPECIFIED, or a newer controller's). */
export function actionFromWire(action: Action): FrontAction | undefined {
  return ACTION_FROM_WIRE.get(action);
}

/** What a path on a host turned out to be. */
export type EntryKindName = "absent" | "directory" | "symlink" | "other";

const KIND_TO_WIRE: Readonly<Record<EntryKindName, EntryKind>> = {
  absent: EntryKind.ENTRY_KIND_ABSENT,
  directory: EntryKind.ENTRY_KIND_DIRECTORY,
  symlink: EntryKind.ENTRY_KIND_SYMLINK,
  other: EntryKind.ENTRY_KIND_OTHER,
};

const KIND_FROM_WIRE: ReadonlyMap<EntryKind, EntryKindName> = new Map(
  (Object.keys(KIND_TO_WIRE) as EntryKindName[]).map((k) => [KIND_TO_WIRE[k], k]),
);

export function kindToWire(kind: EntryKindName): EntryKind {
  return KIND_TO_WIRE[kind];
}

export function kindFromWire(kind: EntryKind): EntryKindName {
  return KIND_FROM_WIRE.get(kind) ?? "other";
}
