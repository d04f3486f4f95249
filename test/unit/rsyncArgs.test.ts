// The controller's rsync client speaks rsync's daemon protocol over our remote shell (`<front>::site/`);
// what it asks that shell to run is all the agent accepts before running its own daemon (DESIGN §6).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { DAEMON_OVER_RSH, RSYNC_MODULE, isDaemonOverRsh, rsyncClientArgs, rsyncRemote } from "../../shared/rsyncArgs.js";

describe("rsyncClientArgs", () => {
  it("archives without devices and specials, by number, with --delete, each data dir excluded anchored at the site folder", () => {
    const args = rsyncClientArgs({ rsh: "tunnel", source: "h::site/", destination: "/r/p1/sites/a.com/", dataDirs: ["files", "private/files"] });
    expect(args).toEqual([
      "--recursive",
      "--links",
      "--perms",
      "--times",
      "--group",
      "--owner",
      "--numeric-ids",
      "--delete",
      "--exclude=/files",
      "--exclude=/private/files",
      "--rsh",
      "tunnel",
      "h::site/",
      "/r/p1/sites/a.com/",
    ]);
  });

  it("keeps the rsh command one argument and source/destination last", () => {
    const args = rsyncClientArgs({ rsh: '"/usr/bin/node" "/x y/rsh.js"', source: "s/", destination: "d/", dataDirs: ["files"] });
    expect(args[args.indexOf("--rsh") + 1]).toBe('"/usr/bin/node" "/x y/rsh.js"');
    expect(args.slice(-2)).toEqual(["s/", "d/"]);
  });

  it("names the agent's one module", () => {
    expect(rsyncRemote("web1")).toBe(`web1::${RSYNC_MODULE}/`);
  });
});

describe("isDaemonOverRsh", () => {
  it("accepts exactly `rsync --server --daemon .`", () => {
    expect(isDaemonOverRsh(["rsync", "--server", "--daemon", "."])).toBe(true);
    expect(isDaemonOverRsh(DAEMON_OVER_RSH)).toBe(true);
  });

  it.each<[string, string[]]>([
    ["the plain server of protocol 1", ["rsync", "--server", "--sender", "-logDtpre.iLsfxCIvu", ".", "p1/sites/a.com/"]],
    ["a config of the client's", ["rsync", "--server", "--daemon", "--config=/tmp/x.conf", "."]],
    ["an extra path", ["rsync", "--server", "--daemon", ".", "/etc"]],
    ["no dot", ["rsync", "--server", "--daemon"]],
    ["another program", ["sh", "--server", "--daemon", "."]],
    ["an absolute rsync", ["/usr/bin/rsync", "--server", "--daemon", "."]],
    ["an empty list", []],
  ])("refuses %s", (_why, args) => {
    expect(isDaemonOverRsh(args)).toBe(false);
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

  it("a fetch asks the remote shell for the daemon", () => {
    expect(isDaemonOverRsh(capture(rsyncRemote("web1"), "LOCAL/"))).toBe(true);
  });

  it("a push asks the remote shell for the daemon", () => {
    expect(isDaemonOverRsh(capture("LOCAL/", rsyncRemote("web1")))).toBe(true);
  });
});
