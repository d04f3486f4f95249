// The plan is the sequence of DESIGN §4 as data: which hosts acknowledge each step and what moves where.
import { describe, expect, it } from "vitest";
import { type Plan, type PlanInput, type PlanStep, buildPlan } from "../../controller/plan.js";
import { POINT_OF_NO_RETURN, STEP_NAMES, type StepName } from "../../controller/steps.js";
import type { HookName } from "../../controller/hooks.js";
import type { MigrationSpec } from "../../shared/migration.js";

const m: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "a.com", dataDirs: ["files", "private/files"] };
const renamed: MigrationSpec = { ...m, newSite: "b.com" };
const ALL_HOOKS: ReadonlySet<HookName> = new Set(["maintenanceOn", "dbDump", "deploy", "updatedb", "maintenanceOff", "dbRestore"]);

function plan(over: Partial<PlanInput> = {}): Plan {
  return buildPlan({
    migration: m,
    master: "hostmaster",
    fronts: [
      { name: "web1", local: false },
      { name: "web2", local: false },
    ],
    hooks: ALL_HOOKS,
    ...over,
  });
}

function withLocal(over: Partial<PlanInput> = {}): Plan {
  return plan({
    fronts: [
      { name: "web1", local: false },
      { name: "self", local: true },
      { name: "web2", local: false },
    ],
    ...over,
  });
}

function stepOf(p: Plan, name: StepName): PlanStep {
  const s = p.steps.find((x) => x.name === name);
  if (!s) throw new Error(`no step ${name}`);
  return s;
}

describe("buildPlan: the sequence", () => {
  it("has the 13 steps of DESIGN §4, in order", () => {
    const names = [
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
    ];
    expect(STEP_NAMES).toEqual(names);
    expect(plan().steps.map((s) => s.name)).toEqual(names);
    expect(withLocal().steps.map((s) => s.name)).toEqual(names);
    expect(POINT_OF_NO_RETURN).toBe("fronts-remove-old");
  });

  it("preflight asks the hostmaster and every front", () => {
    expect(stepOf(plan(), "preflight").hosts).toEqual(["hostmaster", "web1", "web2"]);
    expect(stepOf(withLocal(), "preflight").hosts).toEqual(["hostmaster", "web1", "self", "web2"]);
  });

  it("lock, master-move-site and finish are the hostmaster's", () => {
    const p = plan();
    for (const name of ["lock", "master-move-site", "finish"] as const) expect(stepOf(p, name).hosts).toEqual(["hostmaster"]);
  });

  it("refuses a plan without fronts", () => {
    expect(() => plan({ fronts: [] })).toThrow(/front/);
  });

  it("is frozen", () => {
    const p = plan();
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.steps)).toBe(true);
    expect(Object.isFrozen(p.steps[0])).toBe(true);
  });
});

