// RFC 8323 section 3.2 framing (CoAP over TCP / TLS): Len+TKL nibbles, extended length, code,
// token, options, payload. No version, type or message ID.
import type { CoapMessage } from "./message";
import { CoapFormatError } from "./errors";
import { optionsAndPayloadLength, readOptionsAndPayload, sortedOptions, writeOptionsAndPayload } from "./option-codec";

/** Default upper bound on one frame: RFC 8323 lets peers announce more, we do not accept unbounded. */
export const TCP_DEFAULT_MAX_FRAME = 1024 * 1024;

export interface TcpDecodeOptions {
  /** Reject frames longer than this in total bytes (default TCP_DEFAULT_MAX_FRAME). */
  maxMessageSize?: number;
}

function extendedLengthBytes(nibble: number): number {
  return nibble === 13 ? 1 : nibble === 14 ? 2 : nibble === 15 ? 4 : 0;
}

/**
 * Length in bytes of the frame starting at buf[0], or undefined when more bytes are needed to tell.
 * Throws CoapFormatError for a reserved TKL or a frame above `maxMessageSize`, so a stream reader can
 * abort before buffering it.
 */
export function frameLength(buf: Buffer, maxMessageSize: number = TCP_DEFAULT_MAX_FRAME): number | undefined {
  if (buf.length < 1) return undefined;
  const lenNibble = buf[0] >> 4;
  const tkl = buf[0] & 0x0f;
  if (tkl > 8) throw new CoapFormatError("BAD_TOKEN_LENGTH", `token length ${tkl} is reserved`);
  const ext = extendedLengthBytes(lenNibble);
  if (buf.length < 1 + ext) return undefined;
  let len: number;
  if (ext === 0) len = lenNibble;
  else if (ext === 1) len = buf[1] + 13;
  else if (ext === 2) len = buf.readUInt16BE(1) + 269;
  else len = buf.readUInt32BE(1) + 65805;
  const total = 1 + ext + 1 + tkl + len;
  if (total > maxMessageSize) throw new CoapFormatError("OVERSIZE", `frame of ${total} bytes exceeds ${maxMessageSize}`);
  return total;
}

export function encodeTcp(msg: CoapMessage): Buffer {
  if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xff)
    throw new CoapFormatError("INVALID_MESSAGE", `code ${msg.code} outside one byte`);
  if (msg.token.length > 8) throw new CoapFormatError("INVALID_MESSAGE", `token of ${msg.token.length} bytes; at most 8`);
  const options = sortedOptions(msg.options);
  const len = optionsAndPayloadLength(options, msg.payload);
  if (len > 0xffffffff + 65805) throw new CoapFormatError("INVALID_MESSAGE", "message too long for RFC 8323 framing");
  const lenNibble = len < 13 ? len : len < 269 ? 13 : len < 65805 ? 14 : 15;
  const ext = extendedLengthBytes(lenNibble);
  const tkl = msg.token.length;
  const buf = Buffer.allocUnsafe(1 + ext + 1 + tkl + len);
  buf[0] = (lenNibble << 4) | tkl;
  if (ext === 1) buf[1] = len - 13;
  else if (ext === 2) buf.writeUInt16BE(len - 269, 1);
  else if (ext === 4) buf.writeUInt32BE(len - 65805, 1);
  let pos = 1 + ext;
  buf[pos++] = msg.code;
  msg.token.copy(buf, pos);
  pos += tkl;
  writeOptionsAndPayload(buf, pos, options, msg.payload);
  return buf;
}

/** Decodes exactly one complete frame; trailing or missing bytes are a format error. */
export function decodeTcp(buf: Buffer, opts: TcpDecodeOptions = {}): CoapMessage {
  const max = opts.maxMessageSize ?? TCP_DEFAULT_MAX_FRAME;
  const total = frameLength(buf, max);
  if (total === undefined || buf.length < total) throw new CoapFormatError("TRUNCATED", `frame truncated (${buf.length} bytes)`);
  if (buf.length > total) throw new CoapFormatError("TRUNCATED", `${buf.length - total} bytes after the end of the frame`);
  const tkl = buf[0] & 0x0f;
  const ext = extendedLengthBytes(buf[0] >> 4);
  let pos = 1 + ext;
  if (pos >= total) throw new CoapFormatError("TRUNCATED", "frame has no code byte");
  const code = buf[pos++];
  const token = Buffer.from(buf.subarray(pos, pos + tkl));
  pos += tkl;
  const { options, payload } = readOptionsAndPayload(buf, pos, total);
  return { code, token, options, payload };
}
