// The option list + payload part that RFC 7252 and RFC 8323 share byte for byte.
import type { CoapOption } from "./message";
import { CoapFormatError } from "./errors";

const PAYLOAD_MARKER = 0xff;

/** Options sorted by number; stable, so repeated options keep their order. */
export function sortedOptions(options: readonly CoapOption[]): readonly CoapOption[] {
  for (let i = 1; i < options.length; i++) {
    if (options[i].number < options[i - 1].number) {
      return options
        .map((o, idx) => ({ o, idx }))
        .sort((a, b) => a.o.number - b.o.number || a.idx - b.idx)
        .map((e) => e.o);
    }
  }
  return options;
}

function nibbleExtraBytes(v: number): number {
  return v < 13 ? 0 : v < 269 ? 1 : 2;
}

/** Byte count of the encoded options plus marker and payload. */
export function optionsAndPayloadLength(options: readonly CoapOption[], payload: Buffer): number {
  let len = 0;
  let prev = 0;
  for (const o of options) {
    const delta = o.number - prev;
    len += 1 + nibbleExtraBytes(delta) + nibbleExtraBytes(o.value.length) + o.value.length;
    prev = o.number;
  }
  if (payload.length > 0) len += 1 + payload.length;
  return len;
}

function checkOption(o: CoapOption, prev: number): void {
  if (!Number.isInteger(o.number) || o.number < 0 || o.number > 0xffff) {
    throw new CoapFormatError("INVALID_MESSAGE", `option number ${o.number} outside 0..65535`);
  }
  if (o.number < prev) throw new CoapFormatError("INVALID_MESSAGE", "options not sorted");
  if (o.value.length > 0xffff + 269) throw new CoapFormatError("INVALID_MESSAGE", `option ${o.number} value too long`);
}

/** Writes sorted options, marker and payload at `offset`; returns the end offset. */
export function writeOptionsAndPayload(buf: Buffer, offset: number, options: readonly CoapOption[], payload: Buffer): number {
  let pos = offset;
  let prev = 0;
  for (const o of options) {
    checkOption(o, prev);
    const delta = o.number - prev;
    const len = o.value.length;
    const dn = delta < 13 ? delta : delta < 269 ? 13 : 14;
    const ln = len < 13 ? len : len < 269 ? 13 : 14;
    buf[pos++] = (dn << 4) | ln;
    if (dn === 13) buf[pos++] = delta - 13;
    else if (dn === 14) {
      buf.writeUInt16BE(delta - 269, pos);
      pos += 2;
    }
    if (ln === 13) buf[pos++] = len - 13;
    else if (ln === 14) {
      buf.writeUInt16BE(len - 269, pos);
      pos += 2;
    }
    o.value.copy(buf, pos);
    pos += len;
    prev = o.number;
  }
  if (payload.length > 0) {
    buf[pos++] = PAYLOAD_MARKER;
    payload.copy(buf, pos);
    pos += payload.length;
  }
  return pos;
}

/**
 * Parses options and payload in buf[offset, end). Values and payload are copies, so the caller may
 * reuse the input buffer.
 */
export function readOptionsAndPayload(buf: Buffer, offset: number, end: number): { options: CoapOption[]; payload: Buffer } {
  const options: CoapOption[] = [];
  let pos = offset;
  let number = 0;
  while (pos < end) {
    const b = buf[pos++];
    if (b === PAYLOAD_MARKER) {
      if (pos >= end) throw new CoapFormatError("EMPTY_PAYLOAD", "payload marker followed by no payload");
      return { options, payload: Buffer.from(buf.subarray(pos, end)) };
    }
    let delta = b >> 4;
    let len = b & 0x0f;
    if (delta === 15) throw new CoapFormatError("RESERVED_NIBBLE", "option delta nibble 15 is reserved");
    if (len === 15) throw new CoapFormatError("RESERVED_NIBBLE", "option length nibble 15 is reserved");
    if (delta === 13) {
      if (pos + 1 > end) throw new CoapFormatError("TRUNCATED", "option delta extension truncated");
      delta = buf[pos++] + 13;
    } else if (delta === 14) {
      if (pos + 2 > end) throw new CoapFormatError("TRUNCATED", "option delta extension truncated");
      delta = buf.readUInt16BE(pos) + 269;
      pos += 2;
    }
    if (len === 13) {
      if (pos + 1 > end) throw new CoapFormatError("TRUNCATED", "option length extension truncated");
      len = buf[pos++] + 13;
    } else if (len === 14) {
      if (pos + 2 > end) throw new CoapFormatError("TRUNCATED", "option length extension truncated");
      len = buf.readUInt16BE(pos) + 269;
      pos += 2;
    }
    number += delta;
    if (number > 0xffff) throw new CoapFormatError("BAD_OPTION_NUMBER", `option number ${number} above 65535`);
    if (pos + len > end) throw new CoapFormatError("TRUNCATED", `option ${number} value truncated`);
    options.push({ number, value: Buffer.from(buf.subarray(pos, pos + len)) });
    pos += len;
  }
  return { options, payload: Buffer.alloc(0) };
}
