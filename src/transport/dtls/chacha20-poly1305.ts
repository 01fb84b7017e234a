// ChaCha20-Poly1305 (RFC 8439) in JavaScript, for short records.
// node:crypto has no reusable AEAD context: each record costs a cipher object, an OpenSSL context,
// a cipher lookup by name and four calls into C++, about 5 us, where the arithmetic for a
// heartbeat-sized record takes well under 1 us here. Longer records, where OpenSSL's vector code
// wins, stay on node:crypto (cipher.ts picks by length). Both paths are checked against each other.
// Constant time: ChaCha20 is additions, XORs and rotations of 32-bit words; Poly1305 works on 13-bit
// limbs in exact double arithmetic (every intermediate stays below 2^53) with no data-dependent branch
// or index; the tag is compared by accumulating XORs.

/** The four words of "expand 32-byte k" (RFC 8439 section 2.3). */
const C0 = 0x61707865;
const C1 = 0x3320646e;
const C2 = 0x79622d32;
const C3 = 0x6b206574;

/** The keystream words below are read as bytes through a second view: only on little-endian hosts. */
export const CHACHA_IN_JS = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The record's key (8 words) and nonce (3 words), loaded once per record by loadKeyAndNonce. */
const KEY_WORDS = new Uint32Array(8);
const NONCE_WORDS = new Uint32Array(3);
const BLOCK_WORDS = new Uint32Array(16);
const BLOCK = new Uint8Array(BLOCK_WORDS.buffer);
/** One 16-byte Poly1305 block being assembled (AAD, a short tail, the lengths). */
const PAD = new Uint8Array(16);
const TAG = new Uint8Array(16);
/** polyTag's h - p and its choice between h and that. */
const TAG_G = new Int32Array(10);
const TAG_L = new Int32Array(10);

/** Poly1305 state: accumulator h and key r in ten 13-bit limbs, pad s in eight 16-bit words. */
const H = new Float64Array(10);
const R = new Float64Array(10);
const S = new Uint16Array(8);
const LIMB = 8192; // 2^13
const INV_LIMB = 1 / LIMB;

