// Byte-for-byte vectors from RFC 9132 / RFC 9066 (digest sections 2.9, 2.13, 7) in both
// directions, the JSON-view conventions, and the typed errors.
import { strict as assert } from "node:assert";
import { DotsCborError, decodeDotsCbor, encodeDotsCbor } from "../../../src/cbor";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ""), "hex");

function both(json: Record<string, unknown>, wire: string): void {
  assert.equal(hex(encodeDotsCbor(json)), wire.replace(/\s+/g, ""));
  assert.deepEqual(decodeDotsCbor(bytes(wire)), json);
}

function decodeError(h: string | Uint8Array, opts?: { maxBytes?: number; maxDepth?: number }): DotsCborError {
  try {
    decodeDotsCbor(typeof h === "string" ? bytes(h) : h, opts);
  } catch (e) {
    assert.ok(e instanceof DotsCborError, `expected DotsCborError, got ${String(e)}`);
    return e;
  }
  assert.fail("decoding should have failed");
}

function encodeError(json: unknown): DotsCborError {
  try {
    encodeDotsCbor(json as Record<string, unknown>);
  } catch (e) {
    assert.ok(e instanceof DotsCborError, `expected DotsCborError, got ${String(e)}`);
    return e;
  }
  assert.fail("encoding should have failed");
}

const MS = "ietf-dots-signal-channel:mitigation-scope";

