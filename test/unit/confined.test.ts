// Confinement to the root on real directories and real symlinks: what resolves, what is refused, and
// what counts as a placeholder or a real directory.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ConfinedPath, Root, isPlaceholder, isRealDirectory } from "../../shared/confined.js";
import { lstatOrNull } from "../../shared/fsutil.js";
import { rejection } from "../helpers/rejection.js";

let tmp: string;
let root: Root;
const r = (rel: string) => path.join(root.path, rel);

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-confined-"));
  root = new Root(path.join(tmp, "root"));
  fs.mkdirSync(r("p1/sites/a.com/files"), { recursive: true });
  fs.writeFileSync(r("p1/sites/a.com/files/x"), "x");
  fs.mkdirSync(path.join(tmp, "outside", "sites", "a.com"), { recursive: true });
});

afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});


/** The path and its lstat, as a caller of isPlaceholder has them. */
async function at(rel: string): Promise<[ConfinedPath, fs.Stats | null]> {
  const p = await root.resolve(rel);
  return [p, await lstatOrNull(p)];
}

describe("Root.resolve", () => {
  it("resolves a relative path under the root, existing or not", async () => {
    const p = await root.resolve("p1/sites/a.com/files");
    expect(p).toBe(r("p1/sites/a.com/files"));
    expect(fs.readFileSync(path.join(p, "x"), "utf8")).toBe("x");
    expect(await root.resolve("p1/sites/new.com/files")).toBe(r("p1/sites/new.com/files"));
  });

  it("does not follow the final component: a symlink there resolves to itself", async () => {
    fs.symlinkSync(path.join(tmp, "outside"), r("p1/sites/a.com/link"));
    expect(await root.resolve("p1/sites/a.com/link")).toBe(r("p1/sites/a.com/link"));
  });

  it("refuses a path under a symlinked parent leading out of the root with OUTSIDE_ROOT naming the path", async () => {
    fs.symlinkSync(path.join(tmp, "outside"), r("p2"));
    const err = await rejection(root.resolve("p2/sites/a.com"));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(err.context.path).toBe("p2/sites/a.com");
    expect(err.message).toContain("p2/sites/a.com");
    expect(err.message).toContain("resolves outside the root");
    // also below it, where nothing exists yet
    expect((await rejection(root.resolve("p2/sites/new.com/files"))).code).toBe("OUTSIDE_ROOT");
  });

  it("refuses a path that climbs out with ..", async () => {
    for (const rel of ["..", "../outside", "p1/../../outside/sites"]) {
      expect((await rejection(root.resolve(rel))).code).toBe("OUTSIDE_ROOT");
    }
  });

  it("accepts a symlinked parent that stays inside the root", async () => {
    fs.symlinkSync(r("p1"), r("p1-alias"));
    expect(await root.resolve("p1-alias/sites/a.com")).toBe(r("p1-alias/sites/a.com"));
  });

  it("never takes a dangling symlink on the way for a missing folder: it is refused, wherever it points", async () => {
    // a missing folder is judged by its nearest existing ancestor; a dangling symlink is there, and what
    // it would lead to is unknown until it resolves
    fs.symlinkSync(path.join(tmp, "outside", "not-yet"), r("p3"));
    fs.symlinkSync(r("p1/not-yet"), r("p4"));
    for (const rel of ["p3/sites/a.com", "p4/sites/a.com", "p3/x"]) {
      const err = (await root.resolve(rel).then(() => undefined, (e: unknown) => e)) as NodeJS.ErrnoException | undefined;
      expect(err?.code, rel).toBe("ENOENT");
    }
    // made meanwhile, it resolves as any symlink does
    fs.mkdirSync(path.join(tmp, "outside", "not-yet"));
    expect((await rejection(root.resolve("p3/x"))).code).toBe("OUTSIDE_ROOT");
    fs.mkdirSync(r("p1/not-yet"));
    expect(await root.resolve("p4/x")).toBe(r("p4/x"));
  });

  it("takes a file on the way for a missing folder under it: nothing can be there", async () => {
    expect(await root.resolve("p1/sites/a.com/files/x/y/z")).toBe(r("p1/sites/a.com/files/x/y/z"));
  });
});

describe("isPlaceholder", () => {
  it("is true for an empty real directory", async () => {
    fs.mkdirSync(r("p1/sites/a.com/empty"));
    expect(await isPlaceholder(...(await at("p1/sites/a.com/empty")))).toBe(true);
  });

  it("is false for a symlink to an empty directory", async () => {
    fs.mkdirSync(r("empty-target"));
    fs.symlinkSync(r("empty-target"), r("p1/sites/a.com/link"));
    expect(await isPlaceholder(...(await at("p1/sites/a.com/link")))).toBe(false);
  });

  it("is false for a non-empty directory, a file and nothing", async () => {
    fs.writeFileSync(r("p1/sites/a.com/settings.php"), "<?php\n");
    expect(await isPlaceholder(...(await at("p1/sites/a.com/files")))).toBe(false);
    expect(await isPlaceholder(...(await at("p1/sites/a.com/settings.php")))).toBe(false);
    expect(await isPlaceholder(...(await at("p1/sites/a.com/absent")))).toBe(false);
  });
});

