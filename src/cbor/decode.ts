// CBOR bytes -> DOTS JSON view, driven by the key table.
//
// This is a small purpose-built reader rather than cbor-x's decoder: cbor-x interprets tags a peer
// controls (27 builds Error/RegExp objects, 28/29 shared references, 258 sets, record and packed
// string tags), and recursion depth and allocation there are not ours to bound. Here every item is
// checked against the bytes left, nesting is capped, and only the DOTS types are understood, so any
// input ends in a JSON view or a DotsCborError, in time linear in its length.
import { isUtf8 } from "node:buffer";
import { DotsCborError, DotsCborErrorCode } from "./errors";
import { CompiledRow, DotsKeyRow, DotsScope, Kind, ROOT, SCOPES, isComprehensionRequired } from "./schema";

export interface DecodeOptions {
  /** Larger inputs are refused with TOO_LARGE before any parsing. Default 65536. */
  maxBytes?: number;
  /** Nesting limit (maps, arrays and tags each count one level). Default 16. */
  maxDepth?: number;
  /** Told about every unknown comprehension-optional key that was skipped (never fatal). */
  onSkippedKey?: (key: number, path: string) => void;
}

export const DEFAULT_MAX_BYTES = 65536;
export const DEFAULT_MAX_DEPTH = 16;

const TAG_DECIMAL_FRACTION = 4;
const TAG_DOTS = 271; // RFC 9132 section 10.4: may prefix a DOTS object
const BREAK = 0xff;
const TWO_POW_32 = 0x100000000;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

const TYPE_NAMES = ["unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple/float"];

class Reader {
  pos = 0;
  // Fields of the head read last (kept on the reader to avoid an allocation per item).
  major = 0;
  ai = 0;
  /** The argument; Infinity when it does not fit a double exactly (then `big` holds it). */
  arg = 0;
  big = 0n;
  indefinite = false;
  /** JSON-view path segments of the item being read; joined only when an error needs them. */
  readonly segments: Array<string | number> = [];
  readonly unknownRequired: number[] = [];
  readonly end: number;

  constructor(
    readonly bytes: Buffer,
    readonly maxDepth: number,
    readonly onSkippedKey: ((key: number, path: string) => void) | undefined,
  ) {
    this.end = bytes.length;
  }

  path(): string {
    return this.segments.length === 0 ? "" : `/${this.segments.join("/")}`;
  }

  fail(code: DotsCborErrorCode, message: string): never {
    throw new DotsCborError(code, message, this.path());
  }

  need(n: number): void {
    if (this.pos + n > this.end) this.fail("TRUNCATED", "truncated CBOR");
  }

  enter(depth: number): void {
    if (depth > this.maxDepth) this.fail("TOO_DEEP", `CBOR nesting deeper than ${this.maxDepth} levels`);
  }

  argText(): string {
    return this.arg === Infinity ? this.big.toString() : String(this.arg);
  }

  /** Reads one item head; a break byte where an item must start is malformed. */
  head(): number {
    if (this.pos >= this.end) this.fail("TRUNCATED", "truncated CBOR");
    const b = this.bytes;
    const initial = b[this.pos++];
    const major = initial >> 5;
    const ai = initial & 0x1f;
    this.major = major;
    this.ai = ai;
    this.indefinite = false;
    if (ai < 24) {
      this.arg = ai;
    } else if (ai === 24) {
      this.need(1);
      this.arg = b[this.pos++];
      if (major === 7 && this.arg < 32) this.fail("MALFORMED", "invalid 1-byte simple value");
    } else if (ai === 25) {
      this.need(2);
      this.arg = (b[this.pos] << 8) | b[this.pos + 1];
      this.pos += 2;
    } else if (ai === 26) {
      this.need(4);
      this.arg = b.readUInt32BE(this.pos);
      this.pos += 4;
    } else if (ai === 27) {
      this.need(8);
      const hi = b.readUInt32BE(this.pos);
      const lo = b.readUInt32BE(this.pos + 4);
      this.pos += 8;
      if (hi < 0x200000) {
        this.arg = hi * TWO_POW_32 + lo;
      } else {
        this.arg = Infinity;
        this.big = (BigInt(hi) << 32n) | BigInt(lo);
      }
    } else if (ai === 31) {
      if (major === 7) this.fail("MALFORMED", "unexpected CBOR break");
      if (major < 2 || major === 6) this.fail("MALFORMED", `CBOR major type ${major} cannot be indefinite`);
      this.indefinite = true;
      this.arg = 0;
    } else {
      this.fail("MALFORMED", `reserved CBOR additional information ${ai}`);
    }
    return major;
  }

