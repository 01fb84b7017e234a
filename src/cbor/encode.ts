// DOTS JSON view -> CBOR bytes, written directly from the key table: integer map keys, plain
// definite-length maps (never tag 259), enumerations as uints, decimal64 as tag 4 [-2, n], and
// integers always as CBOR integers in their shortest form (never float64, whatever their size).
//
// The bytes are the same cbor-x produces with { useRecords: false, mapsAsObjects: false } for
// the equivalent Map (the tests and bench/codec-cbor check that), but writing them here skips
// building the intermediate Map, which was most of the cost, and the float64 trap cbor-x has for
// numbers >= 2^32.
import { DotsCborError, DotsCborErrorCode } from "./errors";
import { CompiledRow, DotsKeyRow, DotsScope, Kind, ROOT, SCOPES } from "./schema";

/** Encoded messages larger than this are refused (RFC 9132 messages fit a 1280-byte datagram). */
export const MAX_ENCODED_BYTES = 1 << 20;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const TWO_POW_32 = 0x100000000;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

// Encoding writes into a reused scratch buffer and copies the result out once: one exact-size
// allocation per message, and results never share memory with each other.
let scratch: Buffer = Buffer.allocUnsafeSlow(1024);
let scratchBusy = false;

/** One encode call: the output buffer plus the JSON path, joined only for an error message. */
class Writer {
  pos = 0;
  readonly segments: Array<string | number> = [];

  constructor(public buf: Buffer) {}

  fail(code: DotsCborErrorCode, message: string): never {
    throw new DotsCborError(code, message, this.segments.length ? `/${this.segments.join("/")}` : "");
  }

  wrongType(row: DotsKeyRow, expected: string, value: unknown): never {
    return this.fail("WRONG_TYPE", `${row.name}: expected ${expected}, got ${describe(value)}`);
  }

  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const size = Math.max(this.buf.length * 2, this.pos + n);
    if (size > MAX_ENCODED_BYTES) this.fail("TOO_LARGE", `encoded message would exceed ${MAX_ENCODED_BYTES} bytes`);
    const bigger = Buffer.allocUnsafeSlow(size);
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  /** Item head with the shortest argument encoding (RFC 8949 preferred serialisation). */
  head(major: number, n: number): void {
    this.room(9);
    const b = this.buf;
    const m = major << 5;
    if (n < 24) {
      b[this.pos++] = m | n;
    } else if (n < 0x100) {
      b[this.pos++] = m | 24;
      b[this.pos++] = n;
    } else if (n < 0x10000) {
      b[this.pos++] = m | 25;
      b[this.pos++] = n >> 8;
      b[this.pos++] = n & 0xff;
    } else if (n < TWO_POW_32) {
      b[this.pos++] = m | 26;
      b.writeUInt32BE(n, this.pos);
      this.pos += 4;
    } else {
      b[this.pos++] = m | 27;
      b.writeUInt32BE(Math.floor(n / TWO_POW_32), this.pos);
      b.writeUInt32BE(n % TWO_POW_32, this.pos + 4);
      this.pos += 8;
    }
  }

  bigHead(major: number, n: bigint): void {
    if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return this.head(major, Number(n));
    this.room(9);
    this.buf[this.pos++] = (major << 5) | 27;
    this.buf.writeBigUInt64BE(n, this.pos);
    this.pos += 8;
  }

  /** Signed integer (decimal mantissas). */
  int(n: bigint): void {
    if (n >= 0n) this.bigHead(0, n);
    else this.bigHead(1, -1n - n);
  }

