// Handshake message framing (RFC 6347 section 4.2.2), ClientHello parsing, server message builders,
// and a bounded reassembler for fragmented and out-of-order handshake messages.
import { EMPTY_RENEGOTIATION_INFO_SCSV, ExtensionType, HANDSHAKE_HEADER_LENGTH } from "./constants";

export class DtlsDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DtlsDecodeError";
  }
}

export interface HandshakeFragment {
  readonly msgType: number;
  readonly length: number;
  readonly messageSeq: number;
  readonly fragmentOffset: number;
  readonly fragmentLength: number;
  readonly body: Buffer;
}

/** Splits a handshake record into fragments; throws DtlsDecodeError on bad framing. */
export function parseHandshakeFragments(fragment: Buffer): HandshakeFragment[] {
  const out: HandshakeFragment[] = [];
  let off = 0;
  while (off < fragment.length) {
    if (fragment.length - off < HANDSHAKE_HEADER_LENGTH) throw new DtlsDecodeError("truncated handshake header");
    const msgType = fragment[off];
    const length = fragment.readUIntBE(off + 1, 3);
    const messageSeq = fragment.readUInt16BE(off + 4);
    const fragmentOffset = fragment.readUIntBE(off + 6, 3);
    const fragmentLength = fragment.readUIntBE(off + 9, 3);
    if (fragmentOffset + fragmentLength > length) throw new DtlsDecodeError("fragment beyond message length");
    const start = off + HANDSHAKE_HEADER_LENGTH;
    if (start + fragmentLength > fragment.length) throw new DtlsDecodeError("fragment beyond record");
    out.push({ msgType, length, messageSeq, fragmentOffset, fragmentLength, body: fragment.subarray(start, start + fragmentLength) });
    off = start + fragmentLength;
  }
  return out;
}

/** A whole handshake message with an unfragmented header, the form the transcript hashes (section 4.2.6). */
export function encodeHandshake(msgType: number, messageSeq: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HANDSHAKE_HEADER_LENGTH + body.length);
  out[0] = msgType;
  out.writeUIntBE(body.length, 1, 3);
  out.writeUInt16BE(messageSeq, 4);
  out.writeUIntBE(0, 6, 3);
  out.writeUIntBE(body.length, 9, 3);
  body.copy(out, HANDSHAKE_HEADER_LENGTH);
  return out;
}

