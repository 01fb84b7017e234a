// Known bytes from RFC 8323 / the interop measurements, round trips across every length boundary,
// and fuzzing: the decoders must only ever throw CoapFormatError.
import { strict as assert } from "node:assert";
import * as fc from "fast-check";
import { Code, OptionNumber, type CoapMessage } from "../../../src/coap/message";
import { CoapFormatError } from "../../../src/coap/errors";
import { decodeUdp, encodeUdp } from "../../../src/coap/udp-codec";
import { decodeTcp, encodeTcp, frameLength } from "../../../src/coap/tcp-codec";
import { contentFormatOption, getContentFormat, getUriPath, uriPathOptions } from "../../../src/coap/options";
import { csmMessage, parseSignal, pingMessage, pongMessage, abortMessage, releaseMessage } from "../../../src/coap/signalling";
import { fuzzRuns } from "../../support/fuzz";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const empty = Buffer.alloc(0);

function assertFormatError(fn: () => unknown, code?: string): void {
  assert.throws(fn, (e: unknown) => e instanceof CoapFormatError && (code === undefined || e.code === code));
}

describe("CoAP codec: known bytes", () => {
  it("decodes and re-encodes the RFC 8323 CSM 30e1220400 (Max-Message-Size 1024)", () => {
    const m = decodeTcp(hex("30e1220400"));
    assert.equal(m.code, Code.CSM);
    assert.deepEqual(parseSignal(m), { kind: "csm", maxMessageSize: 1024, blockWiseTransfer: false });
    assert.equal(encodeTcp(csmMessage({ maxMessageSize: 1024 })).toString("hex"), "30e1220400");
  });

  it("decodes GET /time over TCP 5201beefb474696d65", () => {
    const m = decodeTcp(hex("5201beefb474696d65"));
    assert.equal(m.code, Code.GET);
    assert.equal(m.token.toString("hex"), "beef");
    assert.deepEqual(getUriPath(m.options), ["time"]);
    const back = encodeTcp({ code: Code.GET, token: hex("beef"), options: uriPathOptions(["time"]), payload: empty });
    assert.equal(back.toString("hex"), "5201beefb474696d65");
  });

  it("encodes Ping 01e242, Pong 01e342 and 2.03 014 37f exactly as RFC 8323 shows", () => {
    assert.equal(encodeTcp(pingMessage(hex("42"))).toString("hex"), "01e242");
    assert.equal(encodeTcp(pongMessage(hex("42"))).toString("hex"), "01e342");
    assert.equal(encodeTcp({ code: Code.Valid, token: hex("7f"), options: [], payload: empty }).toString("hex"), "01437f");
    assert.deepEqual(parseSignal(decodeTcp(hex("01e242"))), { kind: "ping", custody: false });
    assert.deepEqual(parseSignal(decodeTcp(hex("01e342"))), { kind: "pong", custody: false });
  });

  it("decodes the UDP CoAP ping 40000007 as an empty CON with message ID 7", () => {
    const m = decodeUdp(hex("40000007"));
    assert.deepEqual([m.type, m.code, m.messageId, m.token.length, m.options.length], ["CON", 0, 7, 0, 0]);
    assert.equal(encodeUdp(m).toString("hex"), "40000007");
  });

  it("decodes GET /time over UDP 44011234cafe0001b474696d65 and encodes it back", () => {
    const m = decodeUdp(hex("44011234cafe0001b474696d65"));
    assert.deepEqual([m.type, m.code, m.messageId, m.token.toString("hex")], ["CON", Code.GET, 0x1234, "cafe0001"]);
    assert.deepEqual(getUriPath(m.options), ["time"]);
    assert.equal(encodeUdp(m).toString("hex"), "44011234cafe0001b474696d65");
  });

  it("encodes Content-Format 271 as the two bytes 010f", () => {
    const m: CoapMessage = { type: "NON", code: Code.PUT, messageId: 1, token: empty, options: [contentFormatOption(271)], payload: empty };
    assert.equal(encodeUdp(m).toString("hex"), "50030001" + "c2010f");
    assert.equal(getContentFormat(decodeUdp(encodeUdp(m)).options), 271);
  });
});

