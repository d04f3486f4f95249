// Two hosts of one migration must not serve one root unless one is the hostmaster's front marked
// `local: true` (DESIGN §5.8): otherwise finish deletes, as the hostmaster's stale copy, data that is a
// front's live data, and renames on one front move another's. Each agent reports its root's identity
// (shared/rootId.ts); the controller reads its own root's. Pure: the reading is clusterIO's.
import { isRootId, ROOT_ID_FILE } from "../shared/rootId.js";
import type { Problem } from "../shared/siteTree.js";

/** One front as preflight saw it: its config entry and the root identity its agent reported. */
export interface FrontRoot {
  readonly name: string;
  readonly local: boolean;
  readonly rootId: string;
}

export interface MasterRoot {
  /** the hostmaster's root, as configured */
  readonly path: string;
  /** the id in its identity file; undefined when it has none (no agent ever served it) */
  readonly rootId: string | undefined;
}

/**
 * The problems of front `host`'s root. `fronts` are those that answered Hello, in config order. A
 * front that shares a root with another is reported once, at the later of the two, naming the earlier
 * (the problem is reported under `host`: its messages do not name it again).
 */
export function rootProblems(host: string, master: MasterRoot, fronts: readonly FrontRoot[]): Problem[] {
  const index = fronts.findIndex((f) => f.name === host);
  const front = fronts[index];
  if (!front) return [];
  const problem = (code: Problem["code"], message: string): Problem[] => [{ code, path: ROOT_ID_FILE, message }];
  const id = front.rootId;
  if (id === "") {
    return problem("INCOMPATIBLE", "the agent reports no identity of its root (it is older than this controller): upgrade it, so that a root shared with another host can be told");
  }
  if (!isRootId(id)) return problem("ROOT_ID_INVALID", `the agent reports a root identity that is not one: ${JSON.stringify(id.slice(0, 80))}`);
  // a root copied with its identity file (rsync -a of a whole root) looks shared: say how to tell them apart
  const copied = ` If they are two roots, one copied from the other, delete ${ROOT_ID_FILE} in the copy and restart the agent that serves it`;
  const masterId = master.rootId === undefined ? "none: no agent has served it" : master.rootId;

  if (front.local) {
    if (id === master.rootId) return [];
    return problem(
      "ROOT_NOT_LOCAL",
      `marked local: true, but its agent's root is not the hostmaster's root ${master.path} (root id ${id}; the hostmaster's ${masterId}): ` +
        `if this front is another machine, remove local: true from its entry in the controller config; if it is the hostmaster, set its agent's root to ${master.path}`,
    );
  }
  if (id === master.rootId) {
    const local = fronts.find((f) => f.local);
    return problem(
      "ROOT_SHARED",
      `shares one root with the hostmaster, ${master.path} (root id ${id}), but is not marked local: true: finish would delete its live data as the hostmaster's stale copy; ` +
        (local ? `${local.name} is already the hostmaster's front: remove this front from fronts in the controller config.` : `mark it local: true in the controller config.`) +
        copied,
    );
  }
  const earlier = fronts.slice(0, index).find((f) => f.rootId === id);
  if (earlier) {
    return problem(
      "ROOT_SHARED",
      `shares one root with ${earlier.name} (root id ${id}: one directory, or one NFS export mounted on both): a rename on one moves the other's data; ` +
        `list only one of them under fronts in the controller config (its agent does the work for both).${copied}`,
    );
  }
  return [];
}