  text(s: string): void {
    const length = s.length;
    if (length < 24) {
      // Short ASCII (prefixes, names): copy the code units directly.
      this.room(1 + length);
      const b = this.buf;
      const start = this.pos + 1;
      let i = 0;
      for (; i < length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[start + i] = c;
      }
      if (i === length) {
        b[this.pos] = 0x60 | length;
        this.pos = start + length;
        return;
      }
    }
    const bytes = Buffer.byteLength(s, "utf8");
    this.head(3, bytes);
    this.room(bytes);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  members(scope: DotsScope, obj: Record<string, unknown>): void {
    const byName = scope.byName;
    let count = 0;
    for (const name in obj) if (Object.prototype.hasOwnProperty.call(obj, name) && obj[name] !== undefined) count++;
    this.head(5, count);
    const segments = this.segments;
    for (const name in obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, name)) continue;
      const value = obj[name];
      if (value === undefined) continue; // what JSON.stringify drops, we drop too
      const row = byName.get(name);
      if (row === undefined) {
        this.fail("UNKNOWN_NAME", `unknown member "${name}" (allowed here: ${[...byName.keys()].join(", ")})`);
      }
      segments.push(name);
      this.head(0, row.key);
      this.value(row, value);
      segments.pop();
    }
  }

  /** uint8/16/32 from a JSON number (bigint tolerated). */
  uint(row: DotsKeyRow, value: unknown, max: number): void {
    if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= max) return this.head(0, value);
    if (typeof value === "bigint" && value >= 0n && value <= BigInt(max)) return this.head(0, Number(value));
    if ((typeof value === "number" && Number.isInteger(value)) || typeof value === "bigint") {
      this.fail("OUT_OF_RANGE", `${row.name}: ${value} outside 0..${max}`);
    }
    this.wrongType(row, "an unsigned integer", value);
  }

  /** uint32/uint64 shown as text in JSON: digit string, safe integer or bigint. */
  bigUint(row: DotsKeyRow, value: unknown, max: bigint): void {
    let big: bigint;
    if (typeof value === "string") {
      if (!/^[0-9]{1,20}$/.test(value)) this.wrongType(row, "a decimal digit string", value);
      big = BigInt(value);
    } else if (typeof value === "number") {
      if (!Number.isSafeInteger(value)) {
        if (Number.isInteger(value))
          this.fail("OUT_OF_RANGE", `${row.name}: ${value} is not exactly representable; pass a string or bigint`);
        this.wrongType(row, "an integer", value);
      }
      big = BigInt(value);
    } else if (typeof value === "bigint") {
      big = value;
    } else {
      return this.wrongType(row, "an unsigned integer or a digit string", value);
    }
    if (big < 0n || big > max || big > UINT64_MAX) this.fail("OUT_OF_RANGE", `${row.name}: ${value} outside 0..${max}`);
    this.bigHead(0, big);
  }

  /** "2.00" / "-1.5" / 2 / 1.5 -> tag 4 [-2, hundredths]. */
  decimal(row: DotsKeyRow, value: unknown): void {
    let scaled: bigint;
    if (typeof value === "string") {
      const m = /^(-?)([0-9]{1,17})(?:\.([0-9]{1,2}))?$/.exec(value);
      if (!m) return this.wrongType(row, 'a decimal string with at most 2 fraction digits, like "2.00"', value);
      scaled = BigInt(m[2]) * 100n + BigInt((m[3] ?? "").padEnd(2, "0"));
      if (m[1] === "-") scaled = -scaled;
    } else if (typeof value === "number" && Number.isFinite(value)) {
      const x = Math.round(value * 100);
      if (Math.abs(x - value * 100) > 1e-6 || !Number.isSafeInteger(x))
        this.fail("OUT_OF_RANGE", `${row.name}: ${value} needs more than 2 fraction digits`);
      scaled = BigInt(x);
    } else {
      return this.wrongType(row, "a decimal string", value);
    }
    if (scaled < INT64_MIN || scaled > INT64_MAX) this.fail("OUT_OF_RANGE", `${row.name}: outside decimal64`);
    this.head(6, 4);
    this.head(4, 2);
    this.head(1, 1); // exponent -2
    this.int(scaled);
  }

  value(row: CompiledRow, value: unknown): void {
    const segments = this.segments;
    switch (row.kind) {
      case Kind.Container:
        if (!isPlainObject(value)) this.wrongType(row, "an object", value);
        return this.members(row.children!, value);
      case Kind.List:
        if (!Array.isArray(value)) this.wrongType(row, "an array of objects", value);
        this.head(4, value.length);
        for (let i = 0; i < value.length; i++) {
          segments.push(i);
          const item: unknown = value[i];
          if (!isPlainObject(item)) this.wrongType(row, "an object as list entry", item);
          this.members(row.children!, item);
          segments.pop();
        }
        return;
      case Kind.StringList:
        if (!Array.isArray(value)) this.wrongType(row, "an array of strings", value);
        this.head(4, value.length);
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (typeof item !== "string") {
            segments.push(i);
            this.wrongType(row, "strings", item);
          }
          this.text(item);
        }
        return;
      case Kind.UintList:
        if (!Array.isArray(value)) this.wrongType(row, "an array of integers", value);
        this.head(4, value.length);
        for (let i = 0; i < value.length; i++) {
          segments.push(i);
          this.uint(row, value[i], row.max);
          segments.pop();
        }
        return;
      case Kind.Uint:
        return this.uint(row, value, row.max);
      case Kind.UintString:
        return this.bigUint(row, value, row.maxBig);
      case Kind.String:
        if (typeof value !== "string") this.wrongType(row, "a string", value);
        return this.text(value);
      case Kind.Boolean:
        if (typeof value !== "boolean") this.wrongType(row, "true or false", value);
        this.room(1);
        this.buf[this.pos++] = value ? 0xf5 : 0xf4;
        return;
      case Kind.Enum: {
        const table = row.enumTable!;
        if (typeof value === "string") {
          const code = table.codeByLabel.get(value);
          if (code === undefined)
            this.fail("OUT_OF_RANGE", `${row.name}: unknown label "${value}" (one of: ${[...table.codeByLabel.keys()].join(", ")})`);
          return this.head(0, code);
        }
        if (typeof value === "number" && table.labelByCode.has(value)) return this.head(0, value);
        return this.wrongType(row, `one of ${[...table.codeByLabel.keys()].join(", ")}`, value);
      }
      case Kind.Decimal64:
        return this.decimal(row, value);
      case Kind.Lifetime:
        if (typeof value !== "number" || !Number.isInteger(value)) this.wrongType(row, "an integer", value);
        if (value === -1) return this.head(1, 0);
        if (value < 0 || value > 0xffffffff) this.fail("OUT_OF_RANGE", `${row.name}: ${value} must be -1 or 0..4294967295`);
        return this.head(0, value);
    }
  }
}

export function encodeDots(json: Record<string, unknown>): Buffer {
  if (!isPlainObject(json)) throw new DotsCborError("WRONG_TYPE", `a DOTS message must be an object, got ${describe(json)}`);
  // A getter in the JSON could re-enter encodeDotsCbor; that nested call gets its own buffer.
  const owner = !scratchBusy;
  const w = new Writer(owner ? scratch : Buffer.allocUnsafeSlow(256));
  scratchBusy = true;
  try {
    w.members(SCOPES.get(ROOT)!, json);
    const out = Buffer.allocUnsafeSlow(w.pos);
    w.buf.copy(out, 0, 0, w.pos);
    return out;
  } finally {
    if (owner) {
      scratchBusy = false;
      if (w.buf.length <= 65536) scratch = w.buf; // keep a grown buffer, within reason
    }
  }
}
