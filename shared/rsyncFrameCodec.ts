// The Rsync stream's frames on the wire, for both ends: the generated codec for every frame, except the
// `data` frames that carry rsync's bytes, which are written and read here without the generated code's
// copies (it grows a zero-filled buffer, slices it, and copies that again into a Buffer; its decode copies
// the bytes out of the message). Same bytes on the wire either way: a peer with the generated codec reads
// these frames, and these read its frames.
import { AgentService, RsyncFrame } from "./generated/quickmigrate/v1/agent.js";

/** field 2 (`data`), wire type 2 (length-delimited) */
const DATA_TAG = 0x12;

/** One frame as one Buffer: a `data` frame with a single copy of its bytes. */
export function encodeRsyncFrame(message: RsyncFrame): Buffer {
  if (message.frame?.$case !== "data") return Buffer.from(RsyncFrame.encode(message).finish());
  const data = message.frame.value;
  const length = data.length;
  let lengthBytes = 1;
  for (let v = length; v > 0x7f; v >>>= 7) lengthBytes++;
  const out = Buffer.allocUnsafe(1 + lengthBytes + length);
  out[0] = DATA_TAG;
  let pos = 1;
  let v = length;
  while (v > 0x7f) {
    out[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[pos++] = v;
  data.copy(out, pos);
  return out;
}

/**
 * One frame from its message bytes. A message that is exactly one `data` field (what both ends send) is
 * read in place: its bytes are a view of the message, which nothing else holds. Anything else goes to the
 * generated decoder, which reads every valid encoding.
 */
export function decodeRsyncFrame(message: Buffer): RsyncFrame {
  if (message.length > 1 && message[0] === DATA_TAG) {
    let length = 0;
    let pos = 1;
    // at most 5 bytes of length (a message is far below 4 GiB)
    for (let shift = 0; pos < message.length && shift < 35; shift += 7) {
      const b = message[pos++] as number;
      length += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        if (pos + length === message.length) return { frame: { $case: "data", value: message.subarray(pos) } };
        break;
      }
    }
  }
  return RsyncFrame.decode(message);
}

/**
 * The generated service definition with the Rsync method's frames (de)serialised by the codec above: the
 * agent serves this one, the controller's client is made from it. The other methods are the generated ones.
 */
export const AgentServiceWithRsyncCodec: typeof AgentService = Object.freeze({
  ...AgentService,
  rsync: {
    ...AgentService.rsync,
    requestSerialize: encodeRsyncFrame,
    requestDeserialize: decodeRsyncFrame,
    responseSerialize: encodeRsyncFrame,
    responseDeserialize: decodeRsyncFrame,
  },
});