  atBreak(): boolean {
    if (this.pos >= this.end) this.fail("TRUNCATED", "truncated CBOR");
    if (this.bytes[this.pos] !== BREAK) return false;
    this.pos++;
    return true;
  }

  /** A definite count must leave at least one byte per item: refuses absurd counts up front. */
  checkCount(count: number, bytesPerEntry: number): void {
    if (count * bytesPerEntry > this.end - this.pos) this.fail("TRUNCATED", "truncated CBOR");
  }

  /** Text string after its head was read. */
  text(): string {
    if (!this.indefinite) return this.textChunk(this.arg);
    let out = "";
    while (!this.atBreak()) {
      if (this.head() !== 3 || this.indefinite) this.fail("MALFORMED", "bad chunk in indefinite-length text");
      out += this.textChunk(this.arg);
    }
    return out;
  }

  textChunk(length: number): string {
    this.need(length);
    const b = this.bytes;
    const start = this.pos;
    const stop = start + length;
    this.pos = stop;
    // DOTS text is prefixes, names and numbers: plain ASCII needs no UTF-8 validation.
    let i = start;
    while (i < stop && b[i] < 0x80) i++;
    if (i === stop) return b.toString("latin1", start, stop);
    const slice = b.subarray(start, stop);
    if (!isUtf8(slice)) this.fail("MALFORMED", "text string is not valid UTF-8");
    return slice.toString("utf8");
  }

  /** Skips one complete item, checking it is well formed. */
  skip(depth: number): void {
    const major = this.head();
    switch (major) {
      case 2:
      case 3: {
        if (!this.indefinite) {
          this.need(this.arg);
          this.pos += this.arg;
          return;
        }
        while (!this.atBreak()) {
          if (this.head() !== major || this.indefinite) this.fail("MALFORMED", "bad chunk in indefinite-length string");
          this.need(this.arg);
          this.pos += this.arg;
        }
        return;
      }
      case 4:
      case 5: {
        this.enter(depth + 1);
        const per = major === 5 ? 2 : 1;
        if (this.indefinite) {
          while (!this.atBreak()) for (let i = 0; i < per; i++) this.skip(depth + 1);
          return;
        }
        const count = this.arg;
        this.checkCount(count, per);
        for (let i = 0; i < count * per; i++) this.skip(depth + 1);
        return;
      }
      case 6:
        this.enter(depth + 1);
        this.skip(depth + 1);
        return;
      default:
        return; // integers, simple values and floats: head() consumed them
    }
  }

  wrongType(row: DotsKeyRow, expected: string): never {
    return this.fail("WRONG_TYPE", `${row.name}: expected ${expected}, got CBOR ${TYPE_NAMES[this.major]}`);
  }