/** Bounds-checked reader of handshake bodies; throws DtlsDecodeError when input runs short. */
export class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  get remaining(): number {
    return this.buf.length - this.off;
  }
  u8(): number {
    if (this.remaining < 1) throw new DtlsDecodeError("truncated");
    return this.buf[this.off++];
  }
  u16(): number {
    if (this.remaining < 2) throw new DtlsDecodeError("truncated");
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  bytes(n: number): Buffer {
    if (this.remaining < n) throw new DtlsDecodeError("truncated");
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
}

export interface ClientHello {
  readonly clientVersion: number;
  readonly random: Buffer;
  readonly sessionId: Buffer;
  readonly cookie: Buffer;
  readonly cipherSuites: number[];
  readonly compressionMethods: Buffer;
  /** Raw cipher_suites and compression vectors, bound into the cookie. */
  readonly suitesRaw: Buffer;
  readonly extendedMasterSecret: boolean;
  /** The client signalled RFC 5746 (extension with empty renegotiated_connection, or the SCSV). */
  readonly secureRenegotiation: boolean;
  /** supported_groups (RFC 8422 5.1.1) in the client's order; undefined when the extension is absent. */
  readonly supportedGroups: number[] | undefined;
  /** ec_point_formats (RFC 8422 5.1.2); undefined when the extension is absent. */
  readonly ecPointFormats: Buffer | undefined;
  /** SessionTicket (RFC 5077 3.2): undefined = not offered, empty = supported, else the ticket to resume from. */
  readonly sessionTicket: Buffer | undefined;
  /** signature_algorithms (RFC 5246 7.4.1.4.1) as u16 {hash, signature} pairs; undefined when absent. */
  readonly signatureAlgorithms: number[] | undefined;
  /** connection_id (RFC 9146 3): the CID the client wants in our records (empty: none); undefined when not offered. */
  readonly connectionId: Buffer | undefined;
}

export function parseClientHello(body: Buffer): ClientHello {
  const r = new Reader(body);
  const clientVersion = r.u16();
  const random = r.bytes(32);
  const sessionId = r.bytes(r.u8());
  if (sessionId.length > 32) throw new DtlsDecodeError("session_id longer than 32");
  const cookie = r.bytes(r.u8());
  const suitesLength = r.u16();
  if (suitesLength < 2 || suitesLength % 2 !== 0) throw new DtlsDecodeError("bad cipher_suites length");
  const suitesBytes = r.bytes(suitesLength);
  const cipherSuites: number[] = [];
  for (let i = 0; i < suitesBytes.length; i += 2) cipherSuites.push(suitesBytes.readUInt16BE(i));
  const compressionMethods = r.bytes(r.u8());
  if (compressionMethods.length < 1) throw new DtlsDecodeError("no compression methods");
  let extendedMasterSecret = false;
  let secureRenegotiation = cipherSuites.includes(EMPTY_RENEGOTIATION_INFO_SCSV);
  let supportedGroups: number[] | undefined;
  let ecPointFormats: Buffer | undefined;
  let sessionTicket: Buffer | undefined;
  let signatureAlgorithms: number[] | undefined;
  let connectionId: Buffer | undefined;
  if (r.remaining > 0) {
    const extLength = r.u16();
    const ext = new Reader(r.bytes(extLength));
    const seen = new Set<number>();
    while (ext.remaining > 0) {
      const type = ext.u16();
      const data = ext.bytes(ext.u16());
      if (seen.has(type)) throw new DtlsDecodeError(`duplicate extension ${type}`);
      seen.add(type);
      if (type === ExtensionType.ExtendedMasterSecret) {
        if (data.length !== 0) throw new DtlsDecodeError("extended_master_secret with data");
        extendedMasterSecret = true;
      } else if (type === ExtensionType.RenegotiationInfo) {
        // An initial handshake must carry an empty renegotiated_connection (RFC 5746 3.6).
        if (data.length !== 1 || data[0] !== 0) throw new DtlsDecodeError("renegotiation_info not empty");
        secureRenegotiation = true;
      } else if (type === ExtensionType.SupportedGroups) {
        const list = new Reader(data);
        const groups = list.bytes(list.u16());
        if (list.remaining !== 0 || groups.length % 2 !== 0) throw new DtlsDecodeError("bad supported_groups");
        supportedGroups = u16Values(groups);
      } else if (type === ExtensionType.EcPointFormats) {
        const list = new Reader(data);
        ecPointFormats = list.bytes(list.u8());
        if (list.remaining !== 0 || ecPointFormats.length === 0) throw new DtlsDecodeError("bad ec_point_formats");
      } else if (type === ExtensionType.SessionTicket) {
        sessionTicket = data;
      } else if (type === ExtensionType.SignatureAlgorithms) {
        signatureAlgorithms = parseU16List(data, "signature_algorithms");
      } else if (type === ExtensionType.ConnectionId) {
        const list = new Reader(data);
        connectionId = list.bytes(list.u8());
        if (list.remaining !== 0) throw new DtlsDecodeError("bad connection_id");
      }
    }
  }
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ClientHello");
  const suitesRaw = Buffer.concat([suitesBytes, compressionMethods]);
  return {
    clientVersion,
    random,
    sessionId,
    cookie,
    cipherSuites,
    compressionMethods,
    suitesRaw,
    extendedMasterSecret,
    secureRenegotiation,
    supportedGroups,
    ecPointFormats,
    sessionTicket,
    signatureAlgorithms,
    connectionId,
  };
}

/** A non-empty vector<2..2^16-2> of u16 values, the whole of `data`. */
export function parseU16List(data: Buffer, what: string): number[] {
  const list = new Reader(data);
  const out = readU16Vector(list, what);
  if (list.remaining !== 0) throw new DtlsDecodeError(`bad ${what}`);
  return out;
}

/** Reads a non-empty vector<2..2^16-2> of u16 values at the reader's position. */
export function readU16Vector(r: Reader, what: string): number[] {
  const bytes = r.bytes(r.u16());
  if (bytes.length === 0 || bytes.length % 2 !== 0) throw new DtlsDecodeError(`bad ${what}`);
  return u16Values(bytes);
}

/** Big-endian u16 values of an even-length byte run. */
function u16Values(bytes: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < bytes.length; i += 2) out.push(bytes.readUInt16BE(i));
  return out;
}

