// Listening TCP sockets (`ss -ltnpH`) and who holds them, for the tests that check that no quick-migrate
// process opens a port of its own (Node's inspector). Other test files run at the same time and start
// agents of their own, so a socket counts when a process of this test's tree holds it, or when it is on
// the inspector's default port (9229) and was not there before.
import { execFileSync } from "node:child_process";
import fs from "node:fs";

export interface Listener {
  /** `127.0.0.1:41234`, `[::1]:9229`, `*:22` */
  readonly address: string;
  readonly pids: readonly number[];
  /** ss's line, for messages */
  readonly line: string;
}

export const INSPECTOR_DEFAULT_PORT = 9229;

/** Every listening TCP socket of this network namespace (as root: with the pids of every user's processes). */
export function listeners(): Listener[] {
  const out = execFileSync("ss", ["-ltnpH"], { encoding: "utf8" });
  return out
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((line) => {
      // State Recv-Q Send-Q Local-Address:Port Peer-Address:Port Process
      const address = line.trim().split(/\s+/)[3] ?? "";
      const pids = [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
      return { address, pids, line: line.trim() };
    });
}

/** `roots` and every process below them (children of children…), read from /proc now. */
export function processTree(roots: Iterable<number>): Set<number> {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const tree = new Set<number>();
  const todo = [...roots];
  while (todo.length > 0) {
    const pid = todo.pop() as number;
    if (tree.has(pid)) continue;
    tree.add(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/**
 * Polls the listening sockets while a test runs: a socket held by a process of `roots()`'s trees whose
 * address is not in `allowed()` (the agents' own gRPC ports), or one on port 9229 that was not there
 * at the start, is recorded in `unexpected` (ss's line). `check()` polls once more, e.g. after the run.
 */
export class PortWatch {
  readonly unexpected: string[] = [];
  polls = 0;
  private readonly inspectorPortBefore: boolean;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly roots: () => readonly number[],
    private readonly allowed: () => ReadonlySet<string>,
  ) {
    this.inspectorPortBefore = listeners().some((l) => l.address.endsWith(`:${INSPECTOR_DEFAULT_PORT}`));
  }

  start(intervalMs = 50): this {
    this.timer = setInterval(() => this.check(), intervalMs);
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
    this.check();
  }

  check(): void {
    this.polls++;
    const tree = processTree(this.roots().filter((p) => p > 0));
    const allowed = this.allowed();
    for (const l of listeners()) {
      const ours = l.pids.some((p) => tree.has(p)) && !allowed.has(l.address);
      const inspector = !this.inspectorPortBefore && l.address.endsWith(`:${INSPECTOR_DEFAULT_PORT}`);
      if ((ours || inspector) && !this.unexpected.includes(l.line)) this.unexpected.push(l.line);
    }
  }
}
