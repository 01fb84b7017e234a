// CBOR bytes -> DOTS JSON view, driven by the key table.
//
// This is a small purpose-built reader rather than cbor-x's decoder: cbor-x interprets tags a peer
// controls (27 builds Error/RegExp objects, 28/29 shared references, 258 sets, record and packed
// string tags), and recursion depth and allocation there are not ours to bound. Here every item is
// checked against the bytes left, nesting is capped, and only the DOTS types are understood, so any
// input ends in a JSON view or a DotsCborError, in time linear in its length.
import { isUtf8 } from "node:buffer";
import { DotsCborError } from "./errors";
import { DotsKeyRow, ENUMS, ROOT, SCOPES, isComprehensionRequired } from "./schema";

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

class Reader {
  pos = 0;
  // Fields of the head read last (kept on the reader to avoid an allocation per item).
  major = 0;
  ai = 0;
  /** The argument; Infinity when it does not fit a double exactly (then `big` holds it). */
  arg = 0;
  big = 0n;
  indefinite = false;
  readonly unknownRequired: number[] = [];

  constructor(
    readonly bytes: Buffer,
    readonly maxDepth: number,
    readonly onSkippedKey: ((key: number, path: string) => void) | undefined,
  ) {}

  fail(code: "MALFORMED" | "WRONG_TYPE" | "OUT_OF_RANGE", message: string, path: string): never {
    throw new DotsCborError(code, message, path);
  }

  need(n: number, path: string): void {
    if (this.pos + n > this.bytes.length) throw new DotsCborError("TRUNCATED", "truncated CBOR", path);
  }

  enter(depth: number, path: string): void {
    if (depth > this.maxDepth) {
      throw new DotsCborError("TOO_DEEP", `CBOR nesting deeper than ${this.maxDepth} levels`, path);
    }
  }

  /** Reads one item head; a break byte where an item must start is malformed. */
  head(path: string): void {
    this.need(1, path);
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
      this.need(1, path);
      this.arg = b[this.pos++];
      if (major === 7 && this.arg < 32) this.fail("MALFORMED", "invalid 1-byte simple value", path);
    } else if (ai === 25) {
      this.need(2, path);
      this.arg = (b[this.pos] << 8) | b[this.pos + 1];
      this.pos += 2;
    } else if (ai === 26) {
      this.need(4, path);
      this.arg = b.readUInt32BE(this.pos);
      this.pos += 4;
    } else if (ai === 27) {
      this.need(8, path);
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
      if (major === 7) this.fail("MALFORMED", "unexpected CBOR break", path);
      if (major < 2 || major === 6) this.fail("MALFORMED", `CBOR major type ${major} cannot be indefinite`, path);
      this.indefinite = true;
      this.arg = 0;
    } else {
      this.fail("MALFORMED", `reserved CBOR additional information ${ai}`, path);
    }
  }

  atBreak(path: string): boolean {
    this.need(1, path);
    if (this.bytes[this.pos] !== BREAK) return false;
    this.pos++;
    return true;
  }

  /** A definite count must leave at least one byte per item: refuses absurd counts up front. */
  checkCount(count: number, bytesPerEntry: number, path: string): void {
    if (count * bytesPerEntry > this.bytes.length - this.pos) throw new DotsCborError("TRUNCATED", "truncated CBOR", path);
  }

  /** Text string after its head was read. */
  text(path: string): string {
    if (!this.indefinite) return this.textChunk(this.arg, path);
    let out = "";
    while (!this.atBreak(path)) {
      this.head(path);
      if (this.major !== 3 || this.indefinite) this.fail("MALFORMED", "bad chunk in indefinite-length text", path);
      out += this.textChunk(this.arg, path);
    }
    return out;
  }

  textChunk(length: number, path: string): string {
    this.need(length, path);
    const start = this.pos;
    this.pos += length;
    const slice = this.bytes.subarray(start, this.pos);
    if (!isUtf8(slice)) this.fail("MALFORMED", "text string is not valid UTF-8", path);
    return slice.toString("utf8");
  }

  /** Skips one complete item (head not yet read), checking it is well formed. */
  skip(depth: number, path: string): void {
    this.head(path);
    this.skipRest(depth, path);
  }

  skipRest(depth: number, path: string): void {
    switch (this.major) {
      case 0:
      case 1:
        return;
      case 2:
      case 3: {
        if (!this.indefinite) {
          this.need(this.arg, path);
          this.pos += this.arg;
          return;
        }
        const major = this.major;
        while (!this.atBreak(path)) {
          this.head(path);
          if (this.major !== major || this.indefinite) this.fail("MALFORMED", "bad chunk in indefinite-length string", path);
          this.need(this.arg, path);
          this.pos += this.arg;
        }
        return;
      }
      case 4:
      case 5: {
        this.enter(depth + 1, path);
        const per = this.major === 5 ? 2 : 1;
        if (this.indefinite) {
          while (!this.atBreak(path)) for (let i = 0; i < per; i++) this.skip(depth + 1, path);
          return;
        }
        const count = this.arg;
        this.checkCount(count, per, path);
        for (let i = 0; i < count * per; i++) this.skip(depth + 1, path);
        return;
      }
      case 6:
        this.enter(depth + 1, path);
        this.skip(depth + 1, path);
        return;
      default:
        return; // major 7: head() already consumed simple values and floats
    }
  }
}

