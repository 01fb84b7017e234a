// AEAD record protection for the PSK suites (RFC 5288 GCM, RFC 6655 CCM / CCM_8) with node:crypto.
// The explicit nonce is the record's epoch + sequence number, which is unique per key.
import { createCipheriv, createDecipheriv, type CipherCCMTypes, type CipherGCMTypes } from "node:crypto";
import type { CipherSuiteInfo } from "./constants";
import { aeadAdditionalData } from "./record";

const EXPLICIT_NONCE_LENGTH = 8;

export class AeadState {
  private readonly algorithm: CipherCCMTypes | CipherGCMTypes;
  readonly tagLength: number;

  constructor(
    suite: CipherSuiteInfo,
    private readonly key: Buffer,
    private readonly salt: Buffer,
  ) {
    this.algorithm = suite.algorithm;
    this.tagLength = suite.tagLength;
  }

  /** Bytes an encrypted record adds to its plaintext. */
  get overhead(): number {
    return EXPLICIT_NONCE_LENGTH + this.tagLength;
  }

  private nonce(explicit: Buffer): Buffer {
    return Buffer.concat([this.salt, explicit]);
  }

  encrypt(type: number, version: number, epoch: number, sequence: number, plaintext: Buffer): Buffer {
    const explicit = Buffer.allocUnsafe(EXPLICIT_NONCE_LENGTH);
    explicit.writeUInt16BE(epoch, 0);
    explicit.writeUIntBE(sequence, 2, 6);
    const ad = aeadAdditionalData(epoch, sequence, type, version, plaintext.length);
    const nonce = this.nonce(explicit);
    let body: Buffer;
    let tag: Buffer;
    if (this.algorithm === "aes-128-ccm") {
      const c = createCipheriv("aes-128-ccm", this.key, nonce, { authTagLength: this.tagLength });
      c.setAAD(ad, { plaintextLength: plaintext.length });
      body = Buffer.concat([c.update(plaintext), c.final()]);
      tag = c.getAuthTag();
    } else {
      const c = createCipheriv("aes-128-gcm", this.key, nonce, { authTagLength: this.tagLength });
      c.setAAD(ad);
      body = Buffer.concat([c.update(plaintext), c.final()]);
      tag = c.getAuthTag();
    }
    return Buffer.concat([explicit, body, tag]);
  }

  /** Returns the plaintext, or undefined when the record does not authenticate (never throws). */
  decrypt(type: number, version: number, epoch: number, sequence: number, fragment: Buffer): Buffer | undefined {
    if (fragment.length < this.overhead) return undefined;
    const explicit = fragment.subarray(0, EXPLICIT_NONCE_LENGTH);
    const ciphertext = fragment.subarray(EXPLICIT_NONCE_LENGTH, fragment.length - this.tagLength);
    const tag = fragment.subarray(fragment.length - this.tagLength);
    const ad = aeadAdditionalData(epoch, sequence, type, version, ciphertext.length);
    const nonce = this.nonce(explicit);
    try {
      if (this.algorithm === "aes-128-ccm") {
        const d = createDecipheriv("aes-128-ccm", this.key, nonce, { authTagLength: this.tagLength });
        d.setAuthTag(tag);
        d.setAAD(ad, { plaintextLength: ciphertext.length });
        const out = d.update(ciphertext);
        d.final();
        return out;
      }
      const d = createDecipheriv("aes-128-gcm", this.key, nonce, { authTagLength: this.tagLength });
      d.setAuthTag(tag);
      d.setAAD(ad);
      return Buffer.concat([d.update(ciphertext), d.final()]);
    } catch {
      return undefined;
    }
  }
}
