import { strict as assert } from "node:assert";
import { TransportError } from "../../../src/transport/connection";
import { StreamFramer, frameLength } from "../../../src/transport/stream-framer";

// Independent RFC 8323 section 3.2 encoder for the tests: Len|TKL, extended length, code, token, body.
function frame(code: number, token: Buffer, body: Buffer): Buffer {
  const L = body.length;
  let nibble: number;
  let ext: Buffer;
  if (L < 13) [nibble, ext] = [L, Buffer.alloc(0)];
  else if (L < 269) [nibble, ext] = [13, Buffer.from([L - 13])];
  else if (L < 65805) {
    nibble = 14;
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(L - 269);
  } else {
    nibble = 15;
    ext = Buffer.alloc(4);
    ext.writeUInt32BE(L - 65805);
  }
  let tkl: number;
  let tokenExt: Buffer;
  if (token.length < 13) [tkl, tokenExt] = [token.length, Buffer.alloc(0)];
  else if (token.length < 269) [tkl, tokenExt] = [13, Buffer.from([token.length - 13])];
  else {
    tkl = 14;
    tokenExt = Buffer.alloc(2);
    tokenExt.writeUInt16BE(token.length - 269);
  }
  return Buffer.concat([Buffer.from([(nibble << 4) | tkl]), ext, Buffer.from([code]), tokenExt, token, body]);
}

const filled = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

describe("transport/stream-framer", () => {
  it("cuts frames of every extended-length class at their exact boundaries", () => {
    const sizes = [0, 1, 12, 13, 14, 268, 269, 270, 65804, 65805, 70000];
    const frames = sizes.map((n, i) => frame(0x45, filled(i % 9, i), filled(n, i)));
    const framer = new StreamFramer(200_000);
    const out = framer.push(Buffer.concat(frames));
    assert.equal(out.length, frames.length);
    out.forEach((f, i) => assert.ok(f.equals(frames[i]), `frame ${i} (body ${sizes[i]})`));
    assert.equal(framer.buffered, 0);
  });

  it("reassembles frames delivered one byte at a time and split at every offset", () => {
    const a = frame(0x01, Buffer.from("tok1"), Buffer.from([0xb4, 0x74, 0x69, 0x6d, 0x65]));
    const b = frame(0xe1, Buffer.alloc(0), filled(300, 7)); // CSM-like signal with a 2-byte extended length
    const stream = Buffer.concat([a, b]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new StreamFramer();
      const out = [...framer.push(stream.subarray(0, cut)), ...framer.push(stream.subarray(cut))];
      assert.equal(out.length, 2, `cut at ${cut}`);
      assert.ok(out[0].equals(a) && out[1].equals(b), `cut at ${cut}`);
    }
    const framer = new StreamFramer();
    const out: Buffer[] = [];
    for (const byte of stream) out.push(...framer.push(Buffer.from([byte])));
    assert.deepEqual(out, [a, b]);
  });

  it("handles RFC 8974 extended token lengths (TKL 13 and 14)", () => {
    const t13 = frame(0x02, filled(20, 1), Buffer.from([0xff, 1, 2]));
    const t14 = frame(0x02, filled(300, 2), Buffer.alloc(0));
    assert.equal(frameLength(t13), t13.length);
    assert.equal(frameLength(t14), t14.length);
    assert.deepEqual(new StreamFramer(1000).push(Buffer.concat([t13, t14])), [t13, t14]);
  });

  it("reports unknown length while the header is incomplete", () => {
    const f = frame(0x45, Buffer.alloc(0), filled(70000, 3));
    for (const n of [0, 1, 2, 3, 4]) assert.equal(frameLength(f.subarray(0, n)), undefined, `${n} bytes`);
    assert.equal(frameLength(f.subarray(0, 6)), f.length);
  });

  it("refuses a frame over the limit as soon as its header arrives, before buffering the body", () => {
    const framer = new StreamFramer(1024);
    const big = frame(0x45, Buffer.alloc(0), filled(5000, 1));
    assert.throws(
      () => framer.push(big.subarray(0, 4)),
      (e: unknown) => e instanceof TransportError && e.code === "FRAME_TOO_LARGE" && /5004/.test(e.message),
    );
    assert.equal(framer.buffered, 0);
    assert.throws(
      () => framer.push(Buffer.from([0])),
      (e: unknown) => e instanceof TransportError && e.code === "CLOSED",
    );
  });

  it("accepts a frame exactly at the limit", () => {
    const f = frame(0x45, Buffer.alloc(0), filled(1000, 1));
    assert.deepEqual(new StreamFramer(f.length).push(f), [f]);
    assert.throws(
      () => new StreamFramer(f.length - 1).push(f),
      (e: unknown) => e instanceof TransportError && e.code === "FRAME_TOO_LARGE",
    );
  });

  it("rejects the reserved token length 15 with FRAME_MALFORMED", () => {
    assert.throws(
      () => new StreamFramer().push(Buffer.from([0x0f, 0x01])),
      (e: unknown) => e instanceof TransportError && e.code === "FRAME_MALFORMED",
    );
  });

  it("rejects a nonsensical limit", () => {
    assert.throws(
      () => new StreamFramer(0),
      (e: unknown) => e instanceof TransportError && e.code === "CONFIG",
    );
  });
});
