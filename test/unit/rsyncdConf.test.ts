// The rsyncd.conf the agent writes for one tunnelled rsync, pinned line by line: what confines the
// client is rsync's daemon, so its configuration is the contract (DESIGN §6).
import { describe, expect, it } from "vitest";
import { rsyncdConf } from "../../agent/rsyncdConf.js";

const base = { module: "site", path: "/proc/self/fd/3", dataDirs: ["files", "private/files"], logFile: "/tmp/qm-x/rsyncd.log", about: "fetch-site of m1" };

describe("rsyncdConf", () => {
  it("fetch-site as root: a read-only module, chrooted, data dirs excluded, only the archive options accepted", () => {
    expect(rsyncdConf({ ...base, direction: "send", chroot: true }).split("\n")).toEqual([
      "# quick-migrate agent: fetch-site of m1",
      "# written for this one call and removed after it",
      "use chroot = yes",
      "numeric ids = yes",
      "munge symlinks = no",
      "reverse lookup = no",
      "log file = /tmp/qm-x/rsyncd.log",
      "uid = 0",
      "gid = 0",
      "[site]",
      "path = /proc/self/fd/3",
      "list = no",
      "read only = yes",
      "write only = no",
      "exclude = /files/*** /private/files/***",
      "refuse options = * !r !l !p !t !g !o !numeric-ids",
      "",
    ]);
  });

  it("push-site unprivileged: a write-only module, no chroot, no user switch, setuid/setgid bits of files dropped, --delete accepted", () => {
    const lines = rsyncdConf({ ...base, direction: "receive", chroot: false }).split("\n");
    expect(lines).toContain("use chroot = no");
    expect(lines.filter((l) => /^(uid|gid) /.test(l))).toEqual([]);
    expect(lines).toContain("read only = no");
    expect(lines).toContain("write only = yes");
    expect(lines).toContain("incoming chmod = Fug-s");
    expect(lines).toContain("exclude = /files/*** /private/files/***");
    expect(lines).toContain("refuse options = * !r !l !p !t !g !o !numeric-ids !delete !delete-during");
  });

  it("a fetch accepts no delete option, a push no other than --delete (and the --delete-during it implies)", () => {
    const refuse = (direction: "send" | "receive") =>
      rsyncdConf({ ...base, direction, chroot: true })
        .split("\n")
        .find((l) => l.startsWith("refuse options"));
    expect(refuse("send")).not.toMatch(/delete/);
    expect(refuse("receive")?.match(/!delete[a-z-]*/g)).toEqual(["!delete", "!delete-during"]);
  });

  it("no data dirs: no exclude line", () => {
    expect(rsyncdConf({ ...base, dataDirs: [], direction: "send", chroot: true })).not.toMatch(/^exclude/m);
  });

  it("doubles % (rsync expands %VAR% in values)", () => {
    expect(rsyncdConf({ ...base, logFile: "/tmp/100%x/log", direction: "send", chroot: true })).toContain("log file = /tmp/100%%x/log\n");
  });

  it.each([
    ["a newline in the log file", { logFile: "/tmp/x\nuid = 0" }],
    ["a space around the path", { path: " /proc/self/fd/3" }],
    ["a data dir with a space", { dataDirs: ["files x"] }],
    ["a data dir with a wildcard", { dataDirs: ["fil*"] }],
    ["a data dir with a newline", { dataDirs: ["files\n[other]"] }],
  ])("refuses %s", (_why, patch) => {
    expect(() => rsyncdConf({ ...base, ...patch, direction: "receive", chroot: false })).toThrow(/rsyncd\.conf/);
  });

  it("keeps the header to one line", () => {
    expect(rsyncdConf({ ...base, about: "a\nuid = 0", direction: "send", chroot: false }).split("\n")[0]).toBe("# quick-migrate agent: a uid = 0");
  });
});