/** One ChaCha20 block (RFC 8439 section 2.3) of KEY_WORDS, `counter` and NONCE_WORDS, into BLOCK_WORDS. */
function chachaBlock(counter: number): void {
  const k = KEY_WORDS;
  const n0 = NONCE_WORDS[0];
  const n1 = NONCE_WORDS[1];
  const n2 = NONCE_WORDS[2];
  let x0 = C0,
    x1 = C1,
    x2 = C2,
    x3 = C3,
    x4 = k[0],
    x5 = k[1],
    x6 = k[2],
    x7 = k[3],
    x8 = k[4],
    x9 = k[5],
    x10 = k[6],
    x11 = k[7],
    x12 = counter,
    x13 = n0,
    x14 = n1,
    x15 = n2;
  for (let round = 0; round < 20; round += 2) {
    // Column rounds.
    x0 = (x0 + x4) | 0;
    x12 ^= x0;
    x12 = (x12 << 16) | (x12 >>> 16);
    x8 = (x8 + x12) | 0;
    x4 ^= x8;
    x4 = (x4 << 12) | (x4 >>> 20);
    x0 = (x0 + x4) | 0;
    x12 ^= x0;
    x12 = (x12 << 8) | (x12 >>> 24);
    x8 = (x8 + x12) | 0;
    x4 ^= x8;
    x4 = (x4 << 7) | (x4 >>> 25);

    x1 = (x1 + x5) | 0;
    x13 ^= x1;
    x13 = (x13 << 16) | (x13 >>> 16);
    x9 = (x9 + x13) | 0;
    x5 ^= x9;
    x5 = (x5 << 12) | (x5 >>> 20);
    x1 = (x1 + x5) | 0;
    x13 ^= x1;
    x13 = (x13 << 8) | (x13 >>> 24);
    x9 = (x9 + x13) | 0;
    x5 ^= x9;
    x5 = (x5 << 7) | (x5 >>> 25);

    x2 = (x2 + x6) | 0;
    x14 ^= x2;
    x14 = (x14 << 16) | (x14 >>> 16);
    x10 = (x10 + x14) | 0;
    x6 ^= x10;
    x6 = (x6 << 12) | (x6 >>> 20);
    x2 = (x2 + x6) | 0;
    x14 ^= x2;
    x14 = (x14 << 8) | (x14 >>> 24);
    x10 = (x10 + x14) | 0;
    x6 ^= x10;
    x6 = (x6 << 7) | (x6 >>> 25);

    x3 = (x3 + x7) | 0;
    x15 ^= x3;
    x15 = (x15 << 16) | (x15 >>> 16);
    x11 = (x11 + x15) | 0;
    x7 ^= x11;
    x7 = (x7 << 12) | (x7 >>> 20);
    x3 = (x3 + x7) | 0;
    x15 ^= x3;
    x15 = (x15 << 8) | (x15 >>> 24);
    x11 = (x11 + x15) | 0;
    x7 ^= x11;
    x7 = (x7 << 7) | (x7 >>> 25);

    // Diagonal rounds.
    x0 = (x0 + x5) | 0;
    x15 ^= x0;
    x15 = (x15 << 16) | (x15 >>> 16);
    x10 = (x10 + x15) | 0;
    x5 ^= x10;
    x5 = (x5 << 12) | (x5 >>> 20);
    x0 = (x0 + x5) | 0;
    x15 ^= x0;
    x15 = (x15 << 8) | (x15 >>> 24);
    x10 = (x10 + x15) | 0;
    x5 ^= x10;
    x5 = (x5 << 7) | (x5 >>> 25);

    x1 = (x1 + x6) | 0;
    x12 ^= x1;
    x12 = (x12 << 16) | (x12 >>> 16);
    x11 = (x11 + x12) | 0;
    x6 ^= x11;
    x6 = (x6 << 12) | (x6 >>> 20);
    x1 = (x1 + x6) | 0;
    x12 ^= x1;
    x12 = (x12 << 8) | (x12 >>> 24);
    x11 = (x11 + x12) | 0;
    x6 ^= x11;
    x6 = (x6 << 7) | (x6 >>> 25);

    x2 = (x2 + x7) | 0;
    x13 ^= x2;
    x13 = (x13 << 16) | (x13 >>> 16);
    x8 = (x8 + x13) | 0;
    x7 ^= x8;
    x7 = (x7 << 12) | (x7 >>> 20);
    x2 = (x2 + x7) | 0;
    x13 ^= x2;
    x13 = (x13 << 8) | (x13 >>> 24);
    x8 = (x8 + x13) | 0;
    x7 ^= x8;
    x7 = (x7 << 7) | (x7 >>> 25);

    x3 = (x3 + x4) | 0;
    x14 ^= x3;
    x14 = (x14 << 16) | (x14 >>> 16);
    x9 = (x9 + x14) | 0;
    x4 ^= x9;
    x4 = (x4 << 12) | (x4 >>> 20);
    x3 = (x3 + x4) | 0;
    x14 ^= x3;
    x14 = (x14 << 8) | (x14 >>> 24);
    x9 = (x9 + x14) | 0;
    x4 ^= x9;
    x4 = (x4 << 7) | (x4 >>> 25);
  }
  const o = BLOCK_WORDS;
  o[0] = x0 + C0;
  o[1] = x1 + C1;
  o[2] = x2 + C2;
  o[3] = x3 + C3;
  o[4] = x4 + k[0];
  o[5] = x5 + k[1];
  o[6] = x6 + k[2];
  o[7] = x7 + k[3];
  o[8] = x8 + k[4];
  o[9] = x9 + k[5];
  o[10] = x10 + k[6];
  o[11] = x11 + k[7];
  o[12] = x12 + counter;
  o[13] = x13 + n0;
  o[14] = x14 + n1;
  o[15] = x15 + n2;
}

/** Poly1305 key from BLOCK (the first 32 bytes of block 0): r clamped into limbs, s into words. */
function polyInit(): void {
  const b = BLOCK;
  const t0 = b[0] | (b[1] << 8);
  const t1 = b[2] | ((b[3] & 0x0f) << 8);
  const t2 = (b[4] & 0xfc) | (b[5] << 8);
  const t3 = b[6] | ((b[7] & 0x0f) << 8);
  const t4 = (b[8] & 0xfc) | (b[9] << 8);
  const t5 = b[10] | ((b[11] & 0x0f) << 8);
  const t6 = (b[12] & 0xfc) | (b[13] << 8);
  const t7 = b[14] | ((b[15] & 0x0f) << 8);
  R[0] = t0 & 0x1fff;
  R[1] = ((t0 >>> 13) | (t1 << 3)) & 0x1fff;
  R[2] = ((t1 >>> 10) | (t2 << 6)) & 0x1fff;
  R[3] = ((t2 >>> 7) | (t3 << 9)) & 0x1fff;
  R[4] = ((t3 >>> 4) | (t4 << 12)) & 0x1fff;
  R[5] = (t4 >>> 1) & 0x1fff;
  R[6] = ((t4 >>> 14) | (t5 << 2)) & 0x1fff;
  R[7] = ((t5 >>> 11) | (t6 << 5)) & 0x1fff;
  R[8] = ((t6 >>> 8) | (t7 << 8)) & 0x1fff;
  R[9] = t7 >>> 5;
  for (let i = 0; i < 8; i++) S[i] = b[16 + 2 * i] | (b[17 + 2 * i] << 8);
  H.fill(0);
}

