// The Rsync frames' codec against the generated one: the same bytes on the wire, each reading the other's.
import { describe, expect, it } from "vitest";
import { RsyncFrame } from "../../shared/generated/quickmigrate/v1/agent.js";
import { decodeRsyncFrame, encodeRsyncFrame } from "../../shared/rsyncFrameCodec.js";

const generated = (f: RsyncFrame) => Buffer.from(RsyncFrame.encode(f).finish());
const data = (n: number) => ({ frame: { $case: "data" as const, value: Buffer.alloc(n, 7) } });

describe("rsync frame codec", () => {
  it("writes data frames as the generated code does, and each reads the other's", () => {
    // lengths around each varint boundary, the empty heartbeat frame among them
    for (const n of [0, 1, 127, 128, 16_383, 16_384, 65_536, 2_097_151, 2_097_152]) {
      const f = data(n);
      expect(encodeRsyncFrame(f).equals(generated(f))).toBe(true);
      for (const read of [decodeRsyncFrame(generated(f)), RsyncFrame.decode(encodeRsyncFrame(f))]) {
        expect(read.frame?.$case).toBe("data");
        expect(Buffer.isBuffer(read.frame?.value) && read.frame.value.equals(f.frame.value)).toBe(true);
      }
    }
  });

  it("leaves every other frame to the generated code", () => {
    const frames: RsyncFrame[] = [
      { frame: { $case: "start", value: { migrationId: "m", step: "fetch-site", args: ["rsync"], run: 2 } } },
      { frame: { $case: "stderr", value: Buffer.from("rsync: oops\n") } },
      { frame: { $case: "exit", value: { code: 23, signal: "" } } },
      { frame: undefined },
    ];
    for (const f of frames) {
      expect(encodeRsyncFrame(f).equals(generated(f))).toBe(true);
      expect(decodeRsyncFrame(generated(f))).toEqual(RsyncFrame.decode(generated(f)));
    }
  });

  it("reads a data field that is not the whole message with the generated decoder (last field wins)", () => {
    const twice = Buffer.concat([generated(data(3)), generated({ frame: { $case: "stderr", value: Buffer.from("x") } })]);
    expect(decodeRsyncFrame(twice)).toEqual(RsyncFrame.decode(twice));
    // a truncated message is refused as the generated decoder refuses it
    const cut = generated(data(300)).subarray(0, 100);
    expect(() => decodeRsyncFrame(cut)).toThrow();
  });
});
