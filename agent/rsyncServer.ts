// The agent's end of the rsync tunnel: checks the `rsync --server …` argument list against the
// registered migration, runs that rsync server locally (no shell, cwd = root) and pipes bytes both
// ways through the gRPC stream, with backpressure in both directions. A cancelled call (the
// controller gone, the network down) ends the rsync server and the operation, never leaves it waiting.
import { once } from "node:events";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { execa } from "execa";
import { QmError } from "../shared/errors.js";
import type { RsyncFrame } from "../shared/generated/quickmigrate/v1/agent.js";
import type { Logger } from "../shared/logger.js";
import { checkMigrationId, checkStepName } from "../shared/names.js";
import { checkServerArgs } from "../shared/rsyncArgs.js";
import type { SiteOperations } from "./siteOperations.js";

type Stream = ServerDuplexStream<RsyncFrame, RsyncFrame>;

const HEARTBEAT_MS = 500;

/** What the audit line of one tunnelled rsync records, filled in as it becomes known (also when it is refused). */
export interface RsyncRun {
  migrationId?: string;
  step?: string;
  site?: string;
  exitCode?: number;
  /** bytes of rsync's stream: from the controller's rsync to ours, and back */
  bytesIn: number;
  bytesOut: number;
}

/** Serves one tunnelled rsync, recording in `run` what its audit line says. */
export async function serveRsync(call: Stream, agent: SiteOperations, rsyncBin: string, log: Logger, run: RsyncRun): Promise<void> {
  const cancelled = new AbortController();
  call.on("cancelled", () => cancelled.abort());
  // the iterator must not destroy the call when the client half-closes: its status could not be sent
  const frames = call.iterator({ destroyOnReturn: false }) as AsyncIterator<RsyncFrame>;
  const first = await frames.next();
  const start = first.done ? undefined : first.value.frame;
  if (start?.$case !== "start") throw new QmError("USAGE", "rsync tunnel: the first frame must be `start`");
  const { migrationId, step, args } = start.value;
  Object.assign(run, { migrationId, step });
  checkMigrationId(migrationId);
  checkStepName(step);
  const spec = await agent.migration(migrationId);
  run.site = spec.site;
  const invocation = checkServerArgs(args, spec, step);
  // rsync follows a symlinked site folder: it must be a real directory inside the root (the new one may not exist yet)
  await agent.checkRsyncFolder(invocation.path.replace(/\/$/, ""), invocation.sender);
  // last, once nothing else refuses it: the step order, which writes a push down as begun
  const m = await agent.forwardMigration(migrationId, step);
  // the data dirs are excluded on this side too, whatever the client asked: never sent, never deleted
  const serverArgs = [...invocation.args.slice(0, -2), ...m.dataDirs.map((d) => `--exclude=/${d}`), ...invocation.args.slice(-2)];
  const opLog = log.child({ migrationId, step });
  opLog.info({ args: serverArgs }, "rsync server start");

  const child = execa(rsyncBin, serverArgs, {
    cwd: agent.tree.root.path,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
    buffer: false,
    reject: false,
    cancelSignal: cancelled.signal,
  });

  // rsync may exit before reading all its input; a broken pipe then is not the agent's error
  child.stdin.on("error", (err) => opLog.debug({ err }, "rsync stdin closed"));

  // Progress heartbeats: while rsync takes or gives bytes, the controller hears from this end at least
  // every HEARTBEAT_MS (an empty data frame when nothing else was sent), so that its stall timer can
  // tell a slow link, where bytes still move, from a silent one.
  let moved = false;
  let sent = false;
  const heartbeat = setInterval(() => {
    if (moved && !sent && !cancelled.signal.aborted) call.write({ frame: { $case: "data", value: Buffer.alloc(0) } });
    moved = false;
    sent = false;
  }, HEARTBEAT_MS);

  const write = async (frame: RsyncFrame) => {
    if (cancelled.signal.aborted) return;
    sent = true;
    if (!call.write(frame)) await once(call, "drain", { signal: cancelled.signal }).catch(() => undefined);
  };

  const upstream = (async () => {
    try {
      for (;;) {
        const next = await frames.next();
        if (next.done || cancelled.signal.aborted) break;
        const f = next.value.frame;
        if (f?.$case !== "data") throw new QmError("USAGE", "rsync tunnel: only data frames may follow `start`");
        moved = true;
        run.bytesIn += f.value.length;
        if (!child.stdin.write(f.value)) await once(child.stdin, "drain", { signal: cancelled.signal });
      }
    } finally {
      // end of input from the controller's rsync: pass it on
      child.stdin.end();
    }
  })();
  upstream.catch(() => undefined);

  const forward = async (source: NodeJS.ReadableStream, kind: "data" | "stderr") => {
    for await (const chunk of source) {
      moved = true;
      if (kind === "data") run.bytesOut += (chunk as Buffer).length;
      await write({ frame: { $case: kind, value: chunk as Buffer } });
    }
  };
  let result;
  try {
    await Promise.all([forward(child.stdout, "data"), forward(child.stderr, "stderr")]);
    result = await child;
  } finally {
    clearInterval(heartbeat);
  }
  const code = result.exitCode ?? 255;
  run.exitCode = code;
  opLog.info({ exitCode: code, signal: result.signal, cancelled: cancelled.signal.aborted, maxRssKb: process.resourceUsage().maxRSS }, "rsync server end");
  if (!cancelled.signal.aborted) {
    await write({ frame: { $case: "exit", value: { code, signal: result.signal ?? "" } } });
    call.end();
  }
}
