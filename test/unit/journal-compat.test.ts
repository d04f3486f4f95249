// A journal written before the step table (quick-migrate 0.1.0, killed right after master-move-site)
// still reads and replays: the stored plan is accepted, and what to resume and undo comes from the
// step table, not from the stored plan's texts (which said fetch-site had no undo).
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { Journal } from "../../controller/journal.js";
import { replay } from "../../controller/journalState.js";
import { planFromDocument } from "../../controller/status.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/journal-0.1.0", import.meta.url));
const ID = "20261126T023027Z-eb32c0";

let stateDir: string | undefined;
afterEach(() => {
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

describe("a journal written by 0.1.0", () => {
  it("loads, and replays to resume at master-move-site or undo every step that ran, the fetch included", async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), "qm-compat-"));
    cpSync(FIXTURE, Journal.folder(stateDir, ID), { recursive: true });
    const { journal, document, events } = await Journal.load(stateDir, ID);
    const { plan } = planFromDocument(document, journal.dir);
    expect(plan.migration.id).toBe(ID);
    expect(plan.steps.find((s) => s.name === "fetch-site")?.undo, "what 0.1.0 wrote").toBeNull();

    const r = replay(events);
    // killed after its acknowledgement and before its step-end: the step runs again (it is idempotent)
    expect(r.resumeFrom).toBe("master-move-site");
    expect(r.pastPointOfNoReturn).toBe(false);
    expect(r.undoPlan).toEqual([
      { step: "master-move-site", hosts: ["hostmaster"] },
      { step: "fetch-site", hosts: ["web1"] },
      { step: "fronts-park-data", hosts: ["web1", "web2"] },
      { step: "master-park-data", hosts: ["hostmaster"] },
      { step: "maintenance-on", hosts: ["hostmaster"] },
      { step: "lock", hosts: ["hostmaster"] },
    ]);
    expect([...r.ran].sort()).toEqual([
      "db-dump/hook:dbDump",
      "maintenance-on/hook:maintenanceOn",
      "master-move-site/hook:deploy",
      "master-move-site/hook:updatedb",
      "master-move-site/rename-site",
    ]);
  });
});
