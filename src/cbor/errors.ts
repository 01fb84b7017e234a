// The one error type the DOTS CBOR layer throws. Its message is written to be sent as-is as the
// diagnostic payload of a CoAP 4.00 (RFC 9132 section 9 wants a diagnostic on every 4.xx).

export type DotsCborErrorCode =
  /** Comprehension-required keys (1-127, 256-16383) this implementation does not know here. */
  | "UNKNOWN_REQUIRED_KEYS"
  /** A value of the wrong CBOR/JSON type for its key (text where a uint belongs, ...). */
  | "WRONG_TYPE"
  /** Right type, value outside the range of its YANG type (port 70000, unknown enum label, ...). */
  | "OUT_OF_RANGE"
  /** Not well-formed CBOR: reserved additional info, stray break, trailing bytes, bad UTF-8, ... */
  | "MALFORMED"
  /** The bytes end in the middle of an item. */
  | "TRUNCATED"
  /** More bytes than the decoder's maxBytes (or, encoding, more than MAX_ENCODED_BYTES). */
  | "TOO_LARGE"
  /** Nesting deeper than the decoder's maxDepth. */
  | "TOO_DEEP"
  /** Encoding: a JSON member name that the schema does not define at that place. */
  | "UNKNOWN_NAME";

export class DotsCborError extends Error {
  override readonly name = "DotsCborError";

  constructor(
    readonly code: DotsCborErrorCode,
    message: string,
    /** JSON-view path of the offending item ("" for the whole message), e.g. "/ietf-dots-signal-channel:mitigation-scope/scope/0/lifetime". */
    readonly path: string = "",
    /** For UNKNOWN_REQUIRED_KEYS: every unknown comprehension-required key, in order of appearance. */
    readonly unknownKeys: number[] = [],
  ) {
    super(path ? `${message} (at ${path})` : message);
  }
}
