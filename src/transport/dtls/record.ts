// DTLS 1.2 record layer (RFC 6347 section 4.1): framing of datagrams into records and back.
// Parsing never throws: a malformed tail of a datagram is dropped, as section 4.1.2.7 allows.
import { RECORD_HEADER_LENGTH } from "./constants";

export interface DtlsRecord {
  readonly type: number;
  readonly version: number;
  readonly epoch: number;
  /** 48-bit sequence number; exact as a JS number (< 2^53). */
  readonly sequence: number;
  /** Protected or plaintext fragment, a view into the datagram. */
  readonly fragment: Buffer;
  /** RFC 9146 tls12_cid records: the Connection ID from the header. */
  readonly cid?: Buffer;
}

export interface ParsedDatagram {
  records: DtlsRecord[];
  /** Set when parsing stopped early; the records before it are still usable. */
  malformed?: "short-header" | "length-overrun" | "bad-version" | "bad-type" | "too-many-records";
}

const MAX_RECORDS_PER_DATAGRAM = 32;
const CID_TYPE = 25;

function isKnownType(t: number): boolean {
  return t >= 20 && t <= 23;
}

/**
 * Splits a datagram into records; `maxFragment` bounds each record's fragment length. `cidLength`:
 * the length of the Connection IDs we hand out (RFC 9146 gives no length on the wire); without it a
 * tls12_cid record ends parsing like any unknown type.
 */
export function parseDatagram(datagram: Buffer, maxFragment: number, cidLength = 0): ParsedDatagram {
  const records: DtlsRecord[] = [];
  let off = 0;
  while (off < datagram.length) {
    if (records.length >= MAX_RECORDS_PER_DATAGRAM) return { records, malformed: "too-many-records" };
    if (datagram.length - off < RECORD_HEADER_LENGTH) return { records, malformed: "short-header" };
    const type = datagram[off];
    const version = datagram.readUInt16BE(off + 1);
    const epoch = datagram.readUInt16BE(off + 3);
    const sequence = datagram.readUIntBE(off + 5, 6);
    if (type === CID_TYPE && cidLength > 0) {
      const header = RECORD_HEADER_LENGTH + cidLength;
      if (datagram.length - off < header) return { records, malformed: "short-header" };
      const cidLengthAt = off + 11 + cidLength;
      const cidRecordLength = datagram.readUInt16BE(cidLengthAt);
      if (version !== 0xfefd) return { records, malformed: "bad-version" };
      if (cidRecordLength > maxFragment || off + header + cidRecordLength > datagram.length)
        return { records, malformed: "length-overrun" };
      records.push({
        type,
        version,
        epoch,
        sequence,
        cid: datagram.subarray(off + 11, off + 11 + cidLength),
        fragment: datagram.subarray(off + header, off + header + cidRecordLength),
      });
      off += header + cidRecordLength;
      continue;
    }
    const length = datagram.readUInt16BE(off + 11);
    if (!isKnownType(type)) return { records, malformed: "bad-type" };
    // Only DTLS 1.0 (first ClientHello of some clients) and 1.2 are valid here.
    if (version !== 0xfeff && version !== 0xfefd) return { records, malformed: "bad-version" };
    if (length > maxFragment || off + RECORD_HEADER_LENGTH + length > datagram.length) return { records, malformed: "length-overrun" };
    records.push({
      type,
      version,
      epoch,
      sequence,
      fragment: datagram.subarray(off + RECORD_HEADER_LENGTH, off + RECORD_HEADER_LENGTH + length),
    });
    off += RECORD_HEADER_LENGTH + length;
  }
  return { records };
}

export function encodeRecord(type: number, version: number, epoch: number, sequence: number, fragment: Buffer): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + fragment.length);
  out[0] = type;
  out.writeUInt16BE(version, 1);
  out.writeUInt16BE(epoch, 3);
  out.writeUIntBE(sequence, 5, 6);
  out.writeUInt16BE(fragment.length, 11);
  fragment.copy(out, RECORD_HEADER_LENGTH);
  return out;
}

/**
 * The additional data of an AEAD record: seq_num (epoch + sequence) + type + version + plaintext
 * length; written into `ad` (13 bytes) when given.
 */
export function aeadAdditionalData(
  epoch: number,
  sequence: number,
  type: number,
  version: number,
  plaintextLength: number,
  ad: Buffer = Buffer.allocUnsafe(13),
): Buffer {
  ad.writeUInt16BE(epoch, 0);
  ad.writeUIntBE(sequence, 2, 6);
  ad[8] = type;
  ad.writeUInt16BE(version, 9);
  ad.writeUInt16BE(plaintextLength, 11);
  return ad;
}

/** RFC 9146 4: tls12_cid, version, epoch, sequence, the CID, then length and the protected DTLSInnerPlaintext. */
export function encodeCidRecord(version: number, epoch: number, sequence: number, cid: Buffer, fragment: Buffer): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + cid.length + fragment.length);
  out[0] = CID_TYPE;
  out.writeUInt16BE(version, 1);
  out.writeUInt16BE(epoch, 3);
  out.writeUIntBE(sequence, 5, 6);
  cid.copy(out, 11);
  out.writeUInt16BE(fragment.length, 11 + cid.length);
  fragment.copy(out, RECORD_HEADER_LENGTH + cid.length);
  return out;
}

/**
 * RFC 9146 5 AEAD additional data: seq_num_placeholder (8 x 0xff), tls12_cid, cid_length, tls12_cid,
 * version, epoch, sequence_number, cid, length_of_DTLSInnerPlaintext.
 */
export function cidAdditionalData(version: number, epoch: number, sequence: number, cid: Buffer, innerLength: number): Buffer {
  const ad = Buffer.allocUnsafe(23 + cid.length);
  ad.fill(0xff, 0, 8);
  ad[8] = CID_TYPE;
  ad[9] = cid.length;
  ad[10] = CID_TYPE;
  ad.writeUInt16BE(version, 11);
  ad.writeUInt16BE(epoch, 13);
  ad.writeUIntBE(sequence, 15, 6);
  cid.copy(ad, 21);
  ad.writeUInt16BE(innerLength, 21 + cid.length);
  return ad;
}

/** DTLSInnerPlaintext (RFC 9146 4): content, the real type, no padding. */
export function innerPlaintext(type: number, content: Buffer): Buffer {
  const out = Buffer.allocUnsafe(content.length + 1);
  content.copy(out, 0);
  out[content.length] = type;
  return out;
}

/** Content and real type of a DTLSInnerPlaintext; undefined when it is all zeros (no type). */
export function openInnerPlaintext(inner: Buffer): { type: number; content: Buffer } | undefined {
  let end = inner.length - 1;
  while (end >= 0 && inner[end] === 0) end--;
  if (end < 0) return undefined;
  return { type: inner[end], content: inner.subarray(0, end) };
}
