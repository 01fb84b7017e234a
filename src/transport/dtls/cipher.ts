// AEAD record protection with node:crypto: AES-GCM (RFC 5288), AES-CCM / CCM_8 (RFC 6655) and
// ChaCha20-Poly1305 (RFC 7905).
// AES suites: nonce = 4-byte salt + 8-byte explicit part, sent in the record; we use epoch + sequence,
// which is unique per key. ChaCha20-Poly1305: nonce = 12-byte IV XOR the left-padded epoch + sequence,
// nothing sent.
// node:crypto has no reusable AEAD context, so each record gets its own short-lived cipher object
// and a session keeps only key bytes; short ChaCha20-Poly1305 records (heartbeats, most signal
// messages) go through chacha20-poly1305.ts instead, which does them in a fifth of the time.
// The functions take a buffer and offsets, so the server can keep every session's keys in a shared
// slab without a Buffer object per session.
import {
  createCipheriv,
  createDecipheriv,
  type CipherCCM,
  type CipherGCM,
  type CipherChaCha20Poly1305,
  type DecipherCCM,
  type DecipherGCM,
  type DecipherChaCha20Poly1305,
} from "node:crypto";
import { CHACHA_IN_JS, chachaOpen, chachaSeal } from "./chacha20-poly1305";
import type { CipherSuiteInfo } from "./constants";
import { aeadAdditionalData, cidAdditionalData } from "./record";

const NONCE_LENGTH = 12;
/**
 * Nonce and additional data are written here for each record: node:crypto copies the IV when the
 * cipher is made and OpenSSL takes the AAD in at setAAD, so neither outlives the call (and one
 * thread runs this). Two Buffer objects less per record.
 */
const NONCE_SCRATCH = Buffer.alloc(NONCE_LENGTH);
const AD_SCRATCH = Buffer.alloc(13);
/**
 * ChaCha20-Poly1305 records up to this many plaintext bytes are done in JavaScript: measured on
 * Node 20 and 22, 1.2 us against 5 us at heartbeat size, 5.5 against 7-8 us at 512 bytes, and
 * node:crypto ahead from about 700 bytes on.
 */
export const CHACHA_JS_MAX_BYTES = 512;

/** Whether ChaCha20-Poly1305 over `length` plaintext bytes is done in JavaScript (else node:crypto). */
function chachaJsFor(length: number): boolean {
  return CHACHA_IN_JS && length <= CHACHA_JS_MAX_BYTES;
}

function chachaInJs(suite: CipherSuiteInfo, length: number): boolean {
  return suite.explicitNonceLength === 0 && suite.tagLength === 16 && suite.algorithm === "chacha20-poly1305" && chachaJsFor(length);
}

/** Bytes an encrypted record adds to its plaintext. */
export function aeadOverhead(suite: CipherSuiteInfo): number {
  return suite.explicitNonceLength + suite.tagLength;
}

/** The 12-byte per-record nonce (the AES explicit part is its last 8 bytes). */
function recordNonce(suite: CipherSuiteInfo, material: Buffer, ivOffset: number, epoch: number, sequence: number): Buffer {
  const nonce = NONCE_SCRATCH;
  if (suite.explicitNonceLength === 0) {
    // RFC 7905 section 2: padded 64-bit epoch + sequence XORed into the 12-byte IV.
    material.copy(nonce, 0, ivOffset, ivOffset + NONCE_LENGTH);
    nonce[4] ^= (epoch >>> 8) & 0xff;
    nonce[5] ^= epoch & 0xff;
    const hi = Math.floor(sequence / 0x1000000);
    const lo = sequence % 0x1000000;
    nonce[6] ^= (hi >>> 16) & 0xff;
    nonce[7] ^= (hi >>> 8) & 0xff;
    nonce[8] ^= hi & 0xff;
    nonce[9] ^= (lo >>> 16) & 0xff;
    nonce[10] ^= (lo >>> 8) & 0xff;
    nonce[11] ^= lo & 0xff;
    return nonce;
  }
  material.copy(nonce, 0, ivOffset, ivOffset + 4);
  nonce.writeUInt16BE(epoch, 4);
  nonce.writeUIntBE(sequence, 6, 6);
  return nonce;
}

