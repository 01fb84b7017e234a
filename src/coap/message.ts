// The CoAP message model shared by the UDP (RFC 7252) and TCP (RFC 8323) codecs and the endpoint.
import { DOTS_CONTENT_FORMAT } from "../cbor";

/** Message types exist only over UDP; over TCP they are absent. */
export type CoapType = "CON" | "NON" | "ACK" | "RST";

export interface CoapOption {
  /** Option number (RFC 7252 section 12.2 registry). */
  readonly number: number;
  /** Raw option value bytes. */
  readonly value: Buffer;
}

export interface CoapMessage {
  /** UDP only. */
  type?: CoapType;
  /** class << 5 | detail, e.g. 0x03 for PUT, 0x41 for 2.01, 0xe1 for 7.01 CSM. */
  code: number;
  /** UDP only. */
  messageId?: number;
  /** 0..8 bytes. */
  token: Buffer;
  /** In increasing option-number order after decoding; encoders sort (stably) before writing. */
  options: CoapOption[];
  /** Empty buffer when there is no payload. */
  payload: Buffer;
}

/** Option numbers DOTS uses (RFC 7252, 7641, 7959, 8768). */
export const OptionNumber = {
  IfMatch: 1,
  UriHost: 3,
  ETag: 4,
  IfNoneMatch: 5,
  Observe: 6,
  UriPort: 7,
  LocationPath: 8,
  UriPath: 11,
  ContentFormat: 12,
  MaxAge: 14,
  UriQuery: 15,
  HopLimit: 16,
  Accept: 17,
  LocationQuery: 20,
  Block2: 23,
  Block1: 27,
  Size2: 28,
  ProxyUri: 35,
  ProxyScheme: 39,
  Size1: 60,
} as const;

/** Builds a code byte from its dotted form: code(2, 1) === 0x41 (2.01). */
export function code(cls: number, detail: number): number {
  return ((cls & 0x07) << 5) | (detail & 0x1f);
}

/** Parsed codes by their text: at most 256 valid ones, asked for on every response. */
const CODES_BY_TEXT = new Map<string, number>();

/** Parses the dotted form back into a code byte: "4.00" -> 0x80. Throws RangeError on anything else. */
export function codeFromString(c: string): number {
  const known = CODES_BY_TEXT.get(c);
  if (known !== undefined) return known;
  const m = /^([0-7])\.(\d{2})$/.exec(c);
  if (!m || Number(m[2]) > 31) throw new RangeError(`bad CoAP code "${c}"`);
  const value = code(Number(m[1]), Number(m[2]));
  CODES_BY_TEXT.set(c, value);
  return value;
}

/** Renders a code byte as "c.dd", e.g. 0x84 -> "4.04". */
export function codeToString(c: number): string {
  return `${c >> 5}.${String(c & 0x1f).padStart(2, "0")}`;
}

export const Code = {
  Empty: 0x00,
  GET: 0x01,
  POST: 0x02,
  PUT: 0x03,
  DELETE: 0x04,
  Created: 0x41, // 2.01
  Deleted: 0x42, // 2.02
  Valid: 0x43, // 2.03
  Changed: 0x44, // 2.04
  Content: 0x45, // 2.05
  BadRequest: 0x80, // 4.00
  Unauthorized: 0x81, // 4.01
  BadOption: 0x82, // 4.02
  Forbidden: 0x83, // 4.03
  NotFound: 0x84, // 4.04
  MethodNotAllowed: 0x85, // 4.05
  NotAcceptable: 0x86, // 4.06
  RequestEntityIncomplete: 0x88, // 4.08
  Conflict: 0x89, // 4.09
  PreconditionFailed: 0x8c, // 4.12
  RequestEntityTooLarge: 0x8d, // 4.13
  UnsupportedContentFormat: 0x8f, // 4.15
  UnprocessableEntity: 0x96, // 4.22
  TooManyRequests: 0x9d, // 4.29
  InternalServerError: 0xa0, // 5.00
  NotImplemented: 0xa1, // 5.01
  ServiceUnavailable: 0xa3, // 5.03
  HopLimitReached: 0xa8, // 5.08
  CSM: 0xe1, // 7.01
  Ping: 0xe2, // 7.02
  Pong: 0xe3, // 7.03
  Release: 0xe4, // 7.04
  Abort: 0xe5, // 7.05
} as const;

/** application/dots+cbor (RFC 9132 section 10.3). */
export const CONTENT_FORMAT_DOTS_CBOR = DOTS_CONTENT_FORMAT;
/** text/plain; charset=utf-8, for diagnostic payloads. */
export const CONTENT_FORMAT_TEXT = 0;
