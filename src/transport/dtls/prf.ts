// TLS 1.2 PRF with SHA-256 (RFC 5246 section 5) and the key schedule pieces the PSK suites need.
import { createHash, createHmac } from "node:crypto";

/** P_SHA256(secret, label + seed) truncated to `length` bytes. */
export function prfSha256(secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, "latin1"), seed]);
  const out = Buffer.allocUnsafe(length);
  let a = labelSeed;
  let filled = 0;
  while (filled < length) {
    a = createHmac("sha256", secret).update(a).digest();
    const block = createHmac("sha256", secret).update(a).update(labelSeed).digest();
    filled += block.copy(out, filled, 0, Math.min(block.length, length - filled));
  }
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

export function sha256(parts: readonly Buffer[]): Buffer {
  const h = createHash("sha256");
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
  clientSalt: Buffer;
  serverSalt: Buffer;
}

/** Key block length of the AEAD suites: client key, server key (16 each), client salt, server salt (4 each). */
export const AEAD_KEY_BLOCK_LENGTH = 40;

/** The raw AEAD key block (RFC 5246 6.3), for callers that place it themselves. */
export function keyExpansion(master: Buffer, clientRandom: Buffer, serverRandom: Buffer): Buffer {
  return prfSha256(master, "key expansion", Buffer.concat([serverRandom, clientRandom]), AEAD_KEY_BLOCK_LENGTH);
}

/** AEAD key block: no MAC keys; 16-byte keys and 4-byte implicit nonces. */
export function aeadKeyBlock(master: Buffer, clientRandom: Buffer, serverRandom: Buffer): AeadKeyBlock {
  const kb = keyExpansion(master, clientRandom, serverRandom);
  return {
    clientKey: kb.subarray(0, 16),
    serverKey: kb.subarray(16, 32),
    clientSalt: kb.subarray(32, 36),
    serverSalt: kb.subarray(36, 40),
  };
}

export function finishedVerifyData(master: Buffer, label: "client finished" | "server finished", transcriptHash: Buffer): Buffer {
  return prfSha256(master, label, transcriptHash, 12);
}
