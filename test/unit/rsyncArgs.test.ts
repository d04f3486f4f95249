// The controller's rsync client speaks rsync's daemon protocol over our remote shell (`<front>::site/`);
// what it asks that shell to run is all the agent accepts before running its own daemon (DESIGN §6).
// The remote shell is sh and two cats on the descriptor 3 rsync inherits from the controller.
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { DAEMON_OVER_RSH, RSYNC_MODULE, TUNNEL_RSH, TUNNEL_RSH_SCRIPT, isDaemonOverRsh, rsyncClientArgs, rsyncRemote } from "../../shared/rsyncArgs.js";

describe("rsyncClientArgs", () => {
  it("archives without devices and specials, by number, with --delete, each data dir excluded anchored at the site folder", () => {
    const args = rsyncClientArgs({ source: "h::site/", destination: "/r/p1/sites/a.com/", dataDirs: ["files", "private/files"] });
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
      "--blocking-io",
      "--rsh",
      TUNNEL_RSH,
      "h::site/",
      "/r/p1/sites/a.com/",
    ]);
  });

  it("keeps the remote shell one argument, source/destination last, and --copy-dest before them", () => {
    const args = rsyncClientArgs({ source: "s/", destination: "d/", dataDirs: ["files"], copyDest: "/r/old" });
    expect(args[args.indexOf("--rsh") + 1]).toBe(TUNNEL_RSH);
    expect(args).toContain("--copy-dest=/r/old");
    expect(args.slice(-2)).toEqual(["s/", "d/"]);
  });

  it("the remote shell is sh with a fixed script: no Node, no path, no token", () => {
    expect(TUNNEL_RSH).toBe(`sh -c '${TUNNEL_RSH_SCRIPT}' quick-migrate-rsh`);
    expect(TUNNEL_RSH_SCRIPT).not.toMatch(/node|QM_|'/);
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

// What the installed rsync really runs as its remote shell: a `sh` first on its PATH records its argv.
describe.skipIf(!hasRsync)("with the installed rsync binary", () => {
  function capture(source: string, destination: string): string[] {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-rsyncargs-"));
    try {
      const out = path.join(tmp, "argv");
      fs.mkdirSync(path.join(tmp, "bin"));
      fs.writeFileSync(path.join(tmp, "bin", "sh"), `#!/bin/sh\nprintf '%s\\0' "$@" > '${out}'\nexit 1\n`, { mode: 0o755 });
      fs.mkdirSync(path.join(tmp, "local", "files"), { recursive: true });
      const args = rsyncClientArgs({
        source: source.replace("LOCAL", path.join(tmp, "local")),
        destination: destination.replace("LOCAL", path.join(tmp, "local")),
        dataDirs: ["files", "private/files"],
      });
      spawnSync("rsync", args, { stdio: "ignore", env: { PATH: `${path.join(tmp, "bin")}:${process.env.PATH ?? ""}` } });
      const argv = fs.readFileSync(out, "utf8").split("\0").slice(0, -1);
      // rsync split the --rsh string itself, quotes honoured: the script is one word
      expect(argv.slice(0, 4)).toEqual(["-c", TUNNEL_RSH_SCRIPT, "quick-migrate-rsh", "web1"]);
      return argv.slice(4);
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

// The script alone, as rsync runs it: bytes both ways between its stdin/stdout and fd 3; when fd 3's other
// end is closed, it ends, and its writing cat with it, even while its stdin stays open (as rsync keeps it).
describe("the remote shell", () => {
  it("carries bytes both ways and ends when the controller closes its end", async () => {
    const sh = spawn("sh", ["-c", TUNNEL_RSH_SCRIPT, "quick-migrate-rsh", "web1", ...DAEMON_OVER_RSH], { stdio: ["pipe", "pipe", "inherit", "pipe"] });
    const controllerEnd = sh.stdio[3] as Socket;
    const stdout = sh.stdout as NonNullable<typeof sh.stdout>;
    sh.stdin?.write("from rsync");
    expect(String((await once(controllerEnd, "data"))[0])).toBe("from rsync");
    controllerEnd.write("from the agent");
    expect(String((await once(stdout, "data"))[0])).toBe("from the agent");
    const started = Date.now();
    const exited = once(sh, "exit") as Promise<[number | null]>;
    // the writing cat is gone too: nothing holds fd 3's other end, so the controller's end reads its end
    const closed = once(controllerEnd, "close");
    controllerEnd.end();
    const [code] = await exited;
    expect(code).toBe(0);
    await closed;
    expect(Date.now() - started).toBeLessThan(2000);
    sh.stdin?.destroy();
  }, 10_000);
});