describe("DOTS CBOR: RFC vectors", () => {
  it("RFC 9132 Figures 7/8 mitigation request", () => {
    both(
      {
        [MS]: {
          scope: [
            {
              "target-prefix": ["2001:db8:6401::1/128", "2001:db8:6401::2/128"],
              "target-port-range": [{ "lower-port": 80 }, { "lower-port": 443 }, { "lower-port": 8080 }],
              "target-protocol": [6],
              lifetime: 3600,
            },
          ],
        },
      },
      "a101a10281a4068274323030313a6462383a363430313a3a312f31323874323030313a6462383a363430313a3a322f3132380783a1081850a1081901bba108191f900a81060e190e10",
    );
  });

  it("RFC 9132 2.01 response body (mid + granted lifetime)", () => {
    both({ [MS]: { scope: [{ mid: 123, lifetime: 3600 }] } }, "a101a10281a205187b0e190e10");
  });

  it("RFC 9066 Figure 10 call-home request (source-prefix key 32768 = 19 80 00)", () => {
    both(
      {
        [MS]: {
          scope: [
            {
              "target-prefix": ["2001:db8:c000::/128"],
              "ietf-dots-call-home:source-prefix": ["2001:db8:123::1/128"],
              lifetime: 3600,
            },
          ],
        },
      },
      "a101a10281a3068173323030313a6462383a633030303a3a2f3132381980008173323030313a6462383a3132333a3a312f3132380e190e10",
    );
  });

  it("RFC 9066 IPv4 request behind CGN with source-port-range and protocol", () => {
    both(
      {
        [MS]: {
          scope: [
            {
              "target-prefix": ["198.51.100.7/32"],
              "ietf-dots-call-home:source-prefix": ["203.0.113.0/32"],
              "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000, "upper-port": 40010 }],
              "target-protocol": [6],
              lifetime: 3600,
            },
          ],
        },
      },
      "a101a10281a506816f3139382e35312e3130302e372f3332198000816e3230332e302e3131332e302f333219800181a208199c4009199c4a0a81060e190e10",
    );
  });

  it("4.09 legitimate-traffic body: conflict-cause 4 as its label", () => {
    both(
      { [MS]: { scope: [{ "conflict-information": { "conflict-cause": "request-rejected-legitimate-traffic" } }] } },
      "a101a10281a111a11304",
    );
  });

  it("RFC 9066 redirect body (keys 32773..32775)", () => {
    both(
      {
        "ietf-dots-signal-channel:redirected-signal": {
          "ietf-dots-call-home:alt-ch-client": "alt-call-home-client.example",
          "ietf-dots-call-home:alt-ch-client-record": ["2001:db8:6401::1", "2001:db8:6401::2"],
          "ietf-dots-call-home:ttl": 600,
        },
      },
      "a1182ea3198005781c" +
        Buffer.from("alt-call-home-client.example").toString("hex") +
        "19800682" +
        "70" +
        Buffer.from("2001:db8:6401::1").toString("hex") +
        "70" +
        Buffer.from("2001:db8:6401::2").toString("hex") +
        "198007190258",
    );
  });

  it("heartbeat A1 18 31 A1 18 33 F5", () => {
    both({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } }, "a11831a11833f5");
    both({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": false } }, "a11831a11833f4");
  });

  it("accepts an optional leading tag 271", () => {
    assert.deepEqual(decodeDotsCbor(bytes("d9010fa11831a11833f5")), { "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } });
  });

  it("source-icmp-type-range uses unprefixed lower-type/upper-type (32771/32772)", () => {
    both(
      { [MS]: { scope: [{ "ietf-dots-call-home:source-icmp-type-range": [{ "lower-type": 8, "upper-type": 9 }] }] } },
      "a101a10281a119800281a219800308198004" + "09",
    );
  });
});

describe("DOTS CBOR: JSON-view conventions", () => {
  it("decimal64 ack-timeout 2.00 is tag 4 [-2, 200] = C4 82 21 18 C8", () => {
    const json = {
      "ietf-dots-signal-channel:signal-config": { "mitigating-config": { "ack-timeout": { "current-value-decimal": "2.00" } } },
    };
    both(json, "a1181ea11820a11827a1182b" + "c4822118c8");
    // numbers are accepted on input and come back as the canonical string
    const viaNumber = encodeDotsCbor({
      "ietf-dots-signal-channel:signal-config": { "mitigating-config": { "ack-timeout": { "current-value-decimal": 2 } } },
    });
    assert.equal(hex(viaNumber), "a1181ea11820a11827a1182bc4822118c8");
  });

  it("decimal64 from other exponents is normalised to two digits; excess digits are refused", () => {
    const wrap = (dec: string) => "a1181ea11820a11828a1182b" + dec;
    const cfg = (v: string) => ({
      "ietf-dots-signal-channel:signal-config": { "mitigating-config": { "ack-random-factor": { "current-value-decimal": v } } },
    });
    assert.deepEqual(decodeDotsCbor(bytes(wrap("c482200f"))), cfg("1.50")); // [-1, 15]
    assert.deepEqual(decodeDotsCbor(bytes(wrap("c4820002"))), cfg("2.00")); // [0, 2]
    assert.deepEqual(decodeDotsCbor(bytes(wrap("c482221905dc"))), cfg("1.50")); // [-3, 1500]
    assert.equal(decodeError(wrap("c482221905dd")).code, "OUT_OF_RANGE"); // 1.501
    assert.deepEqual(decodeDotsCbor(bytes(wrap("c4822124"))), cfg("-0.05"));
    assert.equal(encodeError(cfg("1.505")).code, "WRONG_TYPE");
    // mantissas beyond 32 bits stay integers on the wire (cbor-x would write a float64 for a number)
    assert.equal(hex(encodeDotsCbor(cfg("100000000.00"))), wrap("c482211b00000002540be400"));
    assert.deepEqual(decodeDotsCbor(bytes(wrap("c482211b00000002540be400"))), cfg("100000000.00"));
  });

  it("lifetime -1 is the negative integer 0x20", () => {
    both({ [MS]: { scope: [{ lifetime: -1 }] } }, "a101a10281a10e20");
    assert.equal(decodeError("a101a10281a10e21").code, "OUT_OF_RANGE"); // -2
    assert.equal(encodeError({ [MS]: { scope: [{ lifetime: -2 }] } }).code, "OUT_OF_RANGE");
    assert.equal(encodeError({ [MS]: { scope: [{ lifetime: 1.5 }] } }).code, "WRONG_TYPE");
  });

  it("64-bit counters: 2^40 and 2^64-1 round-trip as strings without precision loss or float64", () => {
    both({ [MS]: { scope: [{ "bytes-dropped": "1099511627776" }] } }, "a101a10281a118191b0000010000000000");
    both({ [MS]: { scope: [{ "pkts-dropped": "18446744073709551615" }] } }, "a101a10281a1181b1bffffffffffffffff");
    both({ [MS]: { scope: [{ "mitigation-start": "1507818393" }] } }, "a101a10281a10f1a59df7b99");
    // numbers and bigints are accepted on input
    assert.equal(hex(encodeDotsCbor({ [MS]: { scope: [{ "bytes-dropped": 2n ** 40n }] } })), "a101a10281a118191b0000010000000000");
    assert.equal(hex(encodeDotsCbor({ [MS]: { scope: [{ "bps-dropped": 42 }] } })), "a101a10281a1181a182a");
    assert.equal(encodeError({ [MS]: { scope: [{ "bytes-dropped": "18446744073709551616" }] } }).code, "OUT_OF_RANGE");
    assert.equal(encodeError({ [MS]: { scope: [{ "bytes-dropped": 2 ** 60 }] } }).code, "OUT_OF_RANGE");
    assert.equal(encodeError({ [MS]: { scope: [{ "bytes-dropped": "-1" }] } }).code, "WRONG_TYPE");
  });

  it("retry-timer (uint32) is a JSON string and refuses values above 2^32-1 on the wire", () => {
    both({ [MS]: { scope: [{ "conflict-information": { "retry-timer": "60" } }] } }, "a101a10281a111a114183c");
    assert.equal(decodeError("a101a10281a111a1141b0000000100000000").code, "OUT_OF_RANGE");
  });

  it("enumerations: labels in JSON, uints on the wire; numeric codes accepted on input", () => {
    both({ [MS]: { scope: [{ mid: 12332, status: "attack-successfully-mitigated" }] } }, "a101a10281a20519302c1002");
    assert.equal(hex(encodeDotsCbor({ [MS]: { scope: [{ status: 2 }] } })), "a101a10281a11002");
    assert.equal(encodeError({ [MS]: { scope: [{ status: "mitigated" }] } }).code, "OUT_OF_RANGE");
    assert.equal(decodeError("a101a10281a11009").code, "OUT_OF_RANGE");
  });

  it("RFC 9132 session-configuration GET response (Figure 20 values) round-trips", () => {
    const set = {
      "heartbeat-interval": { "max-value": 240, "min-value": 15, "current-value": 30 },
      "missing-hb-allowed": { "max-value": 20, "min-value": 3, "current-value": 15 },
      "probing-rate": { "max-value": 20, "min-value": 5, "current-value": 15 },
      "max-retransmit": { "max-value": 15, "min-value": 2, "current-value": 3 },
      "ack-timeout": { "max-value-decimal": "30.00", "min-value-decimal": "1.00", "current-value-decimal": "2.00" },
      "ack-random-factor": { "max-value-decimal": "4.00", "min-value-decimal": "1.10", "current-value-decimal": "1.50" },
    };
    const json = { "ietf-dots-signal-channel:signal-config": { "mitigating-config": set, "idle-config": set } };
    const wire = encodeDotsCbor(json);
    assert.deepEqual(decodeDotsCbor(wire), json);
    // spot-check the wire: heartbeat-interval {34: 240, 35: 15, 36: 30}
    assert.ok(hex(wire).includes("1821a3182218f018230f18241" + "81e"));
    assert.ok(hex(wire).includes("1829c48221190bb8")); // max-value-decimal 30.00 = [-2, 3000]
  });

  it("attack-detail (RFC 9244 subset) round-trips inside a call-home scope", () => {
    const json = {
      [MS]: {
        scope: [
          {
            "target-prefix": ["198.51.100.7/32"],
            "ietf-dots-call-home:source-prefix": ["203.0.113.5/32"],
            lifetime: 3600,
            "ietf-dots-telemetry:attack-detail": [
              {
                "vendor-id": 32473,
                "attack-id": 77,
                "attack-description": "SYN flood",
                "attack-severity": "high",
                "start-time": "1700000000",
                "top-talker": {
                  talker: [{ "source-prefix": "203.0.113.5/32", "source-port-range": [{ "lower-port": 1024, "upper-port": 2048 }] }],
                },
              },
            ],
          },
        ],
      },
    };
    assert.deepEqual(decodeDotsCbor(encodeDotsCbor(json)), json);
  });
});

describe("DOTS CBOR: unknown keys", () => {
  it("lists every unknown comprehension-required key (1-127, 256-16383) in one error", () => {
    // heartbeat {51: true, 60: 1, 300: 2, 60-in-nested...}
    const e = decodeError("a11831a3183 3f5183c01190 12c02".replace(/ /g, ""));
    assert.equal(e.code, "UNKNOWN_REQUIRED_KEYS");
    assert.deepEqual(e.unknownKeys, [60, 300]);
    assert.equal(e.message, "unknown comprehension-required CBOR keys: 60, 300");
  });

  it("a known key in the wrong place counts as unknown there", () => {
    const e = decodeError("a10e190e10"); // lifetime at top level
    assert.equal(e.code, "UNKNOWN_REQUIRED_KEYS");
    assert.deepEqual(e.unknownKeys, [14]);
  });

  it("skips unknown comprehension-optional keys (128-255, 16384-65535) and reports them", () => {
    const skipped: Array<[number, string]> = [];
    // heartbeat {51: true, 200: [1,2], 49152: {1: "x"}}
    const json = decodeDotsCbor(bytes("a11831a31833f518c882010219c000a1016178"), { onSkippedKey: (k, p) => skipped.push([k, p]) });
    assert.deepEqual(json, { "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } });
    assert.deepEqual(skipped, [
      [200, "/ietf-dots-signal-channel:heartbeat/200"],
      [49152, "/ietf-dots-signal-channel:heartbeat/49152"],
    ]);
  });

  it("encoding refuses a name the schema does not define there", () => {
    const e = encodeError({ [MS]: { scope: [{ "target-prefix": ["192.0.2.1/32"], "source-prefix": ["192.0.2.2/32"] }] } });
    assert.equal(e.code, "UNKNOWN_NAME");
    assert.match(e.message, /"source-prefix"/);
    assert.equal(e.path, `/${MS}/scope/0`);
    assert.equal(encodeError({ "mitigation-scope": {} }).code, "UNKNOWN_NAME");
  });
});

describe("DOTS CBOR: malformed input gives typed errors", () => {
  const cases: Array<[string, string, string]> = [
    ["empty", "", "TRUNCATED"],
    ["truncated map", "a101a102", "TRUNCATED"],
    ["truncated text", "a101a10281a10681746162", "TRUNCATED"],
    ["huge declared array", "a101a1029bffffffffffffffff", "TRUNCATED"],
    ["huge declared text", "a101a10281a106817bffffffffffffffff", "TRUNCATED"],
    ["reserved additional info", "a11831a1183 3fc".replace(/ /g, ""), "MALFORMED"],
    ["stray break", "a11831a1ff00", "MALFORMED"],
    ["trailing bytes", "a11831a11833f500", "MALFORMED"],
    ["invalid utf-8", "a101a10281a1068162c328", "MALFORMED"],
    ["duplicate key", "a11831a21833f51833f4", "MALFORMED"],
    ["text where uint expected (lifetime)", "a101a10281a10e6433363030", "WRONG_TYPE"],
    ["float where uint expected", "a101a10281a10efb40ac200000000000", "WRONG_TYPE"],
    ["port out of range", "a101a10281a10781a1081a00010000", "OUT_OF_RANGE"],
    ["text map key", "a1626869f5", "WRONG_TYPE"],
    ["not a map", "83010203", "WRONG_TYPE"],
    ["key 0", "a100f5", "OUT_OF_RANGE"],
    ["key above 65535", "a11a00010000f5", "OUT_OF_RANGE"],
    ["1-byte simple below 32", "a11831a11833f814", "MALFORMED"],
    ["boolean as int", "a11831a1183301", "WRONG_TYPE"],
    ["decimal without tag", "a1181ea11820a11827a1182b18c8", "WRONG_TYPE"],
  ];
  for (const [what, h, code] of cases) {
    it(`${what} -> ${code}`, () => assert.equal(decodeError(h).code, code));
  }

  it("refuses input above maxBytes before parsing (default 64 KiB)", () => {
    assert.equal(decodeError(Buffer.alloc(65537, 0xa0)).code, "TOO_LARGE");
    assert.equal(decodeError(bytes("a11831a11833f5"), { maxBytes: 6 }).code, "TOO_LARGE");
  });

  it("indefinite-length nesting bombs end in TOO_DEEP, not a stack overflow or hang", () => {
    // heartbeat {200: [_ [_ [_ ...: an unknown optional key whose value is skipped, not parsed
    const e = decodeError(Buffer.concat([bytes("a11831a118c8"), Buffer.alloc(60000, 0x9f)]));
    assert.equal(e.code, "TOO_DEEP");
    const maps = Buffer.concat([bytes("a11831a118c8"), Buffer.from("bf01".repeat(20000), "hex")]);
    assert.equal(decodeError(maps).code, "TOO_DEEP");
    const tags = Buffer.concat([bytes("a11831a118c8"), Buffer.alloc(40000, 0xc4), bytes("00")]);
    assert.equal(decodeError(tags).code, "TOO_DEEP");
  });

  it("indefinite-length containers and strings within limits are accepted", () => {
    // {1: {2: [_ {6: [_ (_ "1.2.3.4", "/32")], 14: 60}]}}
    const wire =
      "a101a1029fa2069f7f67" + Buffer.from("1.2.3.4").toString("hex") + "63" + Buffer.from("/32").toString("hex") + "ffff0e183cff";
    assert.deepEqual(decodeDotsCbor(bytes(wire)), { [MS]: { scope: [{ "target-prefix": ["1.2.3.4/32"], lifetime: 60 }] } });
  });

  it("respects a smaller maxDepth", () => {
    assert.equal(decodeError("a101a10281a10781a1081850", { maxDepth: 5 }).code, "TOO_DEEP");
    assert.ok(decodeDotsCbor(bytes("a101a10281a10781a1081850"), { maxDepth: 6 }));
  });

  it("non-bytes input is a typed error", () => {
    try {
      decodeDotsCbor("a0" as unknown as Uint8Array);
      assert.fail("should throw");
    } catch (e) {
      assert.ok(e instanceof DotsCborError);
      assert.equal(e.code, "WRONG_TYPE");
    }
  });

  it("encode type errors name the member and path", () => {
    const e = encodeError({ [MS]: { scope: [{ "target-port-range": [{ "lower-port": "80" }] }] } });
    assert.equal(e.code, "WRONG_TYPE");
    assert.equal(e.path, `/${MS}/scope/0/target-port-range/0/lower-port`);
    assert.equal(encodeError({ [MS]: { scope: [{ "target-protocol": [256] }] } }).code, "OUT_OF_RANGE");
    assert.equal(encodeError({ [MS]: { scope: {} } }).code, "WRONG_TYPE");
    assert.equal(encodeError(null).code, "WRONG_TYPE");
    assert.equal(encodeError({ [MS]: { scope: [{ "trigger-mitigation": "false" }] } }).code, "WRONG_TYPE");
  });

  it("large messages grow the output; results are independent buffers; over 1 MiB is TOO_LARGE", () => {
    const many = Array.from({ length: 4000 }, (_, i) => `2001:db8:${(i >> 8).toString(16)}:${(i & 255).toString(16)}::/64`);
    const big = encodeDotsCbor({ [MS]: { scope: [{ "target-prefix": many, lifetime: 60 }] } });
    assert.ok(big.length > 60000);
    assert.deepEqual(decodeDotsCbor(big, { maxBytes: 1 << 20 }), { [MS]: { scope: [{ "target-prefix": many, lifetime: 60 }] } });
    const a = encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } });
    encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": false } });
    assert.equal(hex(a), "a11831a11833f5");
    const huge = Array.from({ length: 60000 }, () => "x".repeat(20));
    assert.equal(encodeError({ [MS]: { scope: [{ "target-fqdn": huge }] } }).code, "TOO_LARGE");
  });
});