describe("buildPlan without a local front", () => {
  it("fetches from the first front by default", () => {
    const p = plan();
    expect(p.fetchFrom).toBe("web1");
    expect(p.masterIsFront).toBe(false);
    const fetch = stepOf(p, "fetch-site");
    expect(fetch.skipped).toBeUndefined();
    expect(fetch.hosts).toEqual(["web1"]);
    // into a staging folder in the park area, not over the hostmaster's own copy
    expect(fetch.moves.filter((x) => x.op === "copy")).toEqual([{ host: "hostmaster", what: "copy the site folder from web1", op: "copy", from: "web1:p1/sites/a.com/", to: ".quick-migrate-park/m1/.site-staging/" }]);
    expect(fetch.undo).toBe("remove the staging folder");
  });

  it("fetches from the front it is told to", () => {
    const p = plan({ fetchFrom: "web2" });
    expect(p.fetchFrom).toBe("web2");
    expect(stepOf(p, "fetch-site").hosts).toEqual(["web2"]);
    expect(stepOf(p, "fetch-site").moves.find((x) => x.op === "copy")?.from).toBe("web2:p1/sites/a.com/");
  });

  it("throws on an unknown fetch-from front, naming it", () => {
    expect(() => plan({ fetchFrom: "web9" })).toThrow(/web9/);
  });

  it("parks the hostmaster's stale copy, pushes to every front and deletes the stale copy at the end", () => {
    const p = plan();
    const park = stepOf(p, "master-park-data");
    expect(park.skipped).toBeUndefined();
    expect(park.hosts).toEqual(["hostmaster"]);
    expect(park.moves.filter((x) => x.op === "rename").map((x) => [x.host, x.from, x.to])).toEqual([
      ["hostmaster", "p1/sites/a.com/files", ".quick-migrate-park/m1/files"],
      ["hostmaster", "p1/sites/a.com/private/files", ".quick-migrate-park/m1/private%2Ffiles"],
    ]);
    expect(stepOf(p, "push-site").hosts).toEqual(["web1", "web2"]);
    expect(stepOf(p, "fronts-park-data").hosts).toEqual(["web1", "web2"]);
    expect(stepOf(p, "fronts-restore-data").hosts).toEqual(["web1", "web2"]);
    expect(stepOf(p, "fronts-remove-old").hosts).toEqual(["web1", "web2"]);
    expect(stepOf(p, "finish").does).toMatch(/delete/);
    expect(p.keepMasterData).toBe(false);
  });

  it("keeps the stale copy when told to", () => {
    const p = plan({ keepMasterData: true });
    expect(p.keepMasterData).toBe(true);
    expect(stepOf(p, "finish").does).not.toMatch(/delete the/);
  });
});

describe("buildPlan with a local front (the hostmaster is also a web front)", () => {
  it("skips master-park-data: the hostmaster's data is live and parked as a front's", () => {
    const p = withLocal();
    expect(p.masterIsFront).toBe(true);
    const s = stepOf(p, "master-park-data");
    expect(s.hosts).toEqual([]);
    expect(s.moves).toEqual([]);
    expect(s.skipped).toMatch(/self/);
  });

  it("skips fetch-site by default: the fetch-from front is the local one", () => {
    const p = withLocal();
    expect(p.fetchFrom).toBe("self");
    const s = stepOf(p, "fetch-site");
    expect(s.hosts).toEqual([]);
    expect(s.moves).toEqual([]);
    expect(s.skipped).toBeDefined();
  });

  it("still fetches from a remote front when told to", () => {
    const p = withLocal({ fetchFrom: "web2" });
    expect(stepOf(p, "fetch-site").skipped).toBeUndefined();
    expect(stepOf(p, "fetch-site").hosts).toEqual(["web2"]);
  });

  it("does not push to the local front", () => {
    const s = stepOf(withLocal(), "push-site");
    expect(s.hosts).toEqual(["web1", "web2"]);
    expect(s.moves.map((x) => x.host)).toEqual(["web1", "web2"]);
  });

  it("skips push-site when the local front is the only front", () => {
    const p = plan({ fronts: [{ name: "self", local: true }] });
    const s = stepOf(p, "push-site");
    expect(s.hosts).toEqual([]);
    expect(s.skipped).toBeDefined();
    expect(stepOf(p, "fetch-site").hosts).toEqual([]);
  });

  it("parks, restores and removes on the local front like on any other", () => {
    const p = withLocal();
    for (const name of ["fronts-park-data", "fronts-restore-data", "fronts-remove-old"] as const) {
      expect(stepOf(p, name).hosts).toEqual(["web1", "self", "web2"]);
    }
    expect(stepOf(p, "fronts-park-data").moves.filter((x) => x.host === "self" && x.op === "rename")).toHaveLength(2);
  });

  it("never deletes the hostmaster's data at finish, even without keepMasterData", () => {
    const s = stepOf(withLocal(), "finish");
    expect(s.does).not.toMatch(/delete the/);
    expect(s.does).toMatch(/nothing parked on the hostmaster is deleted/);
  });
});

