// The agent runs an rsync server only for the exact argument list quick-migrate's own client asks for (DESIGN §6).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { QmError } from "../../shared/errors.js";
import type { MigrationSpec } from "../../shared/migration.js";
import { checkServerArgs, rsyncClientArgs } from "../../shared/rsyncArgs.js";

const m: MigrationSpec = { id: "m1", from: "p1", site: "a.com", to: "p2", newSite: "b.com", dataDirs: ["files"] };
const CAPS = "-logDtpre.iLsfxCIvu";
const FETCH = ["rsync", "--server", "--sender", CAPS, ".", "p1/sites/a.com/"];
const PUSH = ["rsync", "--server", CAPS, "--delete", ".", "p2/sites/b.com/"];

function expectRefused(args: readonly string[], step: string): QmError {
  let caught: unknown;
  try {
    checkServerArgs(args, m, step);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${JSON.stringify(args)} to be refused for ${step}`).toBeInstanceOf(QmError);
  const err = caught as QmError;
  expect(err.code).toBe("TUNNEL_REFUSED");
  expect(err.message).toContain(step);
  expect(err.message).toContain("m1");
  return err;
}

describe("checkServerArgs accepts what rsync 3.x asks for", () => {
  it("fetch-site: the sender on the old site folder", () => {
    expect(checkServerArgs(FETCH, m, "fetch-site")).toEqual({
      args: ["--server", "--sender", CAPS, ".", "p1/sites/a.com/"],
      sender: true,
      path: "p1/sites/a.com/",
    });
  });

  it("push-site: the receiver on the new site folder, with --delete", () => {
    expect(checkServerArgs(PUSH, m, "push-site")).toEqual({
      args: ["--server", CAPS, "--delete", ".", "p2/sites/b.com/"],
      sender: false,
      path: "p2/sites/b.com/",
    });
  });

  it("push-site without --delete", () => {
    expect(checkServerArgs(["rsync", "--server", CAPS, ".", "p2/sites/b.com/"], m, "push-site").sender).toBe(false);
  });

  it.each(["-logDtpre.iLsfxC", "-logDtpre.iLs", "-logDtpre.", "-logDtpr"])("older capability strings (%s)", (short) => {
    expect(checkServerArgs(["rsync", "--server", "--sender", short, ".", "p1/sites/a.com/"], m, "fetch-site").sender).toBe(true);
  });
});

describe("checkServerArgs refuses", () => {
  it.each<[string, string[], string]>([
    ["-e as its own option on push", ["rsync", "--server", CAPS, "-e", "sh", ".", "p2/sites/b.com/"], "push-site"],
    ["-e instead of the short options", ["rsync", "--server", "-e", ".", "p2/sites/b.com/"], "push-site"],
    ["--rsh=x on push", ["rsync", "--server", CAPS, "--rsh=x", ".", "p2/sites/b.com/"], "push-site"],
    ["--rsh=x before the short options", ["rsync", "--server", "--rsh=x", CAPS, ".", "p2/sites/b.com/"], "push-site"],
    ["--rsh=x on fetch", ["rsync", "--server", "--sender", CAPS, "--rsh=x", ".", "p1/sites/a.com/"], "fetch-site"],
    ["--remove-source-files on fetch", ["rsync", "--server", "--sender", CAPS, "--remove-source-files", ".", "p1/sites/a.com/"], "fetch-site"],
    ["--remove-source-files on push", ["rsync", "--server", CAPS, "--remove-source-files", ".", "p2/sites/b.com/"], "push-site"],
    ["--rsync-path", ["rsync", "--server", CAPS, "--rsync-path=sh", ".", "p2/sites/b.com/"], "push-site"],
    ["an extra short option letter (z)", ["rsync", "--server", "-logDtprze.iLsfxCIvu", ".", "p2/sites/b.com/"], "push-site"],
    ["a second short option word", ["rsync", "--server", CAPS, "-L", ".", "p2/sites/b.com/"], "push-site"],
    ["no short options", ["rsync", "--server", ".", "p2/sites/b.com/"], "push-site"],
    ["an extra path on fetch", ["rsync", "--server", "--sender", CAPS, ".", "p1/sites/a.com/", "/etc/"], "fetch-site"],
    ["an extra path on push", ["rsync", "--server", CAPS, "--delete", ".", "p2/sites/b.com/", "p2/sites/b.com/"], "push-site"],
    ["no path", ["rsync", "--server", CAPS, "--delete", "."], "push-site"],
    ["no dot", ["rsync", "--server", CAPS, "--delete", "p2/sites/b.com/"], "push-site"],
    ["the old path on push", ["rsync", "--server", CAPS, "--delete", ".", "p1/sites/a.com/"], "push-site"],
    ["the new path on fetch", ["rsync", "--server", "--sender", CAPS, ".", "p2/sites/b.com/"], "fetch-site"],
    ["../x on fetch", ["rsync", "--server", "--sender", CAPS, ".", "../x"], "fetch-site"],
    ["../x on push", ["rsync", "--server", CAPS, ".", "../x"], "push-site"],
    ["a path escaping the folder", ["rsync", "--server", CAPS, ".", "p2/sites/b.com/../../../etc/"], "push-site"],
    ["an absolute path", ["rsync", "--server", CAPS, ".", "/var/aegir/platforms/p2/sites/b.com/"], "push-site"],
    ["an absolute path on fetch", ["rsync", "--server", "--sender", CAPS, ".", "/etc/"], "fetch-site"],
    ["a sub folder of the site", ["rsync", "--server", "--sender", CAPS, ".", "p1/sites/a.com/files/"], "fetch-site"],
    ["the platform", ["rsync", "--server", CAPS, ".", "p2/"], "push-site"],
    ["missing --server", ["rsync", CAPS, ".", "p2/sites/b.com/"], "push-site"],
    ["--server not second", ["rsync", "--sender", "--server", CAPS, ".", "p1/sites/a.com/"], "fetch-site"],
    ["another program", ["sh", "--server", CAPS, ".", "p2/sites/b.com/"], "push-site"],
    ["an empty list", [], "push-site"],
    ["--sender on push", ["rsync", "--server", "--sender", CAPS, ".", "p2/sites/b.com/"], "push-site"],
    ["no --sender on fetch", ["rsync", "--server", CAPS, ".", "p1/sites/a.com/"], "fetch-site"],
    ["--delete with --sender", ["rsync", "--server", "--sender", CAPS, "--delete", ".", "p1/sites/a.com/"], "fetch-site"],
    ["another step name (fetch args)", FETCH, "master-move-site"],
    ["another step name (push args)", PUSH, "fronts-restore-data"],
    ["an empty step name", PUSH, ""],
  ])("%s", (_why, args, step) => {
    expectRefused(args, step);
  });

  it("names the step in the error context", () => {
    const err = expectRefused(["rsync", "--server", "--sender", CAPS, ".", "p2/sites/b.com/"], "fetch-site");
    expect(err.context.step).toBe("fetch-site");
  });
});

describe("rsyncClientArgs", () => {
  it("archives with --delete and excludes each data dir anchored at the site folder", () => {
    const args = rsyncClientArgs({ rsh: "tunnel", source: "h:p1/sites/a.com/", destination: "/r/p1/sites/a.com/", dataDirs: ["files", "private/files"] });
    expect(args).toEqual([
      "--archive",
      "--delete",
      "--exclude=/files",
      "--exclude=/private/files",
      "--rsh",
      "tunnel",
      "h:p1/sites/a.com/",
      "/r/p1/sites/a.com/",
    ]);
  });

  it("keeps the rsh command one argument and source/destination last", () => {
    const args = rsyncClientArgs({ rsh: '"/usr/bin/node" "/x y/rsh.js"', source: "s/", destination: "d/", dataDirs: ["files"] });
    expect(args[args.indexOf("--rsh") + 1]).toBe('"/usr/bin/node" "/x y/rsh.js"');
    expect(args.slice(-2)).toEqual(["s/", "d/"]);
  });
});

const hasRsync = spawnSync("rsync", ["--version"]).status === 0;

// What the installed rsync really asks its remote shell for, fed to the agent's check.
describe.skipIf(!hasRsync)("with the installed rsync binary", () => {
  function capture(source: string, destination: string): string[] {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-rsyncargs-"));
    try {
      const out = path.join(tmp, "argv.json");
      const rsh = path.join(tmp, "rsh.mjs");
      fs.writeFileSync(rsh, `import { writeFileSync } from "node:fs";\nwriteFileSync(${JSON.stringify(out)}, JSON.stringify(process.argv.slice(2)));\nprocess.exit(1);\n`);
      fs.mkdirSync(path.join(tmp, "local", "files"), { recursive: true });
      const args = rsyncClientArgs({
        rsh: `"${process.execPath}" "${rsh}"`,
        source: source.replace("LOCAL", path.join(tmp, "local")),
        destination: destination.replace("LOCAL", path.join(tmp, "local")),
        dataDirs: ["files", "private/files"],
      });
      spawnSync("rsync", args, { stdio: "ignore" });
      const argv = JSON.parse(fs.readFileSync(out, "utf8")) as string[];
      expect(argv[0]).toBe("web1");
      return argv.slice(1);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  it("a fetch passes checkServerArgs for fetch-site and not for push-site", () => {
    const argv = capture("web1:p1/sites/a.com/", "LOCAL/");
    expect(checkServerArgs(argv, m, "fetch-site").sender).toBe(true);
    expectRefused(argv, "push-site");
  });

  it("a push passes checkServerArgs for push-site and not for fetch-site", () => {
    const argv = capture("LOCAL/", "web1:p2/sites/b.com/");
    expect(argv).toContain("--delete");
    expect(checkServerArgs(argv, m, "push-site").sender).toBe(false);
    expectRefused(argv, "fetch-site");
  });
});
