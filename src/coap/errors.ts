// One error type for every way CoAP bytes can be wrong, so callers can catch exactly this and
// treat anything else as a bug.

export type CoapFormatErrorCode =
  | "TRUNCATED" // the bytes end before the header, token, option or frame says they should
  | "BAD_VERSION" // UDP version field is not 1
  | "BAD_TOKEN_LENGTH" // TKL 9..15
  | "RESERVED_NIBBLE" // option delta or length nibble 15 outside the payload marker
  | "EMPTY_PAYLOAD" // payload marker followed by no payload
  | "BAD_OPTION_NUMBER" // option number above 65535
  | "OVERSIZE" // message or frame longer than the configured maximum
  | "BAD_EMPTY_MESSAGE" // code 0.00 with token, options or payload (UDP)
  | "BAD_OPTION_VALUE" // an option value does not fit its format (e.g. uint too long)
  | "BAD_SIGNAL" // 7.xx signalling message that breaks RFC 8323 rules
  | "INVALID_MESSAGE"; // a message model that cannot be encoded (encoder side)

export class CoapFormatError extends Error {
  constructor(
    readonly code: CoapFormatErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "CoapFormatError";
  }
}
