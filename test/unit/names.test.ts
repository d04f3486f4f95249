// Names that cross the wire are validated as names, never resolved as paths (DESIGN §3, §9).
import { describe, expect, it } from "vitest";
import { QmError } from "../../shared/errors.js";
import { type MigrationSpec, checkMigration } from "../../shared/migration.js";
import { MAX_DATA_DIRS, checkDataDirSet, checkMigrationId, checkPlatform, checkSiteName } from "../../shared/names.js";

/** Runs fn, expects a QmError INVALID_NAME whose message names the (possibly truncated) value. */
function expectInvalid(fn: () => unknown, value?: string): QmError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${JSON.stringify(value)} to be refused`).toBeInstanceOf(QmError);
  const err = caught as QmError;
  expect(err.code).toBe("INVALID_NAME");
  if (value !== undefined) {
    const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value;
    expect(err.message).toContain(JSON.stringify(shown));
  }
  return err;
}

const LONG = "a".repeat(10_000);

describe("checkSiteName", () => {
  it.each(["example.com", "shop.example.com", "localhost", "a-b.c0.example", "xn--bcher-kva.example", `${"a".repeat(63)}.com`])(
    "accepts %s and returns it unchanged",
    (name) => {
      expect(checkSiteName(name)).toBe(name);
    },
  );

  it.each([
    ["slash", "/"],
    ["dot-dot", ".."],
    ["traversal", "a/../b"],
    ["leading slash", "/example.com"],
    ["path with empty part", "a//b"],
    ["dot", "."],
    ["NUL", "exa\0mple.com"],
    ["newline", "example.com\n"],
    ["newline inside", "example\n.com"],
    ["leading hyphen", "-example.com"],
    ["label ending in hyphen", "example-.com"],
    ["10,000 characters", LONG],
    ["space", "example .com"],
    ["leading space", " example.com"],
    ["empty", ""],
    ["trailing dot", "example.com."],
    ["leading dot", ".example.com"],
    ["double dot", "example..com"],
    ["64-char label", `${"a".repeat(64)}.com`],
    ["underscore", "my_site.com"],
    ["port", "example.com:8080"],
    ["backslash", "a\\b"],
  ])("refuses %s", (_why, name) => {
    expectInvalid(() => checkSiteName(name), name);
  });

  it("names what was being checked in the message and context key", () => {
    const err = expectInvalid(() => checkSiteName("../x", "new site"), "../x");
    expect(err.message).toMatch(/^invalid new site /);
    expect(err.context.key).toBe("new site");
  });

  it("truncates a very long value in the message", () => {
    const err = expectInvalid(() => checkSiteName(LONG), LONG);
    expect(err.message.length).toBeLessThan(300);
  });
});

describe("checkPlatform", () => {
  it.each(["drupal-7.99", "d10-2/web", "d10/web", "drupal_10.2.3", "a", "x/y/z", "p+1@2"])("accepts %s", (p) => {
    expect(checkPlatform(p)).toBe(p);
  });

  it.each([
    ["slash", "/"],
    ["dot-dot", ".."],
    ["traversal in the middle", "a/../b"],
    ["trailing dot-dot", "a/.."],
    ["leading slash", "/var/aegir/platforms/d7"],
    ["empty part", "a//b"],
    ["trailing slash", "d7/"],
    ["dot", "."],
    ["dot part", "a/./b"],
    ["NUL", "d7\0"],
    ["newline", "d7\nweb"],
    ["trailing newline", "d7\n"],
    ["leading hyphen", "-rf"],
    ["part with leading hyphen", "d7/-web"],
    ["hidden part", "d7/.git"],
    ["10,000 characters", LONG],
    ["space", "drupal 7"],
    ["empty", ""],
    ["backslash", "a\\b"],
    ["tilde", "~/d7"],
  ])("refuses %s", (_why, p) => {
    expectInvalid(() => checkPlatform(p), p);
  });

  it("says which field was bad", () => {
    const err = expectInvalid(() => checkPlatform("..", "target platform"), "..");
    expect(err.message).toMatch(/^invalid target platform /);
    expect(err.context.key).toBe("target platform");
  });
});

describe("checkDataDirSet", () => {
  it("accepts the defaults and returns them", () => {
    const dirs = ["files", "private/files"];
    expect(checkDataDirSet(dirs)).toEqual(["files", "private/files"]);
  });

  it("accepts sibling folders that merely share a prefix", () => {
    expect(checkDataDirSet(["files", "files2", "private/files"])).toHaveLength(3);
  });

  it.each([
    [["files", "files/x"], "files/x"],
    [["files/x", "files"], "files/x"],
    [["private", "private/files"], "private/files"],
  ])("refuses nested data dirs %j", (dirs, inner) => {
    const err = expectInvalid(() => checkDataDirSet(dirs));
    expect(err.message).toContain(inner);
    expect(err.context.key).toBe("dataDirs");
  });

  it("refuses the same data dir twice", () => {
    expectInvalid(() => checkDataDirSet(["files", "files"]));
  });

  it.each(["../files", "/files", "files/", ".", "", "a//b", "fi les", "files\n"])("refuses the bad data dir %j", (d) => {
    expectInvalid(() => checkDataDirSet(["private/files", d]), d);
  });

  it("refuses an empty list: a migration must protect some data", () => {
    const err = expectInvalid(() => checkDataDirSet([]));
    expect(err.message).toContain("no data dirs");
    expect(err.context.key).toBe("dataDirs");
  });

  it(`accepts ${MAX_DATA_DIRS} data dirs and refuses one more, naming the bound`, () => {
    const dirs = Array.from({ length: MAX_DATA_DIRS + 1 }, (_, i) => `d${i}`);
    expect(checkDataDirSet(dirs.slice(0, MAX_DATA_DIRS))).toHaveLength(MAX_DATA_DIRS);
    const err = expectInvalid(() => checkDataDirSet(dirs));
    expect(err.message).toContain(`at most ${MAX_DATA_DIRS}`);
  });

  it("refuses 16,000 data dirs by their count, before any of them is looked at", () => {
    // hostile entries: were each one checked, the first would be refused as a bad name instead
    const err = expectInvalid(() => checkDataDirSet(Array.from({ length: 16_000 }, () => "../x")));
    expect(err.message).toBe(`16000 data dirs: at most ${MAX_DATA_DIRS} are allowed`);
  });

  it("finds a nested pair deep in a long path, among the most dirs allowed", () => {
    const deep = Array.from({ length: 60 }, (_, i) => `p${i}`).join("/");
    const dirs = [...Array.from({ length: MAX_DATA_DIRS - 2 }, (_, i) => `other${i}/files`), `${deep}/x`, "p0/p1/p2"];
    const err = expectInvalid(() => checkDataDirSet(dirs));
    expect(err.message).toBe(`data dir ${deep}/x lies inside data dir p0/p1/p2`);
  });
});

describe("checkMigrationId", () => {
  it.each(["m1", "20240101-120000-a1b2", "abc.DEF_12-3", "a".repeat(128)])("accepts %s", (id) => {
    expect(checkMigrationId(id)).toBe(id);
  });

  it.each([
    ["slash", "/"],
    ["dot-dot", ".."],
    ["traversal", "a/../b"],
    ["leading slash", "/m1"],
    ["path", "a//b"],
    ["dot", "."],
    ["NUL", "m1\0"],
    ["newline", "m1\n"],
    ["leading hyphen", "-m1"],
    ["10,000 characters", LONG],
    ["129 characters", "a".repeat(129)],
    ["space", "m 1"],
    ["empty", ""],
  ])("refuses %s", (_why, id) => {
    const err = expectInvalid(() => checkMigrationId(id), id);
    expect(err.message).toMatch(/migration id/);
  });
});

describe("checkMigration", () => {
  const good: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "b.com", dataDirs: ["files", "private/files"] };

  it("accepts a valid migration and returns a frozen copy", () => {
    const dirs = ["files", "private/files"];
    const m = checkMigration({ ...good, dataDirs: dirs });
    expect(m).toEqual({ ...good, dataDirs: dirs });
    expect(Object.isFrozen(m)).toBe(true);
    expect(Object.isFrozen(m.dataDirs)).toBe(true);
    dirs.push("other");
    expect(m.dataDirs).toEqual(["files", "private/files"]);
  });

  it("accepts a rename on the same platform and a move keeping the site name", () => {
    expect(checkMigration({ ...good, to: "p1" }).newSite).toBe("b.com");
    expect(checkMigration({ ...good, newSite: "a.com" }).to).toBe("p2");
  });

  it("refuses the same source and target (same platform and site)", () => {
    const err = expectInvalid(() => checkMigration({ ...good, to: "p1", newSite: "a.com" }));
    expect(err.message).toContain("p1/sites/a.com");
  });

  it.each([
    ["id", { id: "../m" }, "../m"],
    ["source platform", { from: "/etc" }, "/etc"],
    ["target platform", { to: "a/../b" }, "a/../b"],
    ["site", { site: "a/b" }, "a/b"],
    ["new site", { newSite: ".." }, ".."],
  ])("refuses a bad %s naming the value", (_field, patch, value) => {
    expectInvalid(() => checkMigration({ ...good, ...patch }), value);
  });

  it("refuses nested data dirs", () => {
    expectInvalid(() => checkMigration({ ...good, dataDirs: ["files", "files/x"] }));
  });

  it("refuses an empty data-dir list, except in an agent's record written before that was refused", () => {
    expectInvalid(() => checkMigration({ ...good, dataDirs: [] }));
    expect(checkMigration({ ...good, dataDirs: [] }, { storedRecord: true }).dataDirs).toEqual([]);
    expectInvalid(() => checkMigration({ ...good, dataDirs: ["files", "files/x"] }, { storedRecord: true }));
  });
});