describe("CoAP codec: round trips and extensions", () => {
  it("uses the 13/14/15 extended length for TCP lengths 0, 12, 13, 268, 269, 65804, 65805", () => {
    const cases: Array<[number, number, number]> = [
      // Len (options+marker+payload), expected nibble, expected extension bytes
      [0, 0, 0],
      [12, 12, 0],
      [13, 13, 1],
      [268, 13, 1],
      [269, 14, 2],
      [65804, 14, 2],
      [65805, 15, 4],
      [70000, 15, 4],
    ];
    for (const [len, nibble, ext] of cases) {
      const payload = len === 0 ? empty : Buffer.alloc(len - 1, 0xa5);
      const msg: CoapMessage = { code: Code.Content, token: hex("0102"), options: [], payload };
      const frame = encodeTcp(msg);
      assert.equal(frame[0] >> 4, nibble, `nibble for ${len}`);
      assert.equal(frame.length, 1 + ext + 1 + 2 + len, `frame size for ${len}`);
      assert.equal(frameLength(frame, 1 << 20), frame.length);
      assert.equal(frameLength(frame.subarray(0, ext), 1 << 20), undefined, "needs the extension bytes first");
      assert.equal(frameLength(frame.subarray(0, 1 + ext), 1 << 20), frame.length);
      const back = decodeTcp(frame);
      assert.equal(back.code, Code.Content);
      assert.ok(back.payload.equals(payload), `payload for ${len}`);
    }
  });

  it("round-trips options needing 1- and 2-byte delta and length extensions, sorted on encode", () => {
    const long = Buffer.alloc(300, 7);
    const msg: CoapMessage = {
      type: "CON",
      code: Code.PUT,
      messageId: 0xbeef,
      token: hex("0011223344556677"),
      options: [
        { number: 2049, value: long },
        { number: OptionNumber.Size1, value: Buffer.from([5]) },
        contentFormatOption(271),
        ...uriPathOptions([".well-known", "dots", "mitigate", "cuid=abc", "mid=123"]),
        { number: 60000, value: Buffer.alloc(20, 1) },
      ],
      payload: Buffer.from("hello"),
    };
    for (const [enc, dec] of [
      [encodeUdp, decodeUdp],
      [encodeTcp, decodeTcp],
    ] as const) {
      const back = dec(enc(msg));
      assert.deepEqual(
        back.options.map((o) => o.number),
        [11, 11, 11, 11, 11, 12, 60, 2049, 60000],
      );
      assert.deepEqual(getUriPath(back.options), [".well-known", "dots", "mitigate", "cuid=abc", "mid=123"]);
      assert.ok(back.options[7].value.equals(long));
      assert.equal(back.payload.toString(), "hello");
      assert.ok(back.token.equals(msg.token));
    }
    // Option 60 after 12 needs delta 48 = nibble 13 + 35; 2049 after 60 needs nibble 14 + 1720 (0x06b8).
    const bytes = encodeUdp({
      type: "NON",
      code: 1,
      messageId: 0,
      token: empty,
      options: [
        { number: 60, value: empty },
        { number: 2049, value: empty },
      ],
      payload: empty,
    });
    assert.equal(bytes.subarray(4).toString("hex"), "d02f" + "e006b8");
  });

  it("round-trips every signalling message with its own option meanings", () => {
    const cases = [
      csmMessage({ maxMessageSize: 65535, blockWiseTransfer: true }),
      pingMessage(hex("01"), true),
      releaseMessage({ alternativeAddresses: ["coaps+tcp://[2001:db8::1]"], holdOffSeconds: 30 }),
      abortMessage("no CSM", 2),
    ];
    assert.deepEqual(
      cases.map((m) => parseSignal(decodeTcp(encodeTcp(m)))),
      [
        { kind: "csm", maxMessageSize: 65535, blockWiseTransfer: true },
        { kind: "ping", custody: true },
        { kind: "release", alternativeAddresses: ["coaps+tcp://[2001:db8::1]"], holdOffSeconds: 30 },
        { kind: "abort", badCsmOption: 2, diagnostic: "no CSM" },
      ],
    );
  });

  it("rejects unknown critical signalling options but ignores elective ones", () => {
    assertFormatError(
      () => parseSignal({ code: Code.CSM, token: empty, options: [{ number: 9, value: empty }], payload: empty }),
      "BAD_SIGNAL",
    );
    assert.deepEqual(parseSignal({ code: Code.CSM, token: empty, options: [{ number: 10, value: empty }], payload: empty }), {
      kind: "csm",
      blockWiseTransfer: false,
    });
  });
});