/** h = (h + block) * r mod 2^130 - 5, for the 16 bytes of `m` at `o`; `hibit` 1 << 11 for a full block. */
function polyBlock(m: Uint8Array, o: number, hibit: number): void {
  const t0 = m[o] | (m[o + 1] << 8);
  const t1 = m[o + 2] | (m[o + 3] << 8);
  const t2 = m[o + 4] | (m[o + 5] << 8);
  const t3 = m[o + 6] | (m[o + 7] << 8);
  const t4 = m[o + 8] | (m[o + 9] << 8);
  const t5 = m[o + 10] | (m[o + 11] << 8);
  const t6 = m[o + 12] | (m[o + 13] << 8);
  const t7 = m[o + 14] | (m[o + 15] << 8);
  const h0 = H[0] + (t0 & 0x1fff);
  const h1 = H[1] + (((t0 >>> 13) | (t1 << 3)) & 0x1fff);
  const h2 = H[2] + (((t1 >>> 10) | (t2 << 6)) & 0x1fff);
  const h3 = H[3] + (((t2 >>> 7) | (t3 << 9)) & 0x1fff);
  const h4 = H[4] + (((t3 >>> 4) | (t4 << 12)) & 0x1fff);
  const h5 = H[5] + ((t4 >>> 1) & 0x1fff);
  const h6 = H[6] + (((t4 >>> 14) | (t5 << 2)) & 0x1fff);
  const h7 = H[7] + (((t5 >>> 11) | (t6 << 5)) & 0x1fff);
  const h8 = H[8] + (((t6 >>> 8) | (t7 << 8)) & 0x1fff);
  const h9 = H[9] + ((t7 >>> 5) | hibit);
  const r0 = R[0],
    r1 = R[1],
    r2 = R[2],
    r3 = R[3],
    r4 = R[4],
    r5 = R[5],
    r6 = R[6],
    r7 = R[7],
    r8 = R[8],
    r9 = R[9];
  // 2^130 = 5 mod p: a product that lands at limb i + 10 folds back into limb i times 5.
  const s1 = 5 * r1,
    s2 = 5 * r2,
    s3 = 5 * r3,
    s4 = 5 * r4,
    s5 = 5 * r5,
    s6 = 5 * r6,
    s7 = 5 * r7,
    s8 = 5 * r8,
    s9 = 5 * r9;
  let c: number;
  let d0 = h0 * r0 + h1 * s9 + h2 * s8 + h3 * s7 + h4 * s6 + h5 * s5 + h6 * s4 + h7 * s3 + h8 * s2 + h9 * s1;
  c = Math.floor(d0 * INV_LIMB);
  d0 -= c * LIMB;
  let d1 = c + h0 * r1 + h1 * r0 + h2 * s9 + h3 * s8 + h4 * s7 + h5 * s6 + h6 * s5 + h7 * s4 + h8 * s3 + h9 * s2;
  c = Math.floor(d1 * INV_LIMB);
  d1 -= c * LIMB;
  let d2 = c + h0 * r2 + h1 * r1 + h2 * r0 + h3 * s9 + h4 * s8 + h5 * s7 + h6 * s6 + h7 * s5 + h8 * s4 + h9 * s3;
  c = Math.floor(d2 * INV_LIMB);
  d2 -= c * LIMB;
  let d3 = c + h0 * r3 + h1 * r2 + h2 * r1 + h3 * r0 + h4 * s9 + h5 * s8 + h6 * s7 + h7 * s6 + h8 * s5 + h9 * s4;
  c = Math.floor(d3 * INV_LIMB);
  d3 -= c * LIMB;
  let d4 = c + h0 * r4 + h1 * r3 + h2 * r2 + h3 * r1 + h4 * r0 + h5 * s9 + h6 * s8 + h7 * s7 + h8 * s6 + h9 * s5;
  c = Math.floor(d4 * INV_LIMB);
  d4 -= c * LIMB;
  let d5 = c + h0 * r5 + h1 * r4 + h2 * r3 + h3 * r2 + h4 * r1 + h5 * r0 + h6 * s9 + h7 * s8 + h8 * s7 + h9 * s6;
  c = Math.floor(d5 * INV_LIMB);
  d5 -= c * LIMB;
  let d6 = c + h0 * r6 + h1 * r5 + h2 * r4 + h3 * r3 + h4 * r2 + h5 * r1 + h6 * r0 + h7 * s9 + h8 * s8 + h9 * s7;
  c = Math.floor(d6 * INV_LIMB);
  d6 -= c * LIMB;
  let d7 = c + h0 * r7 + h1 * r6 + h2 * r5 + h3 * r4 + h4 * r3 + h5 * r2 + h6 * r1 + h7 * r0 + h8 * s9 + h9 * s8;
  c = Math.floor(d7 * INV_LIMB);
  d7 -= c * LIMB;
  let d8 = c + h0 * r8 + h1 * r7 + h2 * r6 + h3 * r5 + h4 * r4 + h5 * r3 + h6 * r2 + h7 * r1 + h8 * r0 + h9 * s9;
  c = Math.floor(d8 * INV_LIMB);
  d8 -= c * LIMB;
  let d9 = c + h0 * r9 + h1 * r8 + h2 * r7 + h3 * r6 + h4 * r5 + h5 * r4 + h6 * r3 + h7 * r2 + h8 * r1 + h9 * r0;
  c = Math.floor(d9 * INV_LIMB);
  d9 -= c * LIMB;
  d0 += c * 5;
  c = Math.floor(d0 * INV_LIMB);
  d0 -= c * LIMB;
  H[0] = d0;
  H[1] = d1 + c;
  H[2] = d2;
  H[3] = d3;
  H[4] = d4;
  H[5] = d5;
  H[6] = d6;
  H[7] = d7;
  H[8] = d8;
  H[9] = d9;
}

