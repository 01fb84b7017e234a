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
}

export interface ParsedDatagram {
  records: DtlsRecord[];
  /** Set when parsing stopped early; the records before it are still usable. */
  malformed?: "short-header" | "length-overrun" | "bad-version" | "bad-type" | "too-many-records";
}

const MAX_RECORDS_PER_DATAGRAM = 32;

function isKnownType(t: number): boolean {
  return t >= 20 && t <= 23;
}

/** Splits a datagram into records; `maxFragment` bounds each record's fragment length. */
export function parseDatagram(datagram: Buffer, maxFragment: number): ParsedDatagram {
  const records: DtlsRecord[] = [];
  let off = 0;
  while (off < datagram.length) {
    if (records.length >= MAX_RECORDS_PER_DATAGRAM) return { records, malformed: "too-many-records" };
    if (datagram.length - off < RECORD_HEADER_LENGTH) return { records, malformed: "short-header" };
    const type = datagram[off];
    const version = datagram.readUInt16BE(off + 1);
    const epoch = datagram.readUInt16BE(off + 3);
    const sequence = datagram.readUIntBE(off + 5, 6);
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

/** The additional data of an AEAD record: seq_num (epoch + sequence) + type + version + plaintext length. */
export function aeadAdditionalData(epoch: number, sequence: number, type: number, version: number, plaintextLength: number): Buffer {
  const ad = Buffer.allocUnsafe(13);
  ad.writeUInt16BE(epoch, 0);
  ad.writeUIntBE(sequence, 2, 6);
  ad[8] = type;
  ad.writeUInt16BE(version, 9);
  ad.writeUInt16BE(plaintextLength, 11);
  return ad;
}
