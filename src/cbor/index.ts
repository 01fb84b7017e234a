// Public face of the DOTS CBOR layer (RFC 9132 section 6, RFC 9066 section 6).
import { DecodeOptions, decodeDots } from "./decode";
import { encodeDots } from "./encode";
import { TABLE } from "./schema";

export { DotsCborError, DotsCborErrorCode } from "./errors";
export { DecodeOptions, DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH } from "./decode";
export { MAX_ENCODED_BYTES } from "./encode";
export {
  TABLE as DOTS_KEY_TABLE,
  DotsKeyRow,
  DotsValueType,
  ENUMS as DOTS_ENUMS,
  ROOT as DOTS_ROOT,
  isComprehensionRequired,
  membersOf,
  nameOfKey,
} from "./schema";

/** Code -> label of the enumeration named `name` in the key table (e.g. "status", "conflict-cause"). */
export function dotsEnumLabels(name: string): Readonly<Record<number, string>> {
  const row = TABLE.find((r) => r.name === name);
  if (!row || row.type.kind !== "enum") throw new Error(`DOTS key table: no enumeration named ${name}`);
  return Object.freeze(Object.fromEntries(row.type.labels));
}

/** CoAP Content-Format of DOTS payloads (application/dots+cbor). */
export const DOTS_CONTENT_FORMAT = 271;

/**
 * JSON view (YANG names as in the RFC 9132/9066 figures) -> CBOR payload. Throws DotsCborError
 * (UNKNOWN_NAME, WRONG_TYPE, OUT_OF_RANGE, TOO_LARGE) for anything the schema does not allow.
 * Integers always go out as CBOR integers in their shortest form; the Buffer is the caller's own.
 */
export function encodeDotsCbor(json: Record<string, unknown>): Buffer {
  return encodeDots(json);
}

/**
 * CBOR payload -> JSON view. Throws only DotsCborError. Unknown comprehension-optional keys are
 * skipped (reported through opts.onSkippedKey); unknown comprehension-required keys are collected
 * and thrown together as UNKNOWN_REQUIRED_KEYS after the whole payload was checked.
 */
export function decodeDotsCbor(bytes: Uint8Array, opts?: DecodeOptions): Record<string, unknown> {
  return decodeDots(bytes, opts);
}