/** Feeds `length` bytes of `m` from `o` as Poly1305 blocks, the last one zero-padded to 16 (RFC 8439 2.8). */
function polyPadded(m: Uint8Array, o: number, length: number): void {
  const end = o + length;
  let i = o;
  for (; i + 16 <= end; i += 16) polyBlock(m, i, 1 << 11);
  if (i < end) {
    PAD.fill(0);
    for (let j = 0; i + j < end; j++) PAD[j] = m[i + j];
    polyBlock(PAD, 0, 1 << 11);
  }
}

/** The final block (AAD and ciphertext lengths, 64-bit little-endian), then the tag into TAG. */
function polyFinish(aadLength: number, ciphertextLength: number): void {
  PAD.fill(0);
  PAD[0] = aadLength & 0xff;
  PAD[1] = (aadLength >>> 8) & 0xff;
  PAD[8] = ciphertextLength & 0xff;
  PAD[9] = (ciphertextLength >>> 8) & 0xff;
  PAD[10] = (ciphertextLength >>> 16) & 0xff;
  polyBlock(PAD, 0, 1 << 11);
  polyTag();
}

/** Fully reduces h mod 2^130 - 5 and writes (h + s) mod 2^128 into TAG. */
function polyTag(): void {
  const h = H;
  // Three carry passes leave every limb below 2^13: a fold into h0 can carry on once more, and
  // when it reaches limb 9 again, limbs 1 to 9 are zero and the third pass ends it.
  for (let pass = 0; pass < 3; pass++) {
    let c = 0;
    for (let i = 0; i < 10; i++) {
      const v = h[i] + c;
      c = Math.floor(v * INV_LIMB);
      h[i] = v - c * LIMB;
    }
    h[0] += c * 5;
  }
  // g = h + 5 - 2^130; its carry out of limb 9 says h >= p, and then g is the reduced value.
  const g = TAG_G;
  let c = 5;
  for (let i = 0; i < 10; i++) {
    const v = h[i] + c;
    c = v >>> 13;
    g[i] = v & 0x1fff;
  }
  const takeG = -c & 0x1fff;
  const keepH = takeG ^ 0x1fff;
  const l = TAG_L;
  for (let i = 0; i < 10; i++) l[i] = (h[i] & keepH) | (g[i] & takeG);
  const w0 = (l[0] | (l[1] << 13)) & 0xffff;
  const w1 = ((l[1] >>> 3) | (l[2] << 10)) & 0xffff;
  const w2 = ((l[2] >>> 6) | (l[3] << 7)) & 0xffff;
  const w3 = ((l[3] >>> 9) | (l[4] << 4)) & 0xffff;
  const w4 = ((l[4] >>> 12) | (l[5] << 1) | (l[6] << 14)) & 0xffff;
  const w5 = ((l[6] >>> 2) | (l[7] << 11)) & 0xffff;
  const w6 = ((l[7] >>> 5) | (l[8] << 8)) & 0xffff;
  const w7 = ((l[8] >>> 8) | (l[9] << 5)) & 0xffff;
  let carry = 0;
  carry = tagWord(0, w0, carry);
  carry = tagWord(1, w1, carry);
  carry = tagWord(2, w2, carry);
  carry = tagWord(3, w3, carry);
  carry = tagWord(4, w4, carry);
  carry = tagWord(5, w5, carry);
  carry = tagWord(6, w6, carry);
  tagWord(7, w7, carry);
}

