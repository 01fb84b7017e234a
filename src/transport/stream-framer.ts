// Cuts an RFC 8323 byte stream (CoAP over TCP/TLS) into whole frames. Only the frame header is
// parsed here (Len/TKL nibbles, extended length, code, token length incl. RFC 8974 extended TKL);
// the CoAP layer decodes the frame itself. The transport layer must not depend on src/coap.

import { TransportError } from "./connection";

/** Default cap on one frame (header + token + options + payload). */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024;

/**
 * Total length of the frame starting at buf[0], or undefined when not enough bytes have arrived to
 * know it. Throws TransportError FRAME_MALFORMED for TKL 15 (reserved, RFC 8974 section 2.1),
 * which leaves the frame boundary unknowable.
 */
export function frameLength(buf: Buffer): number | undefined {
  if (buf.length < 1) return undefined;
  const lenNibble = buf[0] >> 4;
  const tkl = buf[0] & 0x0f;
  if (tkl === 15) throw new TransportError("FRAME_MALFORMED", "RFC 8323 frame with reserved token length 15");
  let offset = 1;
  let bodyLength: number; // options + payload
  if (lenNibble < 13) bodyLength = lenNibble;
  else if (lenNibble === 13) {
    if (buf.length < 2) return undefined;
    bodyLength = buf[1] + 13;
    offset = 2;
  } else if (lenNibble === 14) {
    if (buf.length < 3) return undefined;
    bodyLength = buf.readUInt16BE(1) + 269;
    offset = 3;
  } else {
    if (buf.length < 5) return undefined;
    bodyLength = buf.readUInt32BE(1) + 65805;
    offset = 5;
  }
  offset += 1; // code
  let tokenLength = tkl;
  if (tkl === 13) {
    if (buf.length < offset + 1) return undefined;
    tokenLength = buf[offset] + 13;
    offset += 1;
  } else if (tkl === 14) {
    if (buf.length < offset + 2) return undefined;
    tokenLength = buf.readUInt16BE(offset) + 269;
    offset += 2;
  }
  return offset + tokenLength + bodyLength;
}

/**
 * Accumulates stream chunks and hands back complete frames. Memory stays below maxFrameSize plus
 * one chunk: a header announcing a bigger frame fails at once, before its body is buffered.
 */
export class StreamFramer {
  private chunks: Buffer[] = [];
  private total = 0;
  private failed = false;

  constructor(readonly maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {
    if (!Number.isInteger(maxFrameSize) || maxFrameSize < 2) {
      throw new TransportError("CONFIG", `maxFrameSize must be an integer >= 2, got ${maxFrameSize}`);
    }
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.total;
  }

  /**
   * Adds a chunk; returns the frames it completed (each a separate Buffer, in order). Throws
   * TransportError FRAME_TOO_LARGE or FRAME_MALFORMED; after that the stream is unusable and
   * every further push throws too (the caller must close the connection).
   */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw new TransportError("CLOSED", "stream framer already failed");
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.total += chunk.length;
    const frames: Buffer[] = [];
    try {
      for (;;) {
        const head = this.peek(8); // longest header before the token: 1 + 4 + 1 + 2
        const needed = frameLength(head);
        if (needed === undefined) break;
        if (needed > this.maxFrameSize) {
          throw new TransportError("FRAME_TOO_LARGE", `RFC 8323 frame of ${needed} bytes exceeds the limit of ${this.maxFrameSize}`);
        }
        if (this.total < needed) break;
        frames.push(this.take(needed));
      }
    } catch (e) {
      this.failed = true;
      this.chunks = [];
      this.total = 0;
      throw e;
    }
    return frames;
  }

  /** Drops whatever is buffered (on close). */
  reset(): void {
    this.chunks = [];
    this.total = 0;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length >= n || this.chunks.length === 1) return first.subarray(0, n);
    return Buffer.concat(this.chunks, Math.min(n, this.total)).subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let frame: Buffer;
    if (first.length >= n) {
      // Copy so the frame does not pin a large socket chunk in memory.
      frame = Buffer.from(first.subarray(0, n));
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.total);
      frame = Buffer.from(all.subarray(0, n));
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.total -= n;
    return frame;
  }
}
