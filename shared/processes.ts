// What the kernel says of a process, for telling a lock's or a hook's holder from a process that
// reuses its pid. Linux (/proc).
import { readFileSync } from "node:fs";

/** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); undefined when it is gone. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // the command name may hold spaces and parentheses: fields are counted after its closing ")"
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}
