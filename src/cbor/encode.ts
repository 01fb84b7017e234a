// DOTS JSON view -> CBOR bytes: the key table turns names into integer keys and JSON values into
// their wire types, then cbor-x writes the result. useRecords/mapsAsObjects false makes cbor-x
// write a Map as a plain CBOR map with integer keys (no tag 259, no record extension).
import { Encoder, Tag } from "cbor-x";
import { DotsCborError } from "./errors";
import { DotsKeyRow, ENUMS, ROOT, SCOPES } from "./schema";

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false });

const TWO_POW_32N = 0x100000000n;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function wrongType(row: DotsKeyRow, expected: string, value: unknown, path: string): never {
  throw new DotsCborError("WRONG_TYPE", `${row.name}: expected ${expected}, got ${describe(value)}`, path);
}

function outOfRange(row: DotsKeyRow, detail: string, path: string): never {
  throw new DotsCborError("OUT_OF_RANGE", `${row.name}: ${detail}`, path);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function encodeMembers(parent: number, obj: Record<string, unknown>, path: string): Map<number, unknown> {
  const scope = SCOPES.get(parent)!;
  const out = new Map<number, unknown>();
  for (const name of Object.keys(obj)) {
    const value = obj[name];
    if (value === undefined) continue; // what JSON.stringify drops, we drop too
    const row = scope.byName.get(name);
    if (row === undefined) {
      const allowed = [...scope.byName.keys()].join(", ");
      throw new DotsCborError("UNKNOWN_NAME", `unknown member "${name}" (allowed here: ${allowed})`, path);
    }
    out.set(row.key, encodeValue(row, value, `${path}/${name}`));
  }
  return out;
}

/** A non-negative integer from a number, bigint or decimal digit string; bigint when >= 2^32. */
function wireUint(row: DotsKeyRow, value: unknown, max: bigint, path: string, allowText: boolean): number | bigint {
  let big: bigint;
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      if (Number.isInteger(value)) outOfRange(row, `${value} is not exactly representable; pass a string or bigint`, path);
      wrongType(row, "an integer", value, path);
    }
    big = BigInt(value);
  } else if (typeof value === "bigint") {
    big = value;
  } else if (allowText && typeof value === "string") {
    if (!/^[0-9]{1,20}$/.test(value)) wrongType(row, "a decimal digit string", value, path);
    big = BigInt(value);
  } else {
    return wrongType(row, allowText ? "an unsigned integer or a digit string" : "an unsigned integer", value, path);
  }
  if (big < 0n || big > max) outOfRange(row, `${value} outside 0..${max}`, path);
  // cbor-x writes numbers >= 2^32 as float64, so those go out as bigint (CBOR major 0, 8 bytes).
  return big < TWO_POW_32N ? Number(big) : big;
}

/** "2.00" / "-1.5" / 2 / 1.5 -> hundredths. */
function hundredths(row: DotsKeyRow, value: unknown, path: string): number | bigint {
  let scaled: bigint;
  if (typeof value === "string") {
    const m = /^(-?)([0-9]{1,17})(?:\.([0-9]{1,2}))?$/.exec(value);
    if (!m) wrongType(row, 'a decimal string with at most 2 fraction digits, like "2.00"', value, path);
    scaled = BigInt(m[2]) * 100n + BigInt((m[3] ?? "").padEnd(2, "0"));
    if (m[1] === "-") scaled = -scaled;
  } else if (typeof value === "number" && Number.isFinite(value)) {
    const x = Math.round(value * 100);
    if (Math.abs(x - value * 100) > 1e-6 || !Number.isSafeInteger(x)) outOfRange(row, `${value} needs more than 2 fraction digits`, path);
    scaled = BigInt(x);
  } else {
    return wrongType(row, "a decimal string", value, path);
  }
  if (scaled < INT64_MIN || scaled > INT64_MAX) outOfRange(row, "outside decimal64", path);
  // cbor-x writes numbers beyond 32 bits as float64; bigint keeps them integers.
  return scaled >= -TWO_POW_32N && scaled < TWO_POW_32N ? Number(scaled) : scaled;
}

function encodeValue(row: DotsKeyRow, value: unknown, path: string): unknown {
  const type = row.type;
  switch (type.kind) {
    case "container":
      if (!isPlainObject(value)) wrongType(row, "an object", value, path);
      return encodeMembers(row.key, value, path);
    case "list":
      if (!Array.isArray(value)) wrongType(row, "an array of objects", value, path);
      return value.map((item, i) => {
        if (!isPlainObject(item)) wrongType(row, "an object as list entry", item, `${path}/${i}`);
        return encodeMembers(row.key, item, `${path}/${i}`);
      });
    case "string-list":
      if (!Array.isArray(value)) wrongType(row, "an array of strings", value, path);
      for (let i = 0; i < value.length; i++) {
        if (typeof value[i] !== "string") wrongType(row, "strings", value[i], `${path}/${i}`);
      }
      return value;
    case "uint-list":
      if (!Array.isArray(value)) wrongType(row, "an array of integers", value, path);
      return value.map((item, i) => wireUint(row, item, BigInt(type.max), `${path}/${i}`, false));
    case "uint":
      return wireUint(row, value, BigInt(type.max), path, false);
    case "uint-string":
      return wireUint(row, value, type.max, path, true);
    case "string":
      if (typeof value !== "string") wrongType(row, "a string", value, path);
      return value;
    case "boolean":
      if (typeof value !== "boolean") wrongType(row, "true or false", value, path);
      return value;
    case "enum": {
      const table = ENUMS.get(row.key)!;
      if (typeof value === "string") {
        const code = table.codeByLabel.get(value);
        if (code === undefined) outOfRange(row, `unknown label "${value}" (one of: ${[...table.codeByLabel.keys()].join(", ")})`, path);
        return code;
      }
      if (typeof value === "number" && table.labelByCode.has(value)) return value;
      return wrongType(row, `one of ${[...table.codeByLabel.keys()].join(", ")}`, value, path);
    }
    case "decimal64":
      return new Tag([-2, hundredths(row, value, path)], 4);
    case "lifetime":
      if (typeof value !== "number" || !Number.isInteger(value)) wrongType(row, "an integer", value, path);
      if (value !== -1 && (value < 0 || value > 0xffffffff)) outOfRange(row, `${value} must be -1 or 0..4294967295`, path);
      return value;
  }
}

export function encodeDots(json: Record<string, unknown>): Buffer {
  if (!isPlainObject(json)) throw new DotsCborError("WRONG_TYPE", `a DOTS message must be an object, got ${describe(json)}`);
  return encoder.encode(encodeMembers(ROOT, json, ""));
}