export function buildHelloVerifyRequest(cookie: Buffer): Buffer {
  // RFC 6347 4.2.1: server_version DTLS 1.0 regardless of the version to be negotiated.
  return Buffer.concat([Buffer.from([0xfe, 0xff, cookie.length]), cookie]);
}

/**
 * `ecPointFormats`: answer the client's ec_point_formats with "uncompressed" (RFC 8422 5.2: sent
 * when an ECC suite was chosen and the client sent the extension). `sessionTicket`: we will send a
 * NewSessionTicket (RFC 5077 3.2, empty extension). `sessionId`: the client's, echoed when we resume
 * from its ticket (RFC 5077 3.4); empty otherwise (a full handshake keeps no session state here).
 */
export function buildServerHello(
  random: Buffer,
  suiteId: number,
  renegotiationInfo: boolean,
  extendedMasterSecret: boolean,
  ecPointFormats = false,
  sessionTicket = false,
  sessionId: Buffer = Buffer.alloc(0),
  connectionId?: Buffer,
): Buffer {
  const ext: Buffer[] = [];
  if (connectionId) {
    // RFC 9146 3: the CID we want in the client's records.
    const e = Buffer.allocUnsafe(5 + connectionId.length);
    e.writeUInt16BE(0x0036, 0);
    e.writeUInt16BE(1 + connectionId.length, 2);
    e[4] = connectionId.length;
    connectionId.copy(e, 5);
    ext.push(e);
  }
  if (renegotiationInfo) ext.push(Buffer.from([0xff, 0x01, 0x00, 0x01, 0x00]));
  if (extendedMasterSecret) ext.push(Buffer.from([0x00, 0x17, 0x00, 0x00]));
  if (ecPointFormats) ext.push(Buffer.from([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]));
  if (sessionTicket) ext.push(Buffer.from([0x00, 0x23, 0x00, 0x00]));
  const extBytes = Buffer.concat(ext);
  const head = Buffer.allocUnsafe(2 + 32 + 1 + sessionId.length + 2 + 1);
  head.writeUInt16BE(0xfefd, 0);
  random.copy(head, 2);
  head[34] = sessionId.length;
  sessionId.copy(head, 35);
  head.writeUInt16BE(suiteId, 35 + sessionId.length);
  head[37 + sessionId.length] = 0; // null compression
  if (extBytes.length === 0) return head; // node-dtls-client sends no extensions; answer with none
  const len = Buffer.allocUnsafe(2);
  len.writeUInt16BE(extBytes.length, 0);
  return Buffer.concat([head, len, extBytes]);
}

/** RFC 4279 ServerKeyExchange for plain PSK: only the identity hint. */
export function buildPskServerKeyExchange(hint: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + hint.length);
  out.writeUInt16BE(hint.length, 0);
  hint.copy(out, 2);
  return out;
}

export function parsePskClientKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body);
  const identity = r.bytes(r.u16());
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after psk_identity");
  return identity;
}

/**
 * RFC 5489 section 2 ServerKeyExchange: psk_identity_hint<0..2^16-1> + ServerECDHParams
 * (curve_type named_curve (3), NamedCurve, ECPoint public<1..2^8-1>).
 */
export function buildEcdhePskServerKeyExchange(hint: Buffer, group: number, point: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + hint.length + 4 + point.length);
  out.writeUInt16BE(hint.length, 0);
  hint.copy(out, 2);
  let o = 2 + hint.length;
  out[o++] = 3;
  out.writeUInt16BE(group, o);
  o += 2;
  out[o++] = point.length;
  point.copy(out, o);
  return out;
}

/** RFC 5489 ClientKeyExchange: psk_identity<0..2^16-1> + ECPoint ecdh_Yc<1..2^8-1>. */
export function parseEcdhePskClientKeyExchange(body: Buffer): { identity: Buffer; point: Buffer } {
  const r = new Reader(body);
  const identity = r.bytes(r.u16());
  const point = r.bytes(r.u8());
  if (point.length === 0) throw new DtlsDecodeError("empty ECDH public value");
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ecdh_Yc");
  return { identity, point };
}

