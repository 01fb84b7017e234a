// Small random values (DTLS randoms, AEAD nonces, CoAP tokens) cut from one CSPRNG fill: each
// randomBytes() call costs a job object and a trip into OpenSSL (about 10 us), which a handshake
// or a heartbeat would otherwise pay several times.

import { randomBytes, randomFillSync } from "node:crypto";

const POOL_BYTES = 4096;
/** Larger requests are rare (keys); they go to randomBytes directly. */
const MAX_POOLED = 64;

const pool = Buffer.allocUnsafeSlow(POOL_BYTES);
let used = POOL_BYTES;

/** `n` fresh bytes from the CSPRNG; every byte of the pool is handed out once and then wiped. */
export function pooledRandomBytes(n: number): Buffer {
  if (n > MAX_POOLED) return randomBytes(n);
  if (used + n > POOL_BYTES) {
    randomFillSync(pool);
    used = 0;
  }
  const out = Buffer.allocUnsafe(n);
  pool.copy(out, 0, used, used + n);
  pool.fill(0, used, used + n);
  used += n;
  return out;
}