  /** Reads a map body (head already read, major 5) whose members belong to `parent`. */
  members(scope: DotsScope, depth: number): Record<string, unknown> {
    this.enter(depth);
    const byKey = scope.byKey;
    const out: Record<string, unknown> = {};
    const indefinite = this.indefinite;
    let remaining = this.arg;
    if (!indefinite) this.checkCount(remaining, 2);
    const segments = this.segments;
    for (;;) {
      if (indefinite) {
        if (this.atBreak()) break;
      } else if (remaining-- === 0) {
        break;
      }
      if (this.head() !== 0) this.fail("WRONG_TYPE", `map key must be an unsigned integer, got CBOR ${TYPE_NAMES[this.major]}`);
      const key = this.arg;
      if (key < 1 || key > 65535) this.fail("OUT_OF_RANGE", `CBOR key ${this.argText()} outside 1..65535`);
      const row = byKey.get(key);
      if (row === undefined) {
        segments.push(key);
        if (isComprehensionRequired(key)) this.unknownRequired.push(key);
        else if (this.onSkippedKey) this.onSkippedKey(key, this.path());
        this.skip(depth);
        segments.pop();
        continue;
      }
      if (out[row.name] !== undefined) this.fail("MALFORMED", `duplicate CBOR key ${key} (${row.name})`);
      segments.push(row.name);
      out[row.name] = this.value(row, depth);
      segments.pop();
    }
    return out;
  }

  /** Array head for a list/leaf-list; returns the count, or -1 for indefinite length. */
  arrayHead(row: DotsKeyRow, depth: number): number {
    if (this.head() !== 4) this.wrongType(row, "an array");
    this.enter(depth + 1);
    if (this.indefinite) return -1;
    this.checkCount(this.arg, 1);
    return this.arg;
  }

  more(count: number, i: number): boolean {
    return count >= 0 ? i < count : !this.atBreak();
  }

  uint(row: DotsKeyRow, max: number): number {
    if (this.head() !== 0) this.wrongType(row, "an unsigned integer");
    if (this.arg > max) this.fail("OUT_OF_RANGE", `${row.name}: ${this.argText()} exceeds ${max}`);
    return this.arg;
  }

  value(row: CompiledRow, depth: number): unknown {
    const segments = this.segments;
    switch (row.kind) {
      case Kind.Container:
        if (this.head() !== 5) this.wrongType(row, "a map");
        return this.members(row.children!, depth + 1);
      case Kind.List: {
        const items: Record<string, unknown>[] = [];
        const count = this.arrayHead(row, depth);
        for (let i = 0; this.more(count, i); i++) {
          segments.push(i);
          if (this.head() !== 5) this.wrongType(row, "a map as list entry");
          items.push(this.members(row.children!, depth + 2));
          segments.pop();
        }
        return items;
      }
      case Kind.StringList: {
        const items: string[] = [];
        const count = this.arrayHead(row, depth);
        for (let i = 0; this.more(count, i); i++) {
          segments.push(i);
          if (this.head() !== 3) this.wrongType(row, "text strings");
          items.push(this.text());
          segments.pop();
        }
        return items;
      }
      case Kind.UintList: {
        const items: number[] = [];
        const count = this.arrayHead(row, depth);
        for (let i = 0; this.more(count, i); i++) {
          segments.push(i);
          items.push(this.uint(row, row.max));
          segments.pop();
        }
        return items;
      }
      case Kind.Uint:
        return this.uint(row, row.max);
      case Kind.UintString: {
        if (this.head() !== 0) this.wrongType(row, "an unsigned integer");
        if (this.arg === Infinity ? this.big > row.maxBig : BigInt(this.arg) > row.maxBig) {
          this.fail("OUT_OF_RANGE", `${row.name}: ${this.argText()} exceeds ${row.maxBig}`);
        }
        return this.argText();
      }
      case Kind.String:
        if (this.head() !== 3) this.wrongType(row, "a text string");
        return this.text();
      case Kind.Boolean:
        if (this.head() === 7 && this.ai === 20) return false;
        if (this.major === 7 && this.ai === 21) return true;
        return this.wrongType(row, "true or false");
      case Kind.Enum: {
        if (this.head() !== 0) this.wrongType(row, "an unsigned integer (enumeration)");
        const label = row.enumTable!.labelByCode.get(this.arg);
        if (label === undefined) this.fail("OUT_OF_RANGE", `${row.name}: unknown enumeration value ${this.argText()}`);
        return label;
      }
      case Kind.Decimal64:
        return this.decimal(row, depth);
      case Kind.Lifetime: {
        const major = this.head();
        if (major === 0 && this.arg <= 0xffffffff) return this.arg;
        if (major === 1 && this.arg === 0) return -1;
        if (major === 0 || major === 1) this.fail("OUT_OF_RANGE", `${row.name}: must be -1 or 0..4294967295`);
        return this.wrongType(row, "an integer");
      }
    }
  }