type AeadCipher = CipherCCM | CipherGCM | CipherChaCha20Poly1305;
type AeadDecipher = DecipherCCM | DecipherGCM | DecipherChaCha20Poly1305;

function makeCipher(suite: CipherSuiteInfo, key: Buffer, nonce: Buffer): AeadCipher {
  // The three calls differ only in their type overloads.
  if (suite.algorithm === "aes-128-ccm") return createCipheriv("aes-128-ccm", key, nonce, { authTagLength: suite.tagLength });
  if (suite.algorithm === "aes-128-gcm") return createCipheriv("aes-128-gcm", key, nonce, { authTagLength: suite.tagLength });
  return createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: suite.tagLength });
}

function makeDecipher(suite: CipherSuiteInfo, key: Buffer, nonce: Buffer): AeadDecipher {
  if (suite.algorithm === "aes-128-ccm") return createDecipheriv("aes-128-ccm", key, nonce, { authTagLength: suite.tagLength });
  if (suite.algorithm === "aes-128-gcm") return createDecipheriv("aes-128-gcm", key, nonce, { authTagLength: suite.tagLength });
  return createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: suite.tagLength });
}

/**
 * Encrypts one record's plaintext. `material` holds the key (suite.keyLength bytes) at keyOffset and
 * the implicit IV (suite.fixedIvLength bytes) at ivOffset. Returns [explicit nonce +] ciphertext + tag.
 */
export function sealRecord(
  suite: CipherSuiteInfo,
  material: Buffer,
  keyOffset: number,
  ivOffset: number,
  type: number,
  version: number,
  epoch: number,
  sequence: number,
  plaintext: Buffer,
  cid?: Buffer,
): Buffer {
  // With a Connection ID (RFC 9146 5) `plaintext` is the DTLSInnerPlaintext and `type` is unused.
  const ad = cid
    ? cidAdditionalData(version, epoch, sequence, cid, plaintext.length)
    : aeadAdditionalData(epoch, sequence, type, version, plaintext.length, AD_SCRATCH);
  const nonce = recordNonce(suite, material, ivOffset, epoch, sequence);
  if (chachaInJs(suite, plaintext.length)) {
    const sealed = Buffer.allocUnsafe(plaintext.length + suite.tagLength);
    chachaSeal(material, keyOffset, nonce, ad, plaintext, sealed, 0);
    return sealed;
  }
  const key = material.subarray(keyOffset, keyOffset + suite.keyLength);
  const explicit = suite.explicitNonceLength;
  const out = Buffer.allocUnsafe(explicit + plaintext.length + suite.tagLength);
  if (explicit > 0) nonce.copy(out, 0, NONCE_LENGTH - explicit);
  let written = explicit;
  const c = makeCipher(suite, key, nonce);
  // CCM needs the plaintext length up front; GCM and ChaCha20-Poly1305 accept (and ignore) it.
  c.setAAD(ad, { plaintextLength: plaintext.length });
  written += c.update(plaintext).copy(out, written);
  written += c.final().copy(out, written);
  c.getAuthTag().copy(out, written);
  return out;
}

