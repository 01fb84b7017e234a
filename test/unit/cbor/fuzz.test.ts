// Property tests: whatever bytes arrive, decodeDotsCbor returns a JSON view or throws a
// DotsCborError (never another exception, never a hang), and whatever it returns encodes back to
// bytes that decode to the same view. Those bytes are also checked against cbor-x (configured as
// RFC 9132 needs: plain maps, integer keys) as an independent encoder of the same structure.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Encoder, Tag } from "cbor-x";
import { DOTS_ENUMS, DOTS_ROOT, DotsCborError, DotsKeyRow, decodeDotsCbor, encodeDotsCbor, membersOf } from "../../../src/cbor";
import { fuzzRuns } from "../../support/fuzz";

// Valid DOTS messages to mutate: most random mutations then reach deep into the schema walk
// instead of failing on the first byte.
const SEEDS = [
  "a101a10281a4068274323030313a6462383a363430313a3a312f31323874323030313a6462383a363430313a3a322f3132380783a1081850a1081901bba108191f900a81060e190e10",
  "a101a10281a506816f3139382e35312e3130302e372f3332198000816e3230332e302e3131332e302f333219800181a208199c4009199c4a0a81060e190e10",
  "a11831a11833f5",
  "a101a10281a111a11304",
  "a1181ea11820a11827a3182bc4822118c81829c48221190bb8182ac482211864",
  "a101a10281a118191b0000010000000000",
  "a101a10281a10e20",
  "a101a10281a119800281a21980030819800409",
].map((h) => Buffer.from(h, "hex"));

function checkOne(bytes: Uint8Array): void {
  let json: Record<string, unknown>;
  try {
    json = decodeDotsCbor(bytes);
  } catch (e) {
    if (!(e instanceof DotsCborError)) throw new Error(`non-DotsCborError for ${Buffer.from(bytes).toString("hex")}: ${String(e)}`);
    return;
  }
  const ours = encodeDotsCbor(json);
  assert.deepEqual(decodeDotsCbor(ours), json, Buffer.from(bytes).toString("hex"));
  assert.equal(Buffer.from(cborX.encode(toCborXMap(DOTS_ROOT, json))).toString("hex"), ours.toString("hex"));
}

const cborX = new Encoder({ useRecords: false, mapsAsObjects: false });

// JSON view -> the Map cbor-x should see, written independently of src/cbor/encode.ts (only the
// key table is shared). Integers >= 2^32 become bigint because cbor-x writes big numbers as float64.
function toCborXMap(parent: number, obj: Record<string, unknown>): Map<number, unknown> {
  const out = new Map<number, unknown>();
  for (const [name, value] of Object.entries(obj)) {
    const row = membersOf(parent).byName.get(name) as DotsKeyRow;
    out.set(row.key, toCborXValue(row, value));
  }
  return out;
}

function toCborXValue(row: DotsKeyRow, value: unknown): unknown {
  const int = (n: bigint): number | bigint => (n >= -(2n ** 32n) && n < 2n ** 32n ? Number(n) : n);
  switch (row.type.kind) {
    case "container":
      return toCborXMap(row.key, value as Record<string, unknown>);
    case "list":
      return (value as Record<string, unknown>[]).map((v) => toCborXMap(row.key, v));
    case "uint-string":
      return int(BigInt(value as string));
    case "enum":
      return DOTS_ENUMS.get(row.key)!.codeByLabel.get(value as string);
    case "decimal64": {
      const [whole, frac] = (value as string).replace("-", "").split(".");
      const magnitude = BigInt(whole) * 100n + BigInt(frac);
      return new Tag([-2, int((value as string).startsWith("-") ? -magnitude : magnitude)], 4);
    }
    default:
      return value;
  }
}

const mutated = fc
  .record({
    seed: fc.constantFrom(...SEEDS),
    edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("set", "insert", "delete", "truncate")), {
      minLength: 1,
      maxLength: 4,
    }),
  })
  .map(({ seed, edits }) => {
    let b = Array.from(seed);
    for (const [at, value, op] of edits) {
      const i = b.length === 0 ? 0 : at % b.length;
      if (op === "set" && b.length > 0) b[i] = value;
      else if (op === "insert") b.splice(i, 0, value);
      else if (op === "delete") b.splice(i, 1);
      else b = b.slice(0, i);
    }
    return Uint8Array.from(b);
  });

describe("DOTS CBOR: fuzz (seeded)", function () {
  this.timeout(60000);

  it("random bytes: only DotsCborError, 50k cases", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 96 }), (b) => checkOne(b)),
      { seed: 9132, numRuns: fuzzRuns(50000) },
    );
  });

  it("mutated valid messages: only DotsCborError, and successful decodes round-trip, 50k cases", () => {
    fc.assert(
      fc.property(mutated, (b) => checkOne(b)),
      { seed: 9066, numRuns: fuzzRuns(50000) },
    );
  });

  it("random bytes behind a valid prefix (inside an unknown optional key): 10k cases", () => {
    const prefix = Buffer.from("a11831a218c8", "hex"); // heartbeat {200: <random>, ...}
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => checkOne(Buffer.concat([prefix, b]))),
      { seed: 8949, numRuns: fuzzRuns(10000) },
    );
  });
});