/** TAG word i = w + s_i + carry (mod 2^16); returns the carry out. */
function tagWord(i: number, w: number, carry: number): number {
  const v = w + S[i] + carry;
  TAG[2 * i] = v & 0xff;
  TAG[2 * i + 1] = (v >>> 8) & 0xff;
  return v >>> 16;
}

/** Loads the 32-byte key at `keyOffset` of `material` and the 12-byte nonce, as little-endian words. */
function loadKeyAndNonce(material: Uint8Array, keyOffset: number, nonce: Uint8Array): void {
  for (let i = 0; i < 8; i++) KEY_WORDS[i] = word(material, keyOffset + 4 * i);
  for (let i = 0; i < 3; i++) NONCE_WORDS[i] = word(nonce, 4 * i);
}

function word(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

/** XORs the keystream from block 1 on over `length` bytes of `src` at `so` into `dst` at `d`. */
function xorKeystream(src: Uint8Array, so: number, dst: Uint8Array, d: number, length: number): void {
  for (let done = 0, counter = 1; done < length; counter++) {
    chachaBlock(counter);
    const n = Math.min(64, length - done);
    for (let j = 0; j < n; j++) dst[d + done + j] = src[so + done + j] ^ BLOCK[j];
    done += n;
  }
}

/** Poly1305 over AAD and ciphertext with the one-time key of block 0; the tag lands in TAG. */
function authenticate(aad: Uint8Array, ciphertext: Uint8Array, co: number, length: number): void {
  chachaBlock(0);
  polyInit();
  polyPadded(aad, 0, aad.length);
  polyPadded(ciphertext, co, length);
  polyFinish(aad.length, length);
}

/**
 * Seals `plaintext` with the 32-byte key at `keyOffset` of `material` and the 12-byte `nonce`:
 * writes ciphertext and the 16-byte tag into `out` at `outOffset`.
 */
export function chachaSeal(
  material: Uint8Array,
  keyOffset: number,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  outOffset: number,
): void {
  loadKeyAndNonce(material, keyOffset, nonce);
  xorKeystream(plaintext, 0, out, outOffset, plaintext.length);
  authenticate(aad, out, outOffset, plaintext.length);
  for (let i = 0; i < 16; i++) out[outOffset + plaintext.length + i] = TAG[i];
}

/**
 * Opens ciphertext (`length` bytes of `fragment` at `offset`) followed by its 16-byte tag; false when
 * the tag does not match (nothing is written then). The plaintext goes into `out` at 0.
 */
export function chachaOpen(
  material: Uint8Array,
  keyOffset: number,
  nonce: Uint8Array,
  aad: Uint8Array,
  fragment: Uint8Array,
  offset: number,
  length: number,
  out: Uint8Array,
): boolean {
  loadKeyAndNonce(material, keyOffset, nonce);
  authenticate(aad, fragment, offset, length);
  let diff = 0;
  for (let i = 0; i < 16; i++) diff |= TAG[i] ^ fragment[offset + length + i];
  if (diff !== 0) return false;
  xorKeystream(fragment, offset, out, 0, length);
  return true;
}

/** RFC 8439 section 2.5 on its own (any message length; the tests use the RFC's vectors). */
export function poly1305(key: Uint8Array, message: Uint8Array): Uint8Array {
  BLOCK.set(key.subarray(0, 32));
  polyInit();
  let i = 0;
  for (; i + 16 <= message.length; i += 16) polyBlock(message, i, 1 << 11);
  if (i < message.length) {
    PAD.fill(0);
    const rest = message.length - i;
    PAD.set(message.subarray(i), 0);
    PAD[rest] = 1;
    polyBlock(PAD, 0, 0);
  }
  polyTag();
  return TAG.slice();
}