describe("CoAP codec: malformed input", () => {
  const cases: Array<[string, string, string]> = [
    ["UDP version 2", "80000001", "BAD_VERSION"],
    ["UDP header truncated", "4000", "TRUNCATED"],
    ["UDP TKL 9", "49010001", "BAD_TOKEN_LENGTH"],
    ["UDP token truncated", "440100010102", "TRUNCATED"],
    ["UDP payload marker without payload", "40010001ff", "EMPTY_PAYLOAD"],
    ["UDP option delta nibble 15", "40010001f1", "RESERVED_NIBBLE"],
    ["UDP option length nibble 15", "400100011f", "RESERVED_NIBBLE"],
    ["UDP option value truncated", "40010001b374", "TRUNCATED"],
    ["UDP delta extension truncated", "40010001e0", "TRUNCATED"],
    ["UDP option number above 65535", "40010001e0ffff" + "e0ffff", "BAD_OPTION_NUMBER"],
    ["UDP empty message with token", "41000001aa", "BAD_EMPTY_MESSAGE"],
  ];
  for (const [name, bytes, code] of cases) {
    it(`rejects ${name} with ${code}`, () => assertFormatError(() => decodeUdp(hex(bytes)), code));
  }

  it("rejects TCP frames that are truncated, padded, oversize, have TKL 9 or an empty payload", () => {
    assertFormatError(() => decodeTcp(hex("5201beefb474696d")), "TRUNCATED");
    assertFormatError(() => decodeTcp(hex("5201beefb474696d6500")), "TRUNCATED");
    assertFormatError(() => decodeTcp(hex("0901")), "BAD_TOKEN_LENGTH");
    assertFormatError(() => decodeTcp(hex("1045ff")), "EMPTY_PAYLOAD");
    assertFormatError(() => frameLength(hex("f0ffffffff"), 1 << 20), "OVERSIZE");
    assertFormatError(() => decodeUdp(Buffer.alloc(2000, 0x40), { maxMessageSize: 1500 }), "OVERSIZE");
  });

  it("refuses to encode a token over 8 bytes or a message ID over 16 bits", () => {
    assertFormatError(
      () => encodeUdp({ type: "CON", code: 1, messageId: 1, token: Buffer.alloc(9), options: [], payload: empty }),
      "INVALID_MESSAGE",
    );
    assertFormatError(
      () => encodeUdp({ type: "CON", code: 1, messageId: 70000, token: empty, options: [], payload: empty }),
      "INVALID_MESSAGE",
    );
    assertFormatError(() => encodeTcp({ code: 1, token: Buffer.alloc(9), options: [], payload: empty }), "INVALID_MESSAGE");
  });
});

describe("CoAP codec: fuzzing (only CoapFormatError may escape)", function () {
  this.timeout(60000);
  const onlyFormatErrors = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof CoapFormatError)) throw e;
    }
  };
  const seeds = [
    hex("44011234cafe0001b474696d65"),
    encodeUdp({
      type: "CON",
      code: Code.PUT,
      messageId: 9,
      token: hex("0102"),
      options: [contentFormatOption(271), { number: 2049, value: Buffer.alloc(20) }],
      payload: Buffer.alloc(30, 1),
    }),
  ];
  const tcpSeeds = [
    hex("5201beefb474696d65"),
    hex("30e1220400"),
    encodeTcp({ code: Code.Content, token: hex("01"), options: [{ number: 300, value: Buffer.alloc(14) }], payload: Buffer.alloc(300, 2) }),
  ];
  // Random bytes, plus valid messages with random byte overwrites (to get past the header checks).
  const mutated = (base: Buffer[]) =>
    fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
      fc
        .tuple(fc.constantFrom(...base), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat())
        .map(([b, edits, cut]) => {
          const copy = Buffer.from(b);
          for (const [at, v] of edits) copy[at % copy.length] = v;
          return copy.subarray(0, cut % 3 === 0 ? cut % (copy.length + 1) : copy.length);
        }),
    );

  it("decodeUdp on 100k random and mutated datagrams", () => {
    fc.assert(
      fc.property(mutated(seeds), (b) => onlyFormatErrors(() => decodeUdp(b))),
      { seed: 7252, numRuns: fuzzRuns(100_000) },
    );
  });

  it("decodeTcp and frameLength on 100k random and mutated frames", () => {
    fc.assert(
      fc.property(mutated(tcpSeeds), (b) => {
        onlyFormatErrors(() => frameLength(b));
        onlyFormatErrors(() => {
          const m = decodeTcp(b);
          if (m.code >> 5 === 7) parseSignal(m);
        });
      }),
      { seed: 8323, numRuns: fuzzRuns(100_000) },
    );
  });

  it("valid decodes re-encode to the same bytes (UDP, 20k cases)", () => {
    fc.assert(
      fc.property(mutated(seeds), (b) => {
        let m: CoapMessage;
        try {
          m = decodeUdp(b);
        } catch {
          return;
        }
        // Canonical encodings only: non-minimal extensions would not round-trip byte for byte.
        const again = encodeUdp(m);
        assert.deepEqual(decodeUdp(again), m);
      }),
      { seed: 1, numRuns: fuzzRuns(20_000) },
    );
  });
});