function typeName(major: number): string {
  return ["unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple/float"][major];
}

function wrongType(r: Reader, row: DotsKeyRow, expected: string, path: string): never {
  return r.fail("WRONG_TYPE", `${row.name}: expected ${expected}, got CBOR ${typeName(r.major)}`, path);
}

/** Reads a map body (head already read, major 5) whose members belong to `parent`. */
function readMembers(r: Reader, parent: number, depth: number, path: string): Record<string, unknown> {
  r.enter(depth, path);
  const scope = SCOPES.get(parent)!;
  const out: Record<string, unknown> = {};
  const indefinite = r.indefinite;
  let remaining = r.arg;
  if (!indefinite) r.checkCount(remaining, 2, path);
  for (;;) {
    if (indefinite) {
      if (r.atBreak(path)) break;
    } else if (remaining-- === 0) {
      break;
    }
    r.head(path);
    if (r.major !== 0) {
      r.fail("WRONG_TYPE", `map key must be an unsigned integer, got CBOR ${typeName(r.major)}`, path);
    }
    const key = r.arg;
    if (key < 1 || key > 65535) r.fail("OUT_OF_RANGE", `CBOR key ${key === Infinity ? r.big : key} outside 1..65535`, path);
    const row = scope.byKey.get(key);
    if (row === undefined) {
      const where = `${path}/${key}`;
      if (isComprehensionRequired(key)) r.unknownRequired.push(key);
      else r.onSkippedKey?.(key, where);
      r.skip(depth, where);
      continue;
    }
    const where = `${path}/${row.name}`;
    if (out[row.name] !== undefined) r.fail("MALFORMED", `duplicate CBOR key ${key} (${row.name})`, path);
    out[row.name] = readValue(r, row, depth, where);
  }
  return out;
}

function readArrayHead(r: Reader, row: DotsKeyRow, depth: number, path: string): number {
  r.head(path);
  if (r.major !== 4) wrongType(r, row, "an array", path);
  r.enter(depth + 1, path);
  if (r.indefinite) return -1;
  r.checkCount(r.arg, 1, path);
  return r.arg;
}

/** Calls `each` per array element (head not yet read); handles definite and indefinite arrays. */
function forEachElement(r: Reader, row: DotsKeyRow, depth: number, path: string, each: (index: number, path: string) => void): void {
  const count = readArrayHead(r, row, depth, path);
  if (count >= 0) {
    for (let i = 0; i < count; i++) each(i, `${path}/${i}`);
    return;
  }
  for (let i = 0; !r.atBreak(path); i++) each(i, `${path}/${i}`);
}

function readUint(r: Reader, row: DotsKeyRow, max: number, path: string): number {
  r.head(path);
  if (r.major !== 0) wrongType(r, row, "an unsigned integer", path);
  if (r.arg > max) r.fail("OUT_OF_RANGE", `${row.name}: ${r.arg === Infinity ? r.big : r.arg} exceeds ${max}`, path);
  return r.arg;
}