  /** Signed integer item as BigInt (exponents and mantissas of decimal fractions). */
  integer(row: DotsKeyRow): bigint {
    const major = this.head();
    if (major !== 0 && major !== 1) this.wrongType(row, "an integer inside the decimal fraction");
    const magnitude = this.arg === Infinity ? this.big : BigInt(this.arg);
    return major === 0 ? magnitude : -1n - magnitude;
  }

  /** Tag 4 [exponent, mantissa] -> "d.dd". Any exponent is accepted if the value has at most 2 fraction digits. */
  decimal(row: DotsKeyRow, depth: number): string {
    if (this.head() !== 6 || this.arg !== TAG_DECIMAL_FRACTION) this.wrongType(row, "a decimal fraction (tag 4)");
    this.enter(depth + 1);
    if (this.head() !== 4 || this.indefinite || (this.arg as number) !== 2) this.wrongType(row, "a 2-element array inside tag 4");
    this.enter(depth + 2);
    const exponent = this.integer(row);
    const mantissa = this.integer(row);
    if (exponent < -18n || exponent > 18n) this.fail("OUT_OF_RANGE", `${row.name}: decimal exponent ${exponent} out of range`);
    // Scale to exponent -2 (YANG fraction-digits 2).
    let hundredths: bigint;
    if (exponent >= -2n) {
      hundredths = mantissa * 10n ** (exponent + 2n);
    } else {
      const divisor = 10n ** (-2n - exponent);
      if (mantissa % divisor !== 0n) this.fail("OUT_OF_RANGE", `${row.name}: more than 2 fraction digits`);
      hundredths = mantissa / divisor;
    }
    if (hundredths < INT64_MIN || hundredths > INT64_MAX) this.fail("OUT_OF_RANGE", `${row.name}: outside decimal64`);
    return formatHundredths(hundredths);
  }
}

export function formatHundredths(hundredths: bigint): string {
  const negative = hundredths < 0n;
  const digits = (negative ? -hundredths : hundredths).toString().padStart(3, "0");
  return `${negative ? "-" : ""}${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

export function decodeDots(bytes: Uint8Array, opts: DecodeOptions = {}): Record<string, unknown> {
  if (!(bytes instanceof Uint8Array)) throw new DotsCborError("WRONG_TYPE", "decodeDotsCbor expects bytes (Uint8Array/Buffer)");
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  if (bytes.length > maxBytes) throw new DotsCborError("TOO_LARGE", `CBOR payload of ${bytes.length} bytes exceeds ${maxBytes}`);
  if (bytes.length === 0) throw new DotsCborError("TRUNCATED", "empty CBOR payload");
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new Reader(buf, opts.maxDepth ?? DEFAULT_MAX_DEPTH, opts.onSkippedKey);
  let depth = 1;
  if (r.head() === 6 && r.arg === TAG_DOTS) {
    depth = 2;
    r.head();
  }
  if (r.major !== 5) throw new DotsCborError("WRONG_TYPE", `a DOTS message must be a CBOR map, got ${TYPE_NAMES[r.major]}`);
  const json = r.members(SCOPES.get(ROOT)!, depth);
  if (r.pos !== buf.length) throw new DotsCborError("MALFORMED", `${buf.length - r.pos} trailing bytes after the CBOR item`);
  if (r.unknownRequired.length > 0) {
    const keys = [...new Set(r.unknownRequired)];
    throw new DotsCborError("UNKNOWN_REQUIRED_KEYS", `unknown comprehension-required CBOR keys: ${keys.join(", ")}`, "", keys);
  }
  return json;
}