describe("buildPlan hooks", () => {
  const hookSteps = [
    ["maintenance-on", "maintenanceOn"],
    ["db-dump", "dbDump"],
    ["maintenance-off", "maintenanceOff"],
  ] as const;

  it.each(hookSteps)("%s runs on the hostmaster when %s is configured", (step, hook) => {
    const s = stepOf(plan({ hooks: new Set([hook]) }), step);
    expect(s.hosts).toEqual(["hostmaster"]);
    expect(s.skipped).toBeUndefined();
    expect(s.does).toContain(hook);
  });

  it.each(hookSteps)("%s is skipped when %s is not configured", (step, hook) => {
    const others = new Set([...ALL_HOOKS].filter((h) => h !== hook));
    const s = stepOf(plan({ hooks: others }), step);
    expect(s.hosts).toEqual([]);
    expect(s.skipped).toContain(hook);
    expect(s.undo).toBeNull();
  });

  it("maintenance-on is undone by maintenanceOff", () => {
    expect(stepOf(plan(), "maintenance-on").undo).toContain("maintenanceOff");
  });

  it("master-move-site mentions unconfigured deploy/updatedb hooks as skipped", () => {
    const s = stepOf(plan({ hooks: new Set() }), "master-move-site");
    expect(s.does).toMatch(/deploy \(not configured/);
    expect(s.hosts).toEqual(["hostmaster"]);
  });
});

describe("buildPlan moves (the dry-run listing)", () => {
  it("a --new-uri migration moves the site folder to the new folder", () => {
    const p = plan({ migration: renamed });
    // two renames on a separate hostmaster: its stale copy aside, the fetched copy into the new place
    expect(stepOf(p, "master-move-site").moves).toEqual([
      { host: "hostmaster", what: "set the stale site folder aside", op: "rename", from: "p1/sites/a.com", to: ".quick-migrate-park/m1/.stale-site" },
      { host: "hostmaster", what: "put the fetched site folder in place", op: "rename", from: ".quick-migrate-park/m1/.site-staging", to: "p2/sites/b.com" },
    ]);
    // one rename where the hostmaster's copy is the live one
    expect(stepOf(withLocal({ migration: renamed }), "master-move-site").moves).toEqual([
      { host: "hostmaster", what: "rename site folder", op: "rename", from: "p1/sites/a.com", to: "p2/sites/b.com" },
    ]);
    expect(stepOf(p, "push-site").moves.map((x) => [x.host, x.from, x.to])).toEqual([
      ["web1", "hostmaster:p2/sites/b.com/", "p2/sites/b.com/"],
      ["web2", "hostmaster:p2/sites/b.com/", "p2/sites/b.com/"],
    ]);
    expect(stepOf(p, "fronts-restore-data").moves.filter((x) => x.op === "rename").every((x) => x.to.startsWith("p2/sites/b.com/"))).toBe(true);
    expect(stepOf(p, "fronts-remove-old").moves.map((x) => [x.host, x.from])).toEqual([
      ["web1", "p1/sites/a.com"],
      ["web2", "p1/sites/a.com"],
    ]);
  });

  it("per front, each data dir goes from the old folder to the park area and from there into the new folder", () => {
    const p = plan({ migration: renamed });
    const renames = (name: StepName) => stepOf(p, name).moves.filter((x) => x.op === "rename").map((x) => [x.host, x.from, x.to]);
    const park = renames("fronts-park-data");
    const restore = renames("fronts-restore-data");
    expect(park).toEqual([
      ["web1", "p1/sites/a.com/files", ".quick-migrate-park/m1/files"],
      ["web1", "p1/sites/a.com/private/files", ".quick-migrate-park/m1/private%2Ffiles"],
      ["web2", "p1/sites/a.com/files", ".quick-migrate-park/m1/files"],
      ["web2", "p1/sites/a.com/private/files", ".quick-migrate-park/m1/private%2Ffiles"],
    ]);
    expect(restore).toEqual([
      ["web1", ".quick-migrate-park/m1/files", "p2/sites/b.com/files"],
      ["web1", ".quick-migrate-park/m1/private%2Ffiles", "p2/sites/b.com/private/files"],
      ["web2", ".quick-migrate-park/m1/files", "p2/sites/b.com/files"],
      ["web2", ".quick-migrate-park/m1/private%2Ffiles", "p2/sites/b.com/private/files"],
    ]);
  });

  it("steps that change nothing on a host's root list no moves", () => {
    const p = plan();
    for (const name of ["preflight", "lock", "maintenance-on", "db-dump", "maintenance-off"] as const) {
      expect(stepOf(p, name).moves).toEqual([]);
    }
  });

  it("finish lists what it deletes on the hostmaster: the stale site folder and, unless kept, the stale data", () => {
    const removed = (p: Plan) => stepOf(p, "finish").moves.filter((x) => x.op === "remove");
    expect(removed(plan()).map((x) => [x.host, x.op, x.from])).toEqual([
      ["hostmaster", "remove", ".quick-migrate-park/m1/.stale-site"],
      ["hostmaster", "remove", ".quick-migrate-park/m1/files"],
      ["hostmaster", "remove", ".quick-migrate-park/m1/private%2Ffiles"],
    ]);
    expect(removed(plan({ keepMasterData: true })).map((x) => x.from)).toEqual([".quick-migrate-park/m1/.stale-site"]);
    expect(stepOf(withLocal(), "finish").moves).toEqual([]);
  });

  it("names the park folders each host makes and removes: before the first thing goes into the park area, after the last leaves it", () => {
    const folders = (p: Plan, name: StepName, host: string) => stepOf(p, name).moves.filter((x) => x.host === host && (x.op === "mkdir" || x.op === "rmdir")).map((x) => [x.op, x.from || x.to]);
    const made = [
      ["mkdir", ".quick-migrate-park"],
      ["mkdir", ".quick-migrate-park/m1"],
    ];
    const removed = [
      ["rmdir", ".quick-migrate-park/m1"],
      ["rmdir", ".quick-migrate-park"],
    ];
    const p = plan();
    for (const front of ["web1", "web2"]) {
      expect(folders(p, "fronts-park-data", front)).toEqual(made);
      expect(folders(p, "fronts-restore-data", front)).toEqual(removed);
    }
    expect(stepOf(p, "fronts-park-data").moves.slice(0, 3).map((x) => x.op)).toEqual(["mkdir", "mkdir", "rename"]);
    expect(stepOf(p, "fronts-restore-data").moves.slice(-2).map((x) => x.op)).toEqual(["rmdir", "rmdir"]);
    expect(folders(p, "master-park-data", "hostmaster")).toEqual(made);
    expect(folders(p, "fetch-site", "hostmaster")).toEqual(made);
    expect(folders(p, "finish", "hostmaster")).toEqual(removed);
    // kept stale data: finish still tries (they stay, as they are not empty)
    expect(folders(plan({ keepMasterData: true }), "finish", "hostmaster")).toEqual(removed);
    // a hostmaster that is a front: its park folders are its front's
    expect(folders(withLocal(), "fronts-park-data", "self")).toEqual(made);
    expect(folders(withLocal(), "fronts-restore-data", "self")).toEqual(removed);
    // the undos that empty the park area say they remove its folders
    expect(stepOf(p, "master-park-data").undo).toMatch(/remove the park folders if empty/);
    expect(stepOf(p, "fronts-park-data").undo).toMatch(/remove the park folders if empty/);
  });

  it("every move in an executed step is on a host that acknowledges it (or the hostmaster)", () => {
    for (const p of [plan(), withLocal(), plan({ migration: renamed, fetchFrom: "web2" })]) {
      for (const s of p.steps) {
        for (const mv of s.moves) expect([...s.hosts, "hostmaster"]).toContain(mv.host);
      }
    }
  });
});