function readValue(r: Reader, row: DotsKeyRow, depth: number, path: string): unknown {
  const type = row.type;
  switch (type.kind) {
    case "container":
      r.head(path);
      if (r.major !== 5) wrongType(r, row, "a map", path);
      return readMembers(r, row.key, depth + 1, path);
    case "list": {
      const items: Record<string, unknown>[] = [];
      forEachElement(r, row, depth, path, (_i, p) => {
        r.head(p);
        if (r.major !== 5) wrongType(r, row, "a map as list entry", p);
        items.push(readMembers(r, row.key, depth + 2, p));
      });
      return items;
    }
    case "string-list": {
      const items: string[] = [];
      forEachElement(r, row, depth, path, (_i, p) => {
        r.head(p);
        if (r.major !== 3) wrongType(r, row, "text strings", p);
        items.push(r.text(p));
      });
      return items;
    }
    case "uint-list": {
      const items: number[] = [];
      forEachElement(r, row, depth, path, (_i, p) => items.push(readUint(r, row, type.max, p)));
      return items;
    }
    case "uint":
      return readUint(r, row, type.max, path);
    case "uint-string": {
      r.head(path);
      if (r.major !== 0) wrongType(r, row, "an unsigned integer", path);
      const value = r.arg === Infinity ? r.big : BigInt(r.arg);
      if (value > type.max) r.fail("OUT_OF_RANGE", `${row.name}: ${value} exceeds ${type.max}`, path);
      return r.arg === Infinity ? r.big.toString() : String(r.arg);
    }
    case "string":
      r.head(path);
      if (r.major !== 3) wrongType(r, row, "a text string", path);
      return r.text(path);
    case "boolean": {
      r.head(path);
      if (r.major === 7 && r.ai === 20) return false;
      if (r.major === 7 && r.ai === 21) return true;
      return wrongType(r, row, "true or false", path);
    }
    case "enum": {
      r.head(path);
      if (r.major !== 0) wrongType(r, row, "an unsigned integer (enumeration)", path);
      const label = ENUMS.get(row.key)!.labelByCode.get(r.arg);
      if (label === undefined) r.fail("OUT_OF_RANGE", `${row.name}: unknown enumeration value ${r.arg === Infinity ? r.big : r.arg}`, path);
      return label;
    }
    case "decimal64":
      return readDecimal(r, row, depth, path);
    case "lifetime": {
      r.head(path);
      if (r.major === 0 && r.arg <= 0xffffffff) return r.arg;
      if (r.major === 1 && r.arg === 0) return -1;
      if (r.major === 0 || r.major === 1) r.fail("OUT_OF_RANGE", `${row.name}: must be -1 or 0..4294967295`, path);
      return wrongType(r, row, "an integer", path);
    }
  }
}

/** Signed integer item as BigInt (exponents and mantissas of decimal fractions). */
function readInteger(r: Reader, row: DotsKeyRow, path: string): bigint {
  r.head(path);
  if (r.major !== 0 && r.major !== 1) wrongType(r, row, "an integer inside the decimal fraction", path);
  const magnitude = r.arg === Infinity ? r.big : BigInt(r.arg);
  return r.major === 0 ? magnitude : -1n - magnitude;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Tag 4 [exponent, mantissa] -> "d.dd". Any exponent is accepted if the value has at most 2 fraction digits. */
function readDecimal(r: Reader, row: DotsKeyRow, depth: number, path: string): string {
  r.head(path);
  if (r.major !== 6 || r.arg !== TAG_DECIMAL_FRACTION) wrongType(r, row, "a decimal fraction (tag 4)", path);
  r.enter(depth + 1, path);
  r.head(path);
  if ((r.major as number) !== 4 || r.indefinite || (r.arg as number) !== 2) wrongType(r, row, "a 2-element array inside tag 4", path);
  r.enter(depth + 2, path);
  const exponent = readInteger(r, row, path);
  const mantissa = readInteger(r, row, path);
  if (exponent < -18n || exponent > 18n) r.fail("OUT_OF_RANGE", `${row.name}: decimal exponent ${exponent} out of range`, path);
  // Scale to exponent -2 (YANG fraction-digits 2).
  let hundredths: bigint;
  if (exponent >= -2n) {
    hundredths = mantissa * 10n ** (exponent + 2n);
  } else {
    const divisor = 10n ** (-2n - exponent);
    if (mantissa % divisor !== 0n) r.fail("OUT_OF_RANGE", `${row.name}: more than 2 fraction digits`, path);
    hundredths = mantissa / divisor;
  }
  if (hundredths < INT64_MIN || hundredths > INT64_MAX) r.fail("OUT_OF_RANGE", `${row.name}: outside decimal64`, path);
  return formatHundredths(hundredths);
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
  r.head("");
  let depth = 1;
  if (r.major === 6 && r.arg === TAG_DOTS) {
    depth = 2;
    r.head("");
  }
  if (r.major !== 5) throw new DotsCborError("WRONG_TYPE", `a DOTS message must be a CBOR map, got ${typeName(r.major)}`);
  const json = readMembers(r, ROOT, depth, "");
  if (r.pos !== buf.length) throw new DotsCborError("MALFORMED", `${buf.length - r.pos} trailing bytes after the CBOR item`);
  if (r.unknownRequired.length > 0) {
    const keys = [...new Set(r.unknownRequired)];
    throw new DotsCborError("UNKNOWN_REQUIRED_KEYS", `unknown comprehension-required CBOR keys: ${keys.join(", ")}`, "", keys);
  }
  return json;
}
