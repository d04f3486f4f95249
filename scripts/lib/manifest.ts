// Snapshots of a tree (type, mode, size, content hash, link target per path) to compare hosts
// before and after a migration, file by file. Symlinks are recorded, never followed.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface ManifestEntry {
  readonly type: EntryType;
  /** permission bits including setuid/setgid/sticky: `st_mode & 0o7777` */
  readonly mode: number;
  /** files only */
  readonly size?: number;
  /** files only, hex */
  readonly sha256?: string;
  /** symlinks only, as stored in the link (not resolved) */
  readonly target?: string;
}

/**
 * Relative path (`/`-separated) → entry, in sorted order. The walked folder itself is `.`;
 * when it is a symlink the manifest is that one entry.
 */
export type Manifest = ReadonlyMap<string, ManifestEntry>;

export async function manifest(dir: string): Promise<Manifest> {
  // Sync calls: a walk of 50,000 small files is I/O-cheap, and the promise API only adds overhead.
  const entries: Array<[string, ManifestEntry]> = [];
  const walk = (abs: string, rel: string): void => {
    const entry = entryOf(abs);
    entries.push([rel, entry]);
    if (entry.type !== 'dir') return;
    for (const name of fs.readdirSync(abs)) walk(path.join(abs, name), rel === '.' ? name : `${rel}/${name}`);
  };
  walk(dir, '.');
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return new Map(entries);
}

/** Like `manifest`, but null when `p` does not exist (a dangling symlink does exist). */
export async function manifestOrAbsent(p: string): Promise<Manifest | null> {
  try {
    fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return manifest(p);
}

function entryOf(abs: string): ManifestEntry {
  const st = fs.lstatSync(abs);
  const mode = st.mode & 0o7777;
  if (st.isSymbolicLink()) return { type: 'symlink', mode, target: fs.readlinkSync(abs) };
  if (st.isDirectory()) return { type: 'dir', mode };
  if (st.isFile()) {
    const sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    return { type: 'file', mode, size: st.size, sha256 };
  }
  return { type: 'other', mode };
}

const FIELDS = ['type', 'mode', 'size', 'sha256', 'target'] as const;

/**
 * Differences from `expected` to `actual`, one human-readable line each, in path order:
 * `missing: p (file)`, `extra: p (dir)`, `changed: p: mode 0644 -> 0600`. Empty when equal.
 */
export function diffManifests(expected: Manifest, actual: Manifest): string[] {
  const keys = [...new Set([...expected.keys(), ...actual.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: string[] = [];
  for (const key of keys) {
    const a = expected.get(key);
    const b = actual.get(key);
    if (a === undefined && b !== undefined) out.push(`extra: ${key} (${b.type})`);
    else if (b === undefined && a !== undefined) out.push(`missing: ${key} (${a.type})`);
    else if (a !== undefined && b !== undefined) {
      if (a.type !== b.type) {
        out.push(`changed: ${key}: type ${a.type} -> ${b.type}`);
        continue;
      }
      for (const field of FIELDS) {
        if (a[field] !== b[field]) out.push(`changed: ${key}: ${field} ${show(field, a[field])} -> ${show(field, b[field])}`);
      }
    }
  }
  return out;
}

/** The first `max` lines of a diff, and how many more there are. */
export function summarizeDiff(diff: readonly string[], max = 10): string {
  const head = diff.slice(0, max).join('\n');
  return diff.length > max ? `${head}\n... and ${diff.length - max} more` : head;
}

/** The manifest without the given relative paths and everything below them (e.g. the data dirs). */
export function excludePaths(m: Manifest, paths: readonly string[]): Manifest {
  return new Map([...m].filter(([key]) => !paths.some((p) => key === p || key.startsWith(`${p}/`))));
}

/** How many entries of each type. */
export function countTypes(m: Manifest): Record<EntryType, number> {
  const counts: Record<EntryType, number> = { file: 0, dir: 0, symlink: 0, other: 0 };
  for (const entry of m.values()) counts[entry.type]++;
  return counts;
}

function show(field: (typeof FIELDS)[number], value: string | number | undefined): string {
  if (value === undefined) return '(none)';
  if (field === 'mode' && typeof value === 'number') return value.toString(8).padStart(4, '0');
  if (field === 'sha256' && typeof value === 'string') return value.slice(0, 12);
  return String(value);
}
