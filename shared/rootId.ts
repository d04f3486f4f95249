// The identity of a root: a random id kept in a file at the top of the root, so that two hosts that
// serve one directory (the hostmaster's own, one NFS export on two fronts) can tell. The agent makes
// the file at its start; the controller only reads its own root's. The file is made atomically and
// never overwritten: whoever made it first, that id stands. Nothing else under the root refers to it.
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { QmError, describeError } from "./errors.js";
import { fsyncDir } from "./fsutil.js";

/** At the top of the root, beside the platforms; a platform name cannot start with a dot, so none can be this. */
export const ROOT_ID_FILE = ".quick-migrate-root-id";

/** What an id may look like: the agent writes 32 hex digits; an operator may write another token. */
const ROOT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$/;

export function isRootId(value: string): boolean {
  return ROOT_ID.test(value);
}

export function rootIdPath(root: string): string {
  return join(root, ROOT_ID_FILE);
}

/** The id of `root`, or undefined when it has none yet. A symlink or a file that holds no id is refused, never replaced. */
export async function readRootId(root: string): Promise<string | undefined> {
  const file = rootIdPath(root);
  let text: string;
  try {
    // O_NOFOLLOW: a symlink here could lend this root another root's identity
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await fh.readFile("utf8");
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "ELOOP") throw invalid(file, "it is a symlink");
    throw rootIdError(err, root, "read");
  }
  const id = text.trim();
  if (!isRootId(id)) throw invalid(file, id === "" ? "it is empty" : "it does not hold an id");
  return id;
}

/**
 * The id of `root`, made first if it has none: a new random id is written to a temp file, fsynced, and
 * linked to its name, which fails if another process linked one first (then theirs is read back); the
 * folder is fsynced. An existing file is never written to.
 */
export async function ensureRootId(root: string): Promise<string> {
  const existing = await readRootId(root);
  if (existing !== undefined) return existing;
  const file = rootIdPath(root);
  const tmp = join(root, `${ROOT_ID_FILE}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const content = `${randomBytes(16).toString("hex")}\n`;
  try {
    await writeSynced(tmp, content);
    try {
      await link(tmp, file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST") {
        // another process made it first: its id stands
      } else if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP" || code === "ENOSYS") {
        // a filesystem without hard links: an exclusive create, which also never replaces a file
        await writeSynced(file, content).catch((e: unknown) => {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        });
      } else {
        throw err;
      }
    }
    await fsyncDir(root);
  } catch (err) {
    throw rootIdError(err, root, "create");
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  const id = await readRootId(root);
  if (id === undefined) throw new QmError("IO", `${file} vanished right after it was made`, { path: ROOT_ID_FILE });
  return id;
}

async function writeSynced(path: string, content: string): Promise<void> {
  const fh = await open(path, "wx", 0o644);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function invalid(file: string, why: string): QmError {
  return new QmError("ROOT_ID_INVALID", `${file}, the identity of this root, is not usable: ${why}; remove it (the agent serving this root makes a new one at its next start)`, {
    path: ROOT_ID_FILE,
  });
}

function rootIdError(err: unknown, root: string, what: "read" | "create"): QmError {
  if (err instanceof QmError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const file = rootIdPath(root);
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    const uid = process.getuid?.();
    return new QmError(
      "ROOT_NOT_WRITABLE",
      `cannot ${what} ${file}, the identity of the root: ${code}: the root ${root} must be ${what === "read" ? "readable" : "writable"} by the user the agent runs as${uid === undefined ? "" : ` (uid ${uid})`}`,
      { path: ROOT_ID_FILE },
      { cause: err },
    );
  }
  if (code === "ENOENT" || code === "ENOTDIR") {
    return new QmError("ROOT_NOT_WRITABLE", `cannot ${what} ${file}: the root ${root} does not exist or is not a directory`, { path: ROOT_ID_FILE }, { cause: err });
  }
  return new QmError("IO", `cannot ${what} ${file}: ${code ?? describeError(err)}`, { path: ROOT_ID_FILE }, { cause: err });
}
