// Typed access to the options DOTS uses. Values stay raw Buffers in the model; these helpers do the
// uint / string conversions of RFC 7252 section 3.2 and the Block2 layout of RFC 7959.
import { type CoapOption, OptionNumber } from "./message";
import { CoapFormatError } from "./errors";

/** Minimal-length big-endian uint; 0 is the empty value (RFC 7252 section 3.2). */
export function encodeUint(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0)
    throw new CoapFormatError("BAD_OPTION_VALUE", `uint option value ${n} is not a non-negative integer`);
  if (n === 0) return Buffer.alloc(0);
  const bytes: number[] = [];
  let v = n;
  while (v > 0) {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  }
  return Buffer.from(bytes);
}

/** Reads a uint option value of at most `maxBytes` bytes (leading zeros are tolerated). */
export function decodeUint(value: Buffer, maxBytes = 4): number {
  if (value.length > maxBytes) throw new CoapFormatError("BAD_OPTION_VALUE", `uint option of ${value.length} bytes; at most ${maxBytes}`);
  let n = 0;
  for (const b of value) n = n * 256 + b;
  return n;
}

export function uintOption(number: number, n: number): CoapOption {
  return { number, value: encodeUint(n) };
}

export function stringOption(number: number, s: string): CoapOption {
  return { number, value: Buffer.from(s, "utf8") };
}

/** Odd option numbers are critical: an endpoint that does not know one must reject the message. */
export function isCritical(number: number): boolean {
  return (number & 1) === 1;
}

/** Bit 1 set: a proxy must not forward it blindly (RFC 7252 section 5.4.6). */
export function isUnsafe(number: number): boolean {
  return (number & 2) === 2;
}

export function getOption(options: readonly CoapOption[], number: number): Buffer | undefined {
  for (const o of options) if (o.number === number) return o.value;
  return undefined;
}

export function getOptions(options: readonly CoapOption[], number: number): Buffer[] {
  return options.filter((o) => o.number === number).map((o) => o.value);
}

export function hasOption(options: readonly CoapOption[], number: number): boolean {
  return options.some((o) => o.number === number);
}

/** A copy of `options` without any `number` option. */
export function withoutOption(options: readonly CoapOption[], number: number): CoapOption[] {
  return options.filter((o) => o.number !== number);
}

/** A copy of `options` where every `number` option is replaced by `values` (none = removed). */
export function withOption(options: readonly CoapOption[], number: number, ...values: Buffer[]): CoapOption[] {
  return [...withoutOption(options, number), ...values.map((value) => ({ number, value }))];
}

function getUintOption(options: readonly CoapOption[], number: number, maxBytes: number): number | undefined {
  const v = getOption(options, number);
  return v === undefined ? undefined : decodeUint(v, maxBytes);
}

// Uri-Path / Uri-Query ---------------------------------------------------------------------------

export function getUriPath(options: readonly CoapOption[]): string[] {
  return getOptions(options, OptionNumber.UriPath).map((v) => v.toString("utf8"));
}

/**
 * Uri-Path options of fixed segments (".well-known", "dots", "hb", ...), made once: every heartbeat
 * names them. Segments with parameters (cuid=..., mid=...) differ per request and are not kept.
 * Options are values: nothing writes to one after it is made.
 */
const fixedSegmentOptions = new Map<string, CoapOption>();
const FIXED_SEGMENTS_KEPT = 64;

function uriPathOption(segment: string): CoapOption {
  if (segment.length > 32 || segment.includes("=")) return stringOption(OptionNumber.UriPath, segment);
  let option = fixedSegmentOptions.get(segment);
  if (option === undefined) {
    option = stringOption(OptionNumber.UriPath, segment);
    if (fixedSegmentOptions.size < FIXED_SEGMENTS_KEPT) fixedSegmentOptions.set(segment, option);
  }
  return option;
}

export function uriPathOptions(segments: readonly string[]): CoapOption[] {
  return segments.map(uriPathOption);
}

/** "/.well-known/dots/mitigate" -> [".well-known", "dots", "mitigate"]. */
export function splitPath(path: string): string[] {
  return path.split("/").filter((s) => s.length > 0);
}

export function getUriQuery(options: readonly CoapOption[]): string[] {
  return getOptions(options, OptionNumber.UriQuery).map((v) => v.toString("utf8"));
}

export function uriQueryOptions(params: readonly string[]): CoapOption[] {
  return params.map((s) => stringOption(OptionNumber.UriQuery, s));
}

// Content-Format, Observe, Max-Age, Hop-Limit, Size2 ---------------------------------------------

export function getContentFormat(options: readonly CoapOption[]): number | undefined {
  return getUintOption(options, OptionNumber.ContentFormat, 2);
}

/** Content-Format options by format, made once (a handful of formats are ever used). */
const contentFormatOptions = new Map<number, CoapOption>();

