// A front behind a link the test controls: a network namespace and a veth pair made with iproute2,
// so that a test can take the link down with no FIN and no RST, as a pulled cable or a dead machine
// would, or slow it down (tc tbf). (tc netem would do too, but kernels without sch_netem — this CI's
// among them — refuse it; taking the front's end of the veth down needs nothing but iproute2.)
// Needs root; everything made here is removed by remove().
import { execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";

export interface TestLink {
  /** the namespace the front's agent runs in */
  readonly ns: string;
  /** the host end of the veth pair */
  readonly hostIf: string;
  /** the front's address inside the namespace */
  readonly address: string;
  /** the commands (argument arrays) that break and mend the link, for hooks and for the test itself */
  readonly cut: string[];
  readonly mend: string[];
  /** limits the host→front direction to `rate` (e.g. "2mbit") */
  slow(rate: string): string[];
  /** limits the front→host direction to `rate`: what the front sends, as a fetch from it */
  slowFromFront(rate: string): string[];
  /** lifts the limit that slow ("host") or slowFromFront ("front") put on */
  unslow(side: "host" | "front"): string[];
  remove(): void;
}

const run = (argv: string[]): void => {
  execFileSync(argv[0] as string, argv.slice(1), { stdio: "pipe" });
};

/** Why namespaced tests cannot run here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  try {
    run(["ip", "-V"]);
    run(["tc", "-V"]);
  } catch {
    return "needs iproute2 (ip, tc)";
  }
  return undefined;
}

export function makeLink(): TestLink {
  const id = randomInt(1000, 9999);
  const subnet = randomInt(1, 250);
  const ns = `qmtest${id}`;
  const hostIf = `qmh${id}`;
  const nsIf = `qmf${id}`;
  const hostAddress = `10.231.${subnet}.1`;
  const address = `10.231.${subnet}.2`;
  run(["ip", "netns", "add", ns]);
  try {
    run(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    run(["ip", "link", "set", nsIf, "netns", ns]);
    run(["ip", "addr", "add", `${hostAddress}/30`, "dev", hostIf]);
    run(["ip", "link", "set", hostIf, "up"]);
    run(["ip", "netns", "exec", ns, "ip", "addr", "add", `${address}/30`, "dev", nsIf]);
    run(["ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up"]);
    run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
  } catch (err) {
    run(["ip", "netns", "del", ns]);
    throw err;
  }
  return {
    ns,
    hostIf,
    address,
    // the front's end goes down: packets to it are lost without a word, its own never leave
    cut: ["ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "down"],
    mend: ["ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up"],
    slow: (rate) => ["tc", "qdisc", "add", "dev", hostIf, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"],
    slowFromFront: (rate) => ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", nsIf, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"],
    unslow: (side) => (side === "host" ? ["tc", "qdisc", "del", "dev", hostIf, "root"] : ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", nsIf, "root"]),
    remove: () => {
      try {
        run(["ip", "netns", "del", ns]); // takes the veth pair with it
      } catch {
        // already gone
      }
      try {
        run(["ip", "link", "del", hostIf]);
      } catch {
        // already gone with the namespace
      }
    },
  };
}
