// Fault injection for the crash tests: off unless QM_FAULT is set. The controller kills itself with
// SIGKILL at a chosen point, as a power cut or an OOM kill would:
//   QM_FAULT=kill-before:<step>                before the step starts (a step boundary)
//   QM_FAULT=kill-before:undo:<step>           before a rollback undoes the step
//   QM_FAULT=kill-after-ack:<step>:<host>      right after that host's acknowledgement is journaled
//   QM_FAULT=kill-after-ack:undo:<step>:<host> the same, while undoing
// Several points may be given, separated by commas; the first one reached fires.
export class FaultPlan {
  private constructor(private readonly points: ReadonlySet<string>) {}

  static fromEnv(env: NodeJS.ProcessEnv): FaultPlan | undefined {
    const spec = env.QM_FAULT?.trim();
    if (!spec) return undefined;
    return new FaultPlan(new Set(spec.split(",").map((p) => p.trim())));
  }

  beforeStep(step: string): void {
    this.fire(`kill-before:${step}`);
  }

  afterAck(step: string, host: string, undo: boolean): void {
    this.fire(`kill-after-ack:${undo ? "undo:" : ""}${step}:${host}`);
  }

  private fire(point: string): void {
    if (this.points.has(point)) process.kill(process.pid, "SIGKILL");
  }
}
