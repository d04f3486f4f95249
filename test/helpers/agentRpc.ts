// Driving one agent directly over plaintext loopback with the generated AgentClient, as a hostile or
// buggy controller could: every unary RPC and the Rsync stream, with the outcome (status code, the
// quick-migrate error code from the trailers, the frames that came back) as data to assert on.
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY } from "../../shared/errors.js";
import {
  AgentClient,
  type ApplyRequest,
  type ApplyResponse,
  type HelloRequest,
  type HelloResponse,
  type PreflightRequest,
  type PreflightResponse,
  type RsyncFrame,
  type RsyncStart,
} from "../../shared/generated/quickmigrate/v1/agent.js";

export type RpcOutcome<T> =
  | { readonly ok: true; readonly value: T; readonly code: grpc.status.OK }
  | { readonly ok: false; readonly code: grpc.status; readonly details: string; readonly qmCode: string | undefined };

const DEADLINE_MS = 30_000;

export function insecureClient(address: string): AgentClient {
  return new AgentClient(address, grpc.credentials.createInsecure());
}

function qmCodeOf(md: grpc.Metadata | undefined): string | undefined {
  const v = md?.get(ERROR_CODE_METADATA_KEY)[0];
  return v === undefined ? undefined : String(v);
}

function settle<T>(resolve: (o: RpcOutcome<T>) => void): (err: grpc.ServiceError | null, res?: T) => void {
  return (err, res) => {
    if (err) resolve({ ok: false, code: err.code, details: err.details, qmCode: qmCodeOf(err.metadata) });
    else resolve({ ok: true, value: res as T, code: grpc.status.OK });
  };
}

const options = (): Partial<grpc.CallOptions> => ({ deadline: Date.now() + DEADLINE_MS });

export function hello(c: AgentClient, req: HelloRequest): Promise<RpcOutcome<HelloResponse>> {
  return new Promise((resolve) => c.hello(req, new grpc.Metadata(), options(), settle(resolve)));
}

export function preflight(c: AgentClient, req: PreflightRequest): Promise<RpcOutcome<PreflightResponse>> {
  return new Promise((resolve) => c.preflight(req, new grpc.Metadata(), options(), settle(resolve)));
}

export function apply(c: AgentClient, req: ApplyRequest): Promise<RpcOutcome<ApplyResponse>> {
  return new Promise((resolve) => c.apply(req, new grpc.Metadata(), options(), settle(resolve)));
}

export interface TunnelOutcome {
  /** final status of the call; CANCELLED when we cancelled it after a data frame */
  readonly code: grpc.status;
  readonly details: string;
  readonly qmCode: string | undefined;
  /** data frames received (bytes from an rsync process's stdout) */
  readonly dataFrames: number;
  readonly stderr: string;
  readonly exit: { code: number; signal: string } | undefined;
  /** we cancelled the call ourselves (after the first data frame, or on the timeout) */
  readonly cancelledByUs: "data" | "timeout" | undefined;
}

/** What the server started: a refused tunnel has none of these. */
export function rsyncRan(o: TunnelOutcome): boolean {
  return o.dataFrames > 0 || o.exit !== undefined || o.stderr !== "";
}

export function startFrame(start: RsyncStart): RsyncFrame {
  return { frame: { $case: "start", value: start } };
}

/**
 * Opens an Rsync stream, writes `frames` (then half-closes when `endInput`), and collects what comes
 * back until the call ends. When a data frame arrives (an rsync process is talking) the call is
 * cancelled at once, so that nothing more happens (unless `cancelOnData` is false); a call that has
 * not ended after `timeoutMs` (default 10 s) is cancelled too.
 */
export function tunnel(
  c: AgentClient,
  frames: readonly RsyncFrame[],
  opts: { endInput?: boolean; timeoutMs?: number; /** default true */ cancelOnData?: boolean } = {},
): Promise<TunnelOutcome> {
  return new Promise((resolve) => {
    const call = c.rsync();
    let dataFrames = 0;
    let stderr = "";
    let exit: TunnelOutcome["exit"];
    let cancelledByUs: TunnelOutcome["cancelledByUs"];
    let error: grpc.ServiceError | undefined;
    let done = false;
    const timer = setTimeout(() => {
      cancelledByUs ??= "timeout";
      call.cancel();
    }, opts.timeoutMs ?? 10_000);
    call.on("data", (msg: RsyncFrame) => {
      const f = msg.frame;
      if (f?.$case === "data") {
        dataFrames++;
        if (cancelledByUs === undefined && opts.cancelOnData !== false) {
          cancelledByUs = "data";
          call.cancel();
        }
      } else if (f?.$case === "stderr") stderr += f.value.toString("utf8");
      else if (f?.$case === "exit") exit = { code: f.value.code, signal: f.value.signal };
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
    });
    call.on("status", (st: grpc.StatusObject) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // 'error' (when any) is emitted before 'status'; give it a tick anyway
      setImmediate(() =>
        resolve({
          code: error?.code ?? st.code,
          details: error?.details ?? st.details,
          qmCode: qmCodeOf(error?.metadata ?? st.metadata),
          dataFrames,
          stderr,
          exit,
          cancelledByUs,
        }),
      );
    });
    for (const f of frames) call.write(f);
    if (opts.endInput) call.end();
  });
}

/** How many rsync processes the agent started so far, from its log. */
export function rsyncStarts(logFile: string): number {
  const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "";
  return text.split("\n").filter((l) => l.includes('"msg":"rsync server start"')).length;
}

/** A value for a message: JSON, cut short. */
export function show(value: unknown, max = 40): string {
  const s = JSON.stringify(value) ?? String(value);
  return s.length > max ? `${s.slice(0, max - 3)}...(${s.length} chars)` : s;
}

/** Hostile strings: each is an invalid name for every field (migration id, platform, site, data dir, step). */
export const HOSTILE: readonly string[] = [
  "../x",
  "../../etc",
  "..",
  "a/../b",
  "./a",
  "/etc",
  "/tmp/x",
  "a\u0000b",
  "\u0000",
  "a\nb",
  "a\rb",
  "a\tb",
  "-rf",
  "--delete",
  "-e sh -c x",
  "x".repeat(10_000),
  "",
  ".",
  "a//b",
  "x/",
  " a",
  "%2e%2e",
  "a\u202eb",
];
