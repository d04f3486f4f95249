// The hostmaster module (deploy/aegir/hosting_quick_migrate) outside Drupal: Drupal and Aegir cannot be
// installed here, so test/php/module-test.php loads the module and its drush.inc with a stand-in of the
// Drupal/Aegir functions they call (node_load, db_select on in-memory hosting_platform/node rows,
// form_set_error, hosting_domain_allowed, node_save, ...) and prints what the form, the validation and
// the task hooks did.
import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../../scripts/lib/cluster.js";

const PHP = spawnSync("php", ["--version"]).status === 0;
if (!PHP) console.warn("php is not installed (apt-get install -y php-cli): the Aegir module tests are skipped");

type Element = { "#type": string; "#title": string; "#description": string; "#options"?: Record<string, string> | []; "#required"?: boolean; "#default_value"?: string; "#maxlength"?: number };
type Validation = { errors: Record<string, string>; values: Record<string, string> };
type Call = { fn: string; type?: string; message?: string; nid?: number; name?: string; node?: Record<string, unknown> };
type HookRun = { calls: Call[]; ref_before: Record<string, unknown>; ref_after: Record<string, unknown> };
type ModuleRun = {
  tasks: string[];
  permissions: string[];
  form: Record<string, Element>;
  form_options: [string, string][];
  form_lonely: Record<string, Element>;
  query: { tables: Record<string, string>; joins: { table: string; alias: string; on: string }[]; fields: string[]; conditions: [string, string, unknown][]; order: [string, string][] };
  validate: Record<string, Validation>;
  pre: Record<string, Record<string, string>>;
  post: Record<"success" | "success_renamed" | "rollback", HookRun>;
};

const PLATFORM_ERROR = { "parameters][target_platform": "Choose an enabled platform, other than the current one, on the site's web server." };

describe.skipIf(!PHP)("Aegir hostmaster module", () => {
  let r: ModuleRun;
  beforeAll(() => {
    const out = execFileSync("php", ["-d", "error_reporting=-1", "-d", "display_errors=stderr", path.join(repoRoot(), "test", "php", "module-test.php")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 30_000,
    });
    r = JSON.parse(out) as ModuleRun;
  });

  it("runs without PHP notices or warnings", () => {
    const res = spawnSync("php", ["-d", "error_reporting=-1", "-d", "display_errors=stderr", path.join(repoRoot(), "test", "php", "module-test.php")], { encoding: "utf8" });
    expect(res.status).toBe(0);
    expect(res.stderr).toBe("");
  });

  it("declares the site task and its permission", () => {
    expect(r.tasks).toEqual(["quick_migrate"]);
    expect(r.permissions).toEqual(["create quick_migrate task"]);
  });

  it("the form offers exactly the enabled platforms on the site's web server (cluster), other than its own, and an optional new URI", () => {
    // site 10 on platform 20 (server 2); 21 and 24 enabled on server 2; 22 locked, 25 deleted, 26 queued on server 2; 23 on server 3
    expect(r.form.target_platform?.["#type"]).toBe("radios");
    expect(r.form.target_platform?.["#required"]).toBe(true);
    // in the order of the form (by title)
    expect(r.form_options).toEqual([
      ["24", "Atrium 2"],
      ["21", "Drupal 7.99"],
    ]);
    expect(r.form.new_uri).toMatchObject({ "#type": "textfield", "#default_value": "shop.example.com", "#maxlength": 255 });
    expect(r.form.new_uri?.["#required"]).toBeUndefined();
    // the query: the platform's current revision, enabled, on the same web server, not the current one
    expect(r.query.tables).toEqual({ p: "hosting_platform", n: "node" });
    expect(r.query.joins).toEqual([{ table: "node", alias: "n", on: "n.vid = p.vid" }]);
    expect(r.query.conditions).toEqual([
      ["p.status", "=", 1],
      ["p.web_server", "=", 2],
      ["n.nid", "<>", 20],
    ]);
    // no other platform on the server: an empty list and a pointer to the normal Migrate task
    expect(r.form_lonely.target_platform?.["#options"]).toEqual([]);
    expect(r.form_lonely.target_platform?.["#description"]).toContain("Use the normal Migrate task");
  });

  it("validation refuses a missing, current, disabled, deleted, queued, unknown or other server's platform, naming the field", () => {
    for (const name of ["none", "empty", "current", "other_server", "locked", "deleted", "queued", "unknown"]) {
      expect(r.validate[name]?.errors, name).toEqual(PLATFORM_ERROR);
    }
  });

  it("validation refuses an invalid new URI or another site's, naming the field", () => {
    expect(r.validate.invalid_uri?.errors).toEqual({ "parameters][new_uri": "bad_name!.example.com is not a valid domain name." });
    expect(r.validate.taken_uri?.errors).toEqual({ "parameters][new_uri": "taken.example.com is already used by another site or alias." });
  });

  it("validation accepts a valid choice; the new URI is trimmed and lower-cased, a blank one keeps the name", () => {
    expect(r.validate.valid).toEqual({ errors: {}, values: { target_platform: "21", new_uri: "shop.example.com" } });
    expect(r.validate.valid_blank_uri).toEqual({ errors: {}, values: { target_platform: "24", new_uri: "shop.example.com" } });
    expect(r.validate.valid_new_uri).toEqual({ errors: {}, values: { target_platform: "21", new_uri: "new.example.com" } });
  });

  it("the pre-task hook passes the target platform's alias, and the new URI only when it changes", () => {
    expect(r.pre.same_uri).toEqual({ target_platform: "@platform_drupal799" });
    expect(r.pre.new_uri).toEqual({ target_platform: "@platform_drupal799", new_uri: "new.example.com" });
    expect(r.pre.other_task).toEqual({});
  });

  it("on success the site node names its new platform; renamed, its new title and context too", () => {
    const ok = r.post.success;
    expect(ok.calls.map((c) => c.fn)).toEqual(["node_save", "drush_log"]);
    expect(ok.calls[0]?.node).toMatchObject({ nid: 10, platform: "21", title: "shop.example.com", no_verify: true });
    expect(ok.calls[0]?.node?.verified).not.toBe(1);

    const renamed = r.post.success_renamed;
    expect(renamed.calls.map((c) => c.fn)).toEqual(["hosting_context_register", "node_save", "drush_log"]);
    expect(renamed.calls[0]).toMatchObject({ nid: 10, name: "new.example.com" });
    expect(renamed.calls[1]?.node).toMatchObject({ nid: 10, platform: "21", title: "new.example.com" });
  });

  it("on failure (the rollback hook) nothing in the hostmaster changes", () => {
    const rb = r.post.rollback;
    expect(rb.calls.map((c) => c.fn)).toEqual(["drush_log"]);
    expect(rb.ref_after).toEqual(rb.ref_before);
    expect(rb.ref_after).toMatchObject({ platform: 20, title: "shop.example.com" });
  });
});
