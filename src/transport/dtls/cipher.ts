// AEAD record protection for the PSK suites (RFC 5288 GCM, RFC 6655 CCM / CCM_8) with node:crypto.
// The explicit nonce is the record's epoch + sequence number, which is unique per key.
// node:crypto has no reusable AEAD context, so each record gets its own short-lived cipher object
// and a session keeps only key bytes. The functions take a buffer and offsets, so the server can
// keep every session's keys in a shared slab without a Buffer object per session.
import { createCipheriv, createDecipheriv } from "node:crypto";
import type { CipherSuiteInfo } from "./constants";
import { aeadAdditionalData } from "./record";

const EXPLICIT_NONCE_LENGTH = 8;
const KEY_LENGTH = 16;
const SALT_LENGTH = 4;

/** Bytes an encrypted record adds to its plaintext. */
export function aeadOverhead(suite: CipherSuiteInfo): number {
  return EXPLICIT_NONCE_LENGTH + suite.tagLength;
}

/**
 * Encrypts one record's plaintext. `material` holds the 16-byte key at keyOffset and the 4-byte
 * implicit nonce (salt) at saltOffset. Returns explicit nonce + ciphertext + tag.
 */
export function sealRecord(
  suite: CipherSuiteInfo,
  material: Buffer,
  keyOffset: number,
  saltOffset: number,
  type: number,
  version: number,
  epoch: number,
  sequence: number,
  plaintext: Buffer,
): Buffer {
  const ad = aeadAdditionalData(epoch, sequence, type, version, plaintext.length);
  // Nonce: salt (4) + explicit part (8) = epoch (2) + sequence (6).
  const nonce = Buffer.allocUnsafe(SALT_LENGTH + EXPLICIT_NONCE_LENGTH);
  material.copy(nonce, 0, saltOffset, saltOffset + SALT_LENGTH);
  nonce.writeUInt16BE(epoch, SALT_LENGTH);
  nonce.writeUIntBE(sequence, SALT_LENGTH + 2, 6);
  const key = material.subarray(keyOffset, keyOffset + KEY_LENGTH);
  const out = Buffer.allocUnsafe(EXPLICIT_NONCE_LENGTH + plaintext.length + suite.tagLength);
  nonce.copy(out, 0, SALT_LENGTH);
  let written = EXPLICIT_NONCE_LENGTH;
  let tag: Buffer;
  if (suite.algorithm === "aes-128-ccm") {
    const c = createCipheriv("aes-128-ccm", key, nonce, { authTagLength: suite.tagLength });
    c.setAAD(ad, { plaintextLength: plaintext.length });
    written += c.update(plaintext).copy(out, written);
    written += c.final().copy(out, written);
    tag = c.getAuthTag();
  } else {
    const c = createCipheriv("aes-128-gcm", key, nonce, { authTagLength: suite.tagLength });
    c.setAAD(ad);
    written += c.update(plaintext).copy(out, written);
    written += c.final().copy(out, written);
    tag = c.getAuthTag();
  }
  tag.copy(out, written);
  return out;
}

/** Decrypts one record's fragment; undefined when it does not authenticate (never throws). */
export function openRecord(
  suite: CipherSuiteInfo,
  material: Buffer,
  keyOffset: number,
  saltOffset: number,
  type: number,
  version: number,
  epoch: number,
  sequence: number,
  fragment: Buffer,
): Buffer | undefined {
  if (fragment.length < EXPLICIT_NONCE_LENGTH + suite.tagLength) return undefined;
  const ciphertext = fragment.subarray(EXPLICIT_NONCE_LENGTH, fragment.length - suite.tagLength);
  const tag = fragment.subarray(fragment.length - suite.tagLength);
  const ad = aeadAdditionalData(epoch, sequence, type, version, ciphertext.length);
  const nonce = Buffer.allocUnsafe(SALT_LENGTH + EXPLICIT_NONCE_LENGTH);
  material.copy(nonce, 0, saltOffset, saltOffset + SALT_LENGTH);
  fragment.copy(nonce, SALT_LENGTH, 0, EXPLICIT_NONCE_LENGTH);
  const key = material.subarray(keyOffset, keyOffset + KEY_LENGTH);
  try {
    if (suite.algorithm === "aes-128-ccm") {
      const d = createDecipheriv("aes-128-ccm", key, nonce, { authTagLength: suite.tagLength });
      d.setAuthTag(tag);
      d.setAAD(ad, { plaintextLength: ciphertext.length });
      const out = d.update(ciphertext);
      d.final();
      return out;
    }
    const d = createDecipheriv("aes-128-gcm", key, nonce, { authTagLength: suite.tagLength });
    d.setAuthTag(tag);
    d.setAAD(ad);
    return Buffer.concat([d.update(ciphertext), d.final()]);
  } catch {
    return undefined;
  }
}

/** One direction's key and salt as an object (the scripted client and tests). */
export class AeadState {
  private readonly material: Buffer;

  constructor(
    private readonly suite: CipherSuiteInfo,
    key: Buffer,
    salt: Buffer,
  ) {
    if (key.length !== KEY_LENGTH || salt.length !== SALT_LENGTH) throw new RangeError("AEAD key must be 16 bytes and salt 4 bytes");
    this.material = Buffer.concat([key, salt]);
  }

  get tagLength(): number {
    return this.suite.tagLength;
  }

  /** Bytes an encrypted record adds to its plaintext. */
  get overhead(): number {
    return aeadOverhead(this.suite);
  }

  encrypt(type: number, version: number, epoch: number, sequence: number, plaintext: Buffer): Buffer {
    return sealRecord(this.suite, this.material, 0, KEY_LENGTH, type, version, epoch, sequence, plaintext);
  }

  decrypt(type: number, version: number, epoch: number, sequence: number, fragment: Buffer): Buffer | undefined {
    return openRecord(this.suite, this.material, 0, KEY_LENGTH, type, version, epoch, sequence, fragment);
  }
}