describe("isRealDirectory", () => {
  it("is true only for a directory itself", async () => {
    fs.symlinkSync(r("p1/sites/a.com/files"), r("p1/sites/a.com/link"));
    fs.writeFileSync(r("p1/sites/a.com/settings.php"), "<?php\n");
    expect(isRealDirectory(fs.lstatSync(r("p1/sites/a.com/files")))).toBe(true);
    expect(isRealDirectory(fs.lstatSync(r("p1/sites/a.com/link")))).toBe(false);
    expect(isRealDirectory(fs.lstatSync(r("p1/sites/a.com/settings.php")))).toBe(false);
    expect(isRealDirectory(null)).toBe(false);
  });
});

describe("Root.requireRealDirectory", () => {
  const opts = { mustExist: true, purpose: "rsync" };

  it("returns the confined path of a real directory", async () => {
    expect(await root.requireRealDirectory("p1/sites/a.com", opts)).toBe(r("p1/sites/a.com"));
  });

  it("refuses a symlink, even to a directory inside the root, with OUTSIDE_ROOT", async () => {
    fs.symlinkSync(r("p1/sites/a.com"), r("p1/sites/b.com"));
    const err = await rejection(root.requireRealDirectory("p1/sites/b.com", opts));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(err.message).toBe("refusing rsync on p1/sites/b.com: it is not a real directory");
    expect(err.context.path).toBe("p1/sites/b.com");
  });

  it("refuses a file with OUTSIDE_ROOT", async () => {
    fs.writeFileSync(r("p1/sites/c.com"), "not a folder");
    expect((await rejection(root.requireRealDirectory("p1/sites/c.com", opts))).code).toBe("OUTSIDE_ROOT");
  });

  it("refuses an absent folder with PRECONDITION only when it must exist", async () => {
    const err = await rejection(root.requireRealDirectory("p1/sites/d.com", opts));
    expect(err.code).toBe("PRECONDITION");
    expect(err.message).toBe("refusing rsync on p1/sites/d.com: it does not exist");
    expect(await root.requireRealDirectory("p1/sites/d.com", { ...opts, mustExist: false })).toBe(r("p1/sites/d.com"));
  });

  it("refuses a folder under a parent leading out of the root", async () => {
    fs.symlinkSync(path.join(tmp, "outside"), r("p2"));
    expect((await rejection(root.requireRealDirectory("p2/sites/a.com", opts))).code).toBe("OUTSIDE_ROOT");
  });
});

