// Whether a process runs, as the tests of hooks and process groups check it.
import fs from "node:fs";

/** Whether a process runs (a zombie does not: nothing may be there to reap an orphan). */
export function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !["Z", "X"].includes(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? "");
  } catch {
    return false;
  }
}
