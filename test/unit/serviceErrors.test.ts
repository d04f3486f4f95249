// What the controller makes of a failed gRPC call (fromServiceError): the agent's own code when it sent
// one, UNREACHABLE for the transport's failures, and a message an operator reads, the host as context.
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { fromServiceError } from "../../controller/agentConnection.js";
import { ERROR_CODE_METADATA_KEY } from "../../shared/errors.js";

function serviceError(code: status, details: string, sent?: string): ServiceError {
  const metadata = new Metadata();
  if (sent !== undefined) metadata.set(ERROR_CODE_METADATA_KEY, sent);
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

describe("fromServiceError", () => {
  it("a deadline the agent did not answer within: how long it was given, not grpc-js's timings", () => {
    const err = fromServiceError("web2", serviceError(status.DEADLINE_EXCEEDED, "Deadline exceeded after 3.001s,name resolution: 0.001s,metadata filters: 0.000s,LB pick: 0.000s,Waiting for LB pick"));
    expect(err).toMatchObject({ code: "UNREACHABLE", message: "agent unreachable: no answer within 3.0 s", context: { host: "web2" } });
    // the whole text is kept for the log
    expect((err.cause as ServiceError).details).toContain("Waiting for LB pick");
  });

  it("other transport failures keep their text", () => {
    expect(fromServiceError("web1", serviceError(status.UNAVAILABLE, "No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1"))).toMatchObject({
      code: "UNREACHABLE",
      message: "agent unreachable: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1",
    });
  });

  it("the agent's own code and message, even on a transport status", () => {
    expect(fromServiceError("web1", serviceError(status.DEADLINE_EXCEEDED, "the agent stopped waiting for its operation", "TIMED_OUT"))).toMatchObject({
      code: "TIMED_OUT",
      message: "the agent stopped waiting for its operation",
    });
    expect(fromServiceError("web1", serviceError(status.INTERNAL, "TypeError: x"))).toMatchObject({ code: "INTERNAL", message: "TypeError: x" });
  });
});