/** Decrypts one record's fragment; undefined when it does not authenticate (never throws). */
export function openRecord(
  suite: CipherSuiteInfo,
  material: Buffer,
  keyOffset: number,
  ivOffset: number,
  type: number,
  version: number,
  epoch: number,
  sequence: number,
  fragment: Buffer,
  cid?: Buffer,
): Buffer | undefined {
  const explicit = suite.explicitNonceLength;
  if (fragment.length < explicit + suite.tagLength) return undefined;
  const ciphertextLength = fragment.length - explicit - suite.tagLength;
  const ad = cid
    ? cidAdditionalData(version, epoch, sequence, cid, ciphertextLength)
    : aeadAdditionalData(epoch, sequence, type, version, ciphertextLength, AD_SCRATCH);
  if (chachaInJs(suite, ciphertextLength)) {
    // Its own memory, not a slice of the shared pool: the CoAP layer may keep parts of it (a token,
    // a payload) for a session's lifetime, and a pool slice would keep 8 KB alive with it.
    const plaintext = Buffer.allocUnsafeSlow(ciphertextLength);
    const nonce = recordNonce(suite, material, ivOffset, epoch, sequence);
    return chachaOpen(material, keyOffset, nonce, ad, fragment, 0, ciphertextLength, plaintext) ? plaintext : undefined;
  }
  const ciphertext = fragment.subarray(explicit, explicit + ciphertextLength);
  const tag = fragment.subarray(explicit + ciphertextLength);
  let nonce: Buffer;
  if (explicit > 0) {
    nonce = NONCE_SCRATCH;
    material.copy(nonce, 0, ivOffset, ivOffset + 4);
    fragment.copy(nonce, 4, 0, explicit);
  } else {
    nonce = recordNonce(suite, material, ivOffset, epoch, sequence);
  }
  const key = material.subarray(keyOffset, keyOffset + suite.keyLength);
  try {
    const d = makeDecipher(suite, key, nonce);
    d.setAuthTag(tag);
    d.setAAD(ad, { plaintextLength: ciphertext.length });
    const out = d.update(ciphertext);
    const rest = d.final();
    return rest.length === 0 ? out : Buffer.concat([out, rest]);
  } catch {
    return undefined;
  }
}

const CHACHA_TAG_LENGTH = 16;

/**
 * ChaCha20-Poly1305 with a 32-byte key outside any record (session tickets): ciphertext + 16-byte
 * tag. Short plaintexts in JavaScript, longer ones with node:crypto, as for records.
 */
export function chachaSealBytes(key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  if (chachaJsFor(plaintext.length)) {
    const sealed = Buffer.allocUnsafe(plaintext.length + CHACHA_TAG_LENGTH);
    chachaSeal(key, 0, nonce, aad, plaintext, sealed, 0);
    return sealed;
  }
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: CHACHA_TAG_LENGTH });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Opens what chachaSealBytes made; undefined when it does not authenticate (never throws). */
export function chachaOpenBytes(key: Buffer, nonce: Buffer, aad: Buffer, sealed: Buffer): Buffer | undefined {
  const length = sealed.length - CHACHA_TAG_LENGTH;
  if (length < 0) return undefined;
  if (chachaJsFor(length)) {
    const plaintext = Buffer.allocUnsafe(length);
    return chachaOpen(key, 0, nonce, aad, sealed, 0, length, plaintext) ? plaintext : undefined;
  }
  try {
    const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: CHACHA_TAG_LENGTH });
    d.setAuthTag(sealed.subarray(length));
    d.setAAD(aad, { plaintextLength: length });
    return Buffer.concat([d.update(sealed.subarray(0, length)), d.final()]);
  } catch {
    return undefined;
  }
}

/** One direction's key and implicit IV as an object (the scripted client and tests). */
export class AeadState {
  private readonly material: Buffer;
  private readonly keyLength: number;

  constructor(
    private readonly suite: CipherSuiteInfo,
    key: Buffer,
    iv: Buffer,
  ) {
    if (key.length !== suite.keyLength || iv.length !== suite.fixedIvLength) {
      throw new RangeError(`${suite.name} needs a ${suite.keyLength}-byte key and a ${suite.fixedIvLength}-byte implicit IV`);
    }
    this.keyLength = key.length;
    this.material = Buffer.concat([key, iv]);
  }

  get tagLength(): number {
    return this.suite.tagLength;
  }

  /** Bytes an encrypted record adds to its plaintext. */
  get overhead(): number {
    return aeadOverhead(this.suite);
  }

  encrypt(type: number, version: number, epoch: number, sequence: number, plaintext: Buffer, cid?: Buffer): Buffer {
    return sealRecord(this.suite, this.material, 0, this.keyLength, type, version, epoch, sequence, plaintext, cid);
  }

  decrypt(type: number, version: number, epoch: number, sequence: number, fragment: Buffer, cid?: Buffer): Buffer | undefined {
    return openRecord(this.suite, this.material, 0, this.keyLength, type, version, epoch, sequence, fragment, cid);
  }
}
