// TLS 1.2 PRF with SHA-256 (RFC 5246 section 5) and the key schedule pieces the PSK and ECDHE_PSK suites need.
import { HmacSha256, Sha256 } from "./sha256";

// Scratch for the PRF, shared: it never yields, and it is wiped before it returns.
const PRF_HMAC = new HmacSha256(new Uint8Array(0));
const PRF_A = new Uint8Array(32);
const PRF_BLOCK = new Uint8Array(32);
const TRANSCRIPT = new Sha256();

/** P_SHA256(secret, label + seed) truncated to `length` bytes. */
export function prfSha256(secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelBytes = Buffer.from(label, "latin1");
  const hmac = PRF_HMAC.rekey(secret);
  const out = Buffer.allocUnsafe(length);
  const a = PRF_A;
  const block = PRF_BLOCK;
  // A(1) = HMAC(secret, label + seed); A(i+1) = HMAC(secret, A(i)); block(i) = HMAC(secret, A(i) + label + seed)
  hmac.begin().update(labelBytes).update(seed);
  hmac.end(a);
  for (let filled = 0; filled < length;) {
    hmac.begin().update(a).update(labelBytes).update(seed);
    hmac.end(block);
    const n = Math.min(32, length - filled);
    out.set(n === 32 ? block : block.subarray(0, n), filled);
    filled += n;
    if (filled < length) {
      hmac.begin().update(a);
      hmac.end(a);
    }
  }
  hmac.wipe();
  a.fill(0);
  block.fill(0);
  return out;
}

/** RFC 4279 section 2: uint16 N, N zero bytes, uint16 N, psk. */
export function pskPremasterSecret(psk: Buffer): Buffer {
  const n = psk.length;
  const pms = Buffer.alloc(4 + 2 * n);
  pms.writeUInt16BE(n, 0);
  pms.writeUInt16BE(n, 2 + n);
  psk.copy(pms, 4 + n);
  return pms;
}

/** RFC 5489 section 2: uint16 len + ECDH shared secret (other_secret) + uint16 len + psk. */
export function ecdhePskPremasterSecret(sharedSecret: Buffer, psk: Buffer): Buffer {
  const pms = Buffer.allocUnsafe(4 + sharedSecret.length + psk.length);
  pms.writeUInt16BE(sharedSecret.length, 0);
  sharedSecret.copy(pms, 2);
  pms.writeUInt16BE(psk.length, 2 + sharedSecret.length);
  psk.copy(pms, 4 + sharedSecret.length);
  return pms;
}

export function sha256(parts: readonly Buffer[]): Buffer {
  const h = TRANSCRIPT.reset();
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Master secret: RFC 7627 (session hash over the transcript up to ClientKeyExchange) or classic RFC 5246. */
export function masterSecret(pms: Buffer, clientRandom: Buffer, serverRandom: Buffer, sessionHash: Buffer | undefined): Buffer {
  return sessionHash
    ? prfSha256(pms, "extended master secret", sessionHash, 48)
    : prfSha256(pms, "master secret", Buffer.concat([clientRandom, serverRandom]), 48);
}

export interface AeadKeyBlock {
  clientKey: Buffer;
  serverKey: Buffer;
  /** Implicit IV: 4-byte salt (AES) or 12-byte IV (ChaCha20-Poly1305). */
  clientSalt: Buffer;
  serverSalt: Buffer;
}

/** Key block length of the AES suites: client key, server key (16 each), client salt, server salt (4 each). */
export const AEAD_KEY_BLOCK_LENGTH = 40;

/** The raw AEAD key block (RFC 5246 6.3), for callers that place it themselves; `length` from keyBlockLength(suite). */
export function keyExpansion(master: Buffer, clientRandom: Buffer, serverRandom: Buffer, length = AEAD_KEY_BLOCK_LENGTH): Buffer {
  return prfSha256(master, "key expansion", Buffer.concat([serverRandom, clientRandom]), length);
}

/** AEAD key block: no MAC keys; client key, server key, client IV, server IV (default: the AES sizes 16 and 4). */
export function aeadKeyBlock(master: Buffer, clientRandom: Buffer, serverRandom: Buffer, keyLength = 16, ivLength = 4): AeadKeyBlock {
  const kb = keyExpansion(master, clientRandom, serverRandom, 2 * keyLength + 2 * ivLength);
  return {
    clientKey: kb.subarray(0, keyLength),
    serverKey: kb.subarray(keyLength, 2 * keyLength),
    clientSalt: kb.subarray(2 * keyLength, 2 * keyLength + ivLength),
    serverSalt: kb.subarray(2 * keyLength + ivLength, 2 * keyLength + 2 * ivLength),
  };
}

export function finishedVerifyData(master: Buffer, label: "client finished" | "server finished", transcriptHash: Buffer): Buffer {
  return prfSha256(master, label, transcriptHash, 12);
}