export function contentFormatOption(format: number): CoapOption {
  if (!Number.isInteger(format) || format < 0 || format > 0xffff)
    throw new CoapFormatError("BAD_OPTION_VALUE", `Content-Format ${format} outside 0..65535`);
  let option = contentFormatOptions.get(format);
  if (option === undefined) {
    option = uintOption(OptionNumber.ContentFormat, format);
    if (contentFormatOptions.size < 16) contentFormatOptions.set(format, option);
  }
  return option;
}

export function getObserve(options: readonly CoapOption[]): number | undefined {
  return getUintOption(options, OptionNumber.Observe, 3);
}

export function observeOption(n: number): CoapOption {
  return uintOption(OptionNumber.Observe, n & 0xffffff);
}

/** Max-Age in seconds, or undefined when absent (the RFC 7252 default is then 60). */
export function getMaxAge(options: readonly CoapOption[]): number | undefined {
  return getUintOption(options, OptionNumber.MaxAge, 4);
}

export function maxAgeOption(seconds: number): CoapOption {
  return uintOption(OptionNumber.MaxAge, seconds);
}

export function getHopLimit(options: readonly CoapOption[]): number | undefined {
  const v = getOption(options, OptionNumber.HopLimit);
  if (v === undefined) return undefined;
  if (v.length !== 1 || v[0] === 0) throw new CoapFormatError("BAD_OPTION_VALUE", "Hop-Limit must be one byte, 1..255");
  return v[0];
}

export function hopLimitOption(n: number): CoapOption {
  if (!Number.isInteger(n) || n < 1 || n > 255) throw new CoapFormatError("BAD_OPTION_VALUE", `Hop-Limit ${n} outside 1..255`);
  return { number: OptionNumber.HopLimit, value: Buffer.from([n]) };
}

export function getSize2(options: readonly CoapOption[]): number | undefined {
  return getUintOption(options, OptionNumber.Size2, 4);
}

export function size2Option(n: number): CoapOption {
  return uintOption(OptionNumber.Size2, n);
}

// ETag / If-Match -------------------------------------------------------------------------------

export function getETag(options: readonly CoapOption[]): Buffer | undefined {
  return getOption(options, OptionNumber.ETag);
}

export function etagOption(tag: Buffer): CoapOption {
  if (tag.length < 1 || tag.length > 8) throw new CoapFormatError("BAD_OPTION_VALUE", `ETag of ${tag.length} bytes; 1..8 allowed`);
  return { number: OptionNumber.ETag, value: tag };
}

/** If-Match; an empty value is how DOTS marks an efficacy update (RFC 9132 section 4.4.3). */
export function ifMatchOption(value: Buffer = Buffer.alloc(0)): CoapOption {
  if (value.length > 8) throw new CoapFormatError("BAD_OPTION_VALUE", `If-Match of ${value.length} bytes; 0..8 allowed`);
  return { number: OptionNumber.IfMatch, value };
}

/** True when the request carries an If-Match option with an empty value (DOTS efficacy update). */
export function isEfficacyUpdate(options: readonly CoapOption[]): boolean {
  return options.some((o) => o.number === OptionNumber.IfMatch && o.value.length === 0);
}

// Block2 (RFC 7959 section 2.2) -----------------------------------------------------------------

export interface BlockValue {
  /** Block number. */
  num: number;
  /** More blocks follow. */
  more: boolean;
  /** Size exponent: block size = 2^(szx+4), 0..6 (7 is BERT, TCP only). */
  szx: number;
}

export function blockSize(szx: number): number {
  return 1 << (Math.min(szx, 6) + 4);
}

/** The largest SZX whose block size is <= `bytes` (16 bytes minimum). */
export function szxForSize(bytes: number): number {
  let szx = 6;
  while (szx > 0 && blockSize(szx) > bytes) szx--;
  return szx;
}

export function encodeBlock(b: BlockValue): Buffer {
  if (!Number.isInteger(b.num) || b.num < 0 || b.num > 0xfffff)
    throw new CoapFormatError("BAD_OPTION_VALUE", `block number ${b.num} outside 0..2^20-1`);
  if (!Number.isInteger(b.szx) || b.szx < 0 || b.szx > 7) throw new CoapFormatError("BAD_OPTION_VALUE", `SZX ${b.szx} outside 0..7`);
  return encodeUint(b.num * 16 + (b.more ? 8 : 0) + b.szx);
}

export function decodeBlock(value: Buffer): BlockValue {
  const v = decodeUint(value, 3);
  return { num: Math.floor(v / 16), more: (v & 0x08) !== 0, szx: v & 0x07 };
}

export function block2Option(b: BlockValue): CoapOption {
  return { number: OptionNumber.Block2, value: encodeBlock(b) };
}

export function getBlock2(options: readonly CoapOption[]): BlockValue | undefined {
  const v = getOption(options, OptionNumber.Block2);
  return v === undefined ? undefined : decodeBlock(v);
}
