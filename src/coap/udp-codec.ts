// RFC 7252 section 3 message format (CoAP over UDP / DTLS).
import type { CoapMessage, CoapType } from "./message";
import { CoapFormatError } from "./errors";
import { optionsAndPayloadLength, readOptionsAndPayload, sortedOptions, writeOptionsAndPayload } from "./option-codec";

const TYPES: readonly CoapType[] = ["CON", "NON", "ACK", "RST"];
/** Largest UDP payload over IPv4; a default limit for decodeUdp. */
export const UDP_MAX_DATAGRAM = 65507;

export interface UdpDecodeOptions {
  /** Reject datagrams longer than this (default UDP_MAX_DATAGRAM). */
  maxMessageSize?: number;
}

function checkToken(token: Buffer): void {
  if (token.length > 8) throw new CoapFormatError("INVALID_MESSAGE", `token of ${token.length} bytes; at most 8`);
}

export function encodeUdp(msg: CoapMessage): Buffer {
  const type = msg.type ?? "CON";
  const typeIndex = TYPES.indexOf(type);
  if (typeIndex < 0) throw new CoapFormatError("INVALID_MESSAGE", `unknown message type ${String(type)}`);
  const mid = msg.messageId ?? 0;
  if (!Number.isInteger(mid) || mid < 0 || mid > 0xffff) throw new CoapFormatError("INVALID_MESSAGE", `message ID ${mid} outside 0..65535`);
  if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xff)
    throw new CoapFormatError("INVALID_MESSAGE", `code ${msg.code} outside one byte`);
  checkToken(msg.token);
  const options = sortedOptions(msg.options);
  const buf = Buffer.allocUnsafe(4 + msg.token.length + optionsAndPayloadLength(options, msg.payload));
  buf[0] = 0x40 | (typeIndex << 4) | msg.token.length;
  buf[1] = msg.code;
  buf.writeUInt16BE(mid, 2);
  msg.token.copy(buf, 4);
  writeOptionsAndPayload(buf, 4 + msg.token.length, options, msg.payload);
  return buf;
}

export function decodeUdp(buf: Buffer, opts: UdpDecodeOptions = {}): CoapMessage {
  const max = opts.maxMessageSize ?? UDP_MAX_DATAGRAM;
  if (buf.length > max) throw new CoapFormatError("OVERSIZE", `datagram of ${buf.length} bytes exceeds ${max}`);
  if (buf.length < 4) throw new CoapFormatError("TRUNCATED", `datagram of ${buf.length} bytes is shorter than the 4-byte header`);
  const version = buf[0] >> 6;
  if (version !== 1) throw new CoapFormatError("BAD_VERSION", `CoAP version ${version}, expected 1`);
  const type = TYPES[(buf[0] >> 4) & 0x03];
  const tkl = buf[0] & 0x0f;
  if (tkl > 8) throw new CoapFormatError("BAD_TOKEN_LENGTH", `token length ${tkl} is reserved`);
  const code = buf[1];
  const messageId = buf.readUInt16BE(2);
  if (code === 0 && buf.length !== 4) {
    // RFC 7252 section 4.1: an Empty message is only the 4-byte header.
    throw new CoapFormatError("BAD_EMPTY_MESSAGE", "empty message (0.00) with bytes after the header");
  }
  if (buf.length < 4 + tkl) throw new CoapFormatError("TRUNCATED", `token of ${tkl} bytes truncated`);
  const token = Buffer.from(buf.subarray(4, 4 + tkl));
  const { options, payload } = readOptionsAndPayload(buf, 4 + tkl, buf.length);
  return { type, code, messageId, token, options, payload };
}