describe("Root.openRealDirectory", () => {
  const where = async (fh: { fd: number; close(): Promise<void> }): Promise<string> => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fh.fd}`);
    } finally {
      await fh.close();
    }
  };
  const real = (rel: string) => path.join(fs.realpathSync(root.path), rel);

  it("opens a real directory: the descriptor is that directory", async () => {
    expect(await where(await root.openRealDirectory("p1/sites/a.com", { create: false, purpose: "rsync" }))).toBe(real("p1/sites/a.com"));
  });

  it("with create, makes an absent folder (mode 0700) and opens it; an existing one is opened as it is", async () => {
    expect(await where(await root.openRealDirectory("p1/sites/new.com", { create: true, purpose: "rsync" }))).toBe(real("p1/sites/new.com"));
    expect(fs.statSync(r("p1/sites/new.com")).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(r("p1/sites/new.com"))).toEqual([]);
    expect(await where(await root.openRealDirectory("p1/sites/a.com", { create: true, purpose: "rsync" }))).toBe(real("p1/sites/a.com"));
    expect(fs.statSync(r("p1/sites/a.com")).mode & 0o777).not.toBe(0o700);
  });

  it("refuses an absent folder without create with PRECONDITION, and makes nothing", async () => {
    const err = await rejection(root.openRealDirectory("p1/sites/d.com", { create: false, purpose: "rsync" }));
    expect(err.code).toBe("PRECONDITION");
    expect(fs.existsSync(r("p1/sites/d.com"))).toBe(false);
  });

  it("refuses a symlink (to a folder inside or outside the root) with OUTSIDE_ROOT, with or without create", async () => {
    fs.symlinkSync(r("p1/sites/a.com"), r("p1/sites/in.com"));
    fs.symlinkSync(path.join(tmp, "outside", "sites", "a.com"), r("p1/sites/out.com"));
    for (const rel of ["p1/sites/in.com", "p1/sites/out.com"]) {
      for (const create of [false, true]) {
        const err = await rejection(root.openRealDirectory(rel, { create, purpose: "rsync" }));
        expect(err.code).toBe("OUTSIDE_ROOT");
        expect(err.message).toBe(`refusing rsync on ${rel}: it is not a real directory`);
      }
    }
    expect(fs.readdirSync(path.join(tmp, "outside", "sites", "a.com"))).toEqual([]);
  });

  it("refuses a folder under a parent leading out of the root, and makes nothing there", async () => {
    fs.symlinkSync(path.join(tmp, "outside"), r("p2"));
    const err = await rejection(root.openRealDirectory("p2/sites/new.com", { create: true, purpose: "rsync" }));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(fs.readdirSync(path.join(tmp, "outside", "sites"))).toEqual(["a.com"]);
  });

  it("follows a symlinked parent that stays inside the root, as resolve does", async () => {
    fs.symlinkSync(r("p1"), r("p3"));
    expect(await where(await root.openRealDirectory("p3/sites/a.com", { create: false, purpose: "rsync" }))).toBe(real("p1/sites/a.com"));
  });
});

describe("Root.openDir and OpenDir", () => {
  it("holds a folder open: a name in it is reached through the descriptor, even after a symlink out is swapped in for the folder", async () => {
    const dir = await root.openDir("p1/sites", { purpose: "rename" });
    try {
      fs.renameSync(r("p1/sites"), r("p1/sites-aside"));
      fs.symlinkSync(path.join(tmp, "outside", "sites"), r("p1/sites"));
      // the entry is the held folder's a.com (now at sites-aside), never the outside one
      fs.renameSync(dir.entry("a.com"), dir.entry("b.com"));
      expect(fs.readdirSync(r("p1/sites-aside"))).toEqual(["b.com"]);
      expect(fs.readdirSync(path.join(tmp, "outside", "sites"))).toEqual(["a.com"]);
    } finally {
      await dir.close();
    }
  });

  it("makes the missing folders one name at a time (with the mode asked for), and refuses a symlink on the way without making anything past it", async () => {
    const made = await root.openDir(".quick-migrate-park/m1", { create: true, mode: 0o700, purpose: "park" });
    await made.close();
    expect(fs.statSync(r(".quick-migrate-park/m1")).mode & 0o777).toBe(0o700);
    fs.symlinkSync(path.join(tmp, "outside"), r("p1/sites/a.com/private"));
    const err = await rejection(root.openDir("p1/sites/a.com/private/files", { create: true, purpose: "restore" }));
    expect(err.code).toBe("OUTSIDE_ROOT");
    expect(fs.readdirSync(path.join(tmp, "outside"))).toEqual(["sites"]);
  });

  it("refuses a missing folder without create with PRECONDITION, and a path that climbs out with OUTSIDE_ROOT", async () => {
    expect((await rejection(root.openDir("p1/sites/none.com", { purpose: "rename" }))).code).toBe("PRECONDITION");
    expect((await rejection(root.openDir("p1/../../outside", { purpose: "rename" }))).code).toBe("OUTSIDE_ROOT");
  });

  it("opens the root itself for a top-level name, and refuses anything but a name in it", async () => {
    const { dir, name } = await root.openParent(".quick-migrate-park", { purpose: "park" });
    try {
      expect(name).toBe(".quick-migrate-park");
      fs.mkdirSync(dir.entry(name));
      expect(fs.statSync(r(".quick-migrate-park")).isDirectory()).toBe(true);
      for (const bad of ["", ".", "..", "a/b"]) expect(() => dir.entry(bad)).toThrow(/not a name in a directory/);
    } finally {
      await dir.close();
    }
  });

  it("removeTree removes a tree without following a symlink in it, and fails (IO, naming the path) on a missing one", async () => {
    fs.writeFileSync(path.join(tmp, "outside", "sites", "a.com", "keep.txt"), "outside\n");
    fs.symlinkSync(path.join(tmp, "outside", "sites", "a.com"), r("p1/sites/a.com/files/link"));
    const dir = await root.openDir("p1/sites", { purpose: "remove" });
    try {
      await dir.removeTree("a.com", "p1/sites/a.com");
      expect(fs.readdirSync(r("p1/sites"))).toEqual([]);
      expect(fs.readFileSync(path.join(tmp, "outside", "sites", "a.com", "keep.txt"), "utf8")).toBe("outside\n");
      const err = await rejection(dir.removeTree("a.com", "p1/sites/a.com"));
      expect(err.code).toBe("IO");
      expect(err.message).toMatch(/^remove: p1\/sites\/a\.com: .*a\.com.*No such file or directory/);
    } finally {
      await dir.close();
    }
  });
});

describe("a folder removed while a path through it is opened", () => {
  it("openDir with create and resolve look again, while another process removes the park folder when it is empty", async () => {
    const park = r(".quick-migrate-park");
    // as the migrations another process on the root finishes do, fifty times a second
    const racer = spawn("python3", ["-c", `import os, time\nwhile True:\n    time.sleep(0.02)\n    try: os.rmdir(${JSON.stringify(park)})\n    except OSError: pass`], { stdio: "ignore" });
    try {
      let made = 0;
      for (let i = 0; i < 400; i++) {
        const dir = await root.openDir(`.quick-migrate-park/m${i}/sub`, { create: true, purpose: "test" });
        expect(await root.resolve(`.quick-migrate-park/m${i}/sub/files`)).toBe(r(`.quick-migrate-park/m${i}/sub/files`));
        await dir.close();
        fs.rmdirSync(r(`.quick-migrate-park/m${i}/sub`));
        fs.rmdirSync(r(`.quick-migrate-park/m${i}`));
        made++;
      }
      expect(made).toBe(400);
    } finally {
      racer.kill();
    }
  });
});
