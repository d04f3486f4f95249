// The error catalogue is a contract between agent and controller (codes travel in gRPC metadata): pinned here.
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ErrorCodes, GrpcStatus, QmError, ackDetail, describeError, fsError, isErrorCode } from "../../shared/errors.js";

// gRPC status numbers, written out: CANCELLED 1, INVALID_ARGUMENT 3, DEADLINE_EXCEEDED 4, ALREADY_EXISTS 6,
// PERMISSION_DENIED 7, RESOURCE_EXHAUSTED 8, FAILED_PRECONDITION 9, INTERNAL 13, UNAVAILABLE 14.
// Changing the catalogue means changing this table.
const CATALOGUE: [string, number][] = [
  ["INVALID_NAME", 3],
  ["CONFIG_INVALID", 3],
  ["USAGE", 3],
  ["NOT_REGISTERED", 9],
  ["PRECONDITION", 9],
  ["CONFLICT", 9],
  ["CROSS_DEVICE", 9],
  ["NOT_EMPTY", 9],
  ["SOURCE_MISSING", 9],
  ["SITE_IS_SYMLINK", 9],
  ["TARGET_EXISTS", 9],
  ["TARGET_PLATFORM_MISSING", 9],
  ["MOUNT_POINT", 9],
  ["DATA_NOT_DIRECTORY", 9],
  ["ROOT_SHARED", 9],
  ["ROOT_NOT_LOCAL", 9],
  ["UNFINISHED_MIGRATION", 9],
  ["RECORD_UNREADABLE", 9],
  ["ROOT_ID_INVALID", 9],
  ["ROOT_NOT_WRITABLE", 9],
  ["RESTORED_ON_FRONT", 9],
  ["PAST_POINT_OF_NO_RETURN", 9],
  ["DANGLING_SYMLINK", 9],
  ["DATA_DIRS_MISMATCH", 9],
  ["OUT_OF_ORDER", 9],
  ["STALE_REQUEST", 9],
  ["MIGRATION_FINISHED", 9],
  ["OUTSIDE_ROOT", 7],
  ["TUNNEL_REFUSED", 7],
  ["NOT_ALLOWED", 7],
  ["LOCKED", 6],
  ["UNREACHABLE", 14],
  ["BUSY", 14],
  ["STOPPING", 14],
  ["STREAM_IDLE", 14],
  ["TIMED_OUT", 4],
  ["TOO_MANY_STREAMS", 8],
  ["INCOMPATIBLE", 9],
  ["HOOK_FAILED", 13],
  ["RSYNC_FAILED", 13],
  ["IO", 13],
  ["JOURNAL_INVALID", 13],
  ["CANCELLED", 1],
  ["INTERNAL", 13],
];

describe("ErrorCodes", () => {
  it("is exactly the pinned catalogue, in order", () => {
    expect(Object.entries(ErrorCodes)).toEqual(CATALOGUE);
  });

  it("QmError takes its gRPC status from the catalogue", () => {
    for (const [code, grpc] of CATALOGUE) {
      expect(new QmError(code as keyof typeof ErrorCodes, "x").grpcStatus).toBe(grpc);
    }
  });

  it("GrpcStatus, which spares errors.ts loading gRPC, holds grpc-js's own numbers", () => {
    for (const [name, n] of Object.entries(GrpcStatus)) expect(status[name as keyof typeof status]).toBe(n);
  });

  it("QmError keeps code, context and cause", () => {
    const cause = new Error("inner");
    const err = new QmError("IO", "outer", { host: "web1", step: "push-site", path: "p/sites/a" }, { cause });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("QmError");
    expect(err.code).toBe("IO");
    expect(err.context).toEqual({ host: "web1", step: "push-site", path: "p/sites/a" });
    expect(err.cause).toBe(cause);
    expect(new QmError("IO", "no cause").cause).toBeUndefined();
  });

  it("isErrorCode knows only the catalogue's own codes", () => {
    for (const [code] of CATALOGUE) expect(isErrorCode(code)).toBe(true);
    for (const s of ["", "io", "NOPE", "toString", "constructor", "__proto__", "hasOwnProperty"]) expect(isErrorCode(s)).toBe(false);
  });
});

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something`), { code });
}

describe("fsError", () => {
  it("maps EXDEV to CROSS_DEVICE, naming the path and keeping the cause", () => {
    const cause = errno("EXDEV");
    const err = fsError(cause, "p1/sites/a.com/files", "rename to .quick-migrate-park/m1/files");
    expect(err.code).toBe("CROSS_DEVICE");
    expect(err.grpcStatus).toBe(9);
    expect(err.message).toContain("p1/sites/a.com/files");
    expect(err.message).toContain("refusing to copy");
    expect(err.context.path).toBe("p1/sites/a.com/files");
    expect(err.cause).toBe(cause);
  });

  it.each(["ENOTEMPTY", "EEXIST"])("maps %s to CONFLICT", (code) => {
    const err = fsError(errno(code), "x/y", "rename");
    expect(err.code).toBe("CONFLICT");
    expect(err.message).toContain("x/y");
  });

  it("maps other errno codes to IO, naming the code", () => {
    const err = fsError(errno("EIO"), "x/y", "rename");
    expect(err.code).toBe("IO");
    expect(err.message).toContain("EIO");
    expect(err.message).toContain("x/y");
  });

  it("passes a QmError through unchanged", () => {
    const inner = new QmError("OUTSIDE_ROOT", "nope");
    expect(fsError(inner, "x", "rename")).toBe(inner);
  });

  it("handles values that are not errors", () => {
    const err = fsError("weird", "x", "rename");
    expect(err.code).toBe("IO");
    expect(err.message).toContain("weird");
  });
});

describe("describeError", () => {
  it("gives the first line of an error's message, or the value as a string", () => {
    expect(describeError(new Error("first\nsecond"))).toBe("first");
    expect(describeError(42)).toBe("42");
  });
});

describe("ackDetail", () => {
  it("the one-line description, then the error's acknowledgement lines (a failed hook's output)", () => {
    const err = new QmError("HOOK_FAILED", "hook updatedb (drush) failed: exit 1: boom", {}, { ackLines: ["last 2 lines of its output (f):", "working", "boom"] });
    expect(ackDetail(err)).toBe("hook updatedb (drush) failed: exit 1: boom\nlast 2 lines of its output (f):\nworking\nboom");
    expect(describeError(err)).toBe("hook updatedb (drush) failed: exit 1: boom");
    expect(ackDetail(new QmError("IO", "disk full"))).toBe("disk full");
    expect(ackDetail(new Error("first\nsecond"))).toBe("first");
  });
});