export interface ReassemblyLimits {
  /** Largest handshake message body accepted. */
  maxMessageLength: number;
  /** How far beyond the next expected message_seq messages are buffered. */
  maxAhead: number;
  /** Total bytes buffered for incomplete or early messages. */
  maxBufferedBytes: number;
}

export interface CompleteMessage {
  readonly msgType: number;
  readonly messageSeq: number;
  readonly body: Buffer;
  /** How many fragments (including duplicates) made it up. */
  readonly fragments: number;
}

interface Partial {
  msgType: number;
  body: Buffer;
  /** Sorted, non-overlapping received byte ranges [start, end). */
  ranges: Array<[number, number]>;
  fragments: number;
}

export type FeedResult = "accepted" | "old" | "dropped";

/** Collects fragments per message_seq and releases whole messages strictly in order. */
export class HandshakeReassembler {
  private readonly partial = new Map<number, Partial>();
  private buffered = 0;

  constructor(
    public nextSeq: number,
    private readonly limits: ReassemblyLimits,
  ) {}

  /** "old" means a retransmission of an already processed message (the peer may have lost our flight). */
  feed(f: HandshakeFragment): FeedResult {
    if (f.messageSeq < this.nextSeq) return "old";
    if (f.messageSeq > this.nextSeq + this.limits.maxAhead) return "dropped";
    if (f.length > this.limits.maxMessageLength) throw new DtlsDecodeError(`handshake message of ${f.length} bytes is over the limit`);
    let p = this.partial.get(f.messageSeq);
    if (!p) {
      if (this.buffered + f.length > this.limits.maxBufferedBytes) return "dropped";
      p = { msgType: f.msgType, body: Buffer.alloc(f.length), ranges: [], fragments: 0 };
      this.partial.set(f.messageSeq, p);
      this.buffered += f.length;
    } else if (p.msgType !== f.msgType || p.body.length !== f.length) {
      throw new DtlsDecodeError("fragments of one message disagree on type or length");
    }
    f.body.copy(p.body, f.fragmentOffset);
    p.fragments++;
    addRange(p.ranges, f.fragmentOffset, f.fragmentOffset + f.fragmentLength);
    return "accepted";
  }

  /** Next whole message in order, if complete. */
  take(): CompleteMessage | undefined {
    const p = this.partial.get(this.nextSeq);
    if (!p) return undefined;
    const complete = p.body.length === 0 || (p.ranges.length === 1 && p.ranges[0][0] === 0 && p.ranges[0][1] === p.body.length);
    if (!complete) return undefined;
    this.partial.delete(this.nextSeq);
    this.buffered -= p.body.length;
    return { msgType: p.msgType, messageSeq: this.nextSeq++, body: p.body, fragments: p.fragments };
  }

  get bufferedBytes(): number {
    return this.buffered;
  }
}

function addRange(ranges: Array<[number, number]>, start: number, end: number): void {
  if (end <= start) return;
  ranges.push([start, end]);
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  ranges.length = 0;
  ranges.push(...merged);
}

/**
 * Splits an encoded handshake message (unfragmented header + body) into fragments whose bodies are
 * at most `maxBody` bytes (RFC 6347 4.2.3), so a flight with certificates fits the path MTU.
 */
export function fragmentHandshake(message: Buffer, maxBody: number): Buffer[] {
  const body = message.subarray(HANDSHAKE_HEADER_LENGTH);
  if (body.length <= maxBody) return [message];
  const out: Buffer[] = [];
  for (let offset = 0; offset < body.length; offset += maxBody) {
    const piece = body.subarray(offset, Math.min(body.length, offset + maxBody));
    const f = Buffer.allocUnsafe(HANDSHAKE_HEADER_LENGTH + piece.length);
    message.copy(f, 0, 0, 6); // type, total length, message_seq
    f.writeUIntBE(offset, 6, 3);
    f.writeUIntBE(piece.length, 9, 3);
    piece.copy(f, HANDSHAKE_HEADER_LENGTH);
    out.push(f);
  }
  return out;
}
