// Our ChaCha20-Poly1305 (short DTLS records) against the RFC 8439 vectors, an independent BigInt
// Poly1305, and node:crypto (OpenSSL) on random inputs on both sides of the length cut-over.
import { strict as assert } from "node:assert";
import { createCipheriv, randomBytes } from "node:crypto";
import { CHACHA_IN_JS, chachaOpen, chachaSeal, poly1305 } from "../../../src/transport/dtls/chacha20-poly1305";
import { CHACHA_JS_MAX_BYTES, openRecord, sealRecord } from "../../../src/transport/dtls/cipher";
import { CIPHER_SUITES } from "../../../src/transport/dtls/constants";
import { aeadAdditionalData } from "../../../src/transport/dtls/record";

const CHACHA = CIPHER_SUITES.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256;

/** node:crypto's seal: ciphertext + tag. */
function opensslSeal(key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Poly1305 straight from RFC 8439 section 2.5.1, in BigInt: the reference for the limb arithmetic. */
function bigintPoly1305(key: Buffer, message: Buffer): Buffer {
  const le = (b: Buffer): bigint => {
    let x = 0n;
    for (let i = b.length - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[i]);
    return x;
  };
  const r = le(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const s = le(key.subarray(16, 32));
  const p = (1n << 130n) - 5n;
  let acc = 0n;
  for (let i = 0; i < message.length; i += 16) {
    const block = Buffer.concat([message.subarray(i, i + 16), Buffer.from([1])]);
    acc = ((acc + le(block)) * r) % p;
  }
  let tag = (acc + s) & ((1n << 128n) - 1n);
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++, tag >>= 8n) out[i] = Number(tag & 0xffn);
  return out;
}

describe("ChaCha20-Poly1305 in JavaScript (RFC 8439)", () => {
  it("runs on this host (little-endian), so the records below go through it", () => {
    assert.equal(CHACHA_IN_JS, true);
  });

  it("reproduces the section 2.8.2 AEAD vector, and opens it again", () => {
    const key = Buffer.from("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", "hex");
    const nonce = Buffer.from("070000004041424344454647", "hex");
    const aad = Buffer.from("50515253c0c1c2c3c4c5c6c7", "hex");
    const plaintext = Buffer.from(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    const material = Buffer.concat([Buffer.alloc(3, 0xee), key]); // the key at an offset, as in the server's slab
    const sealed = Buffer.alloc(plaintext.length + 16);
    chachaSeal(material, 3, nonce, aad, plaintext, sealed, 0);
    assert.equal(
      sealed.subarray(0, plaintext.length).toString("hex"),
      "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b" +
        "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
    );
    assert.equal(sealed.subarray(plaintext.length).toString("hex"), "1ae10b594f09e26a7e902ecbd0600691");
    const opened = Buffer.alloc(plaintext.length);
    assert.equal(chachaOpen(material, 3, nonce, aad, sealed, 0, plaintext.length, opened), true);
    assert.equal(opened.toString(), plaintext.toString());
  });

  it("Poly1305 reproduces the section 2.5.2 vector", () => {
    const key = Buffer.from("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b", "hex");
    const tag = poly1305(key, Buffer.from("Cryptographic Forum Research Group"));
    assert.equal(Buffer.from(tag).toString("hex"), "a8061dc1305136c6c22b8baf0c0127a9");
  });

  it("Poly1305 equals a BigInt reference, including all-ones keys and messages that push the accumulator to p", () => {
    const cases: Array<[Buffer, Buffer]> = [];
    for (let n = 0; n < 3000; n++) {
      const key = n % 4 === 0 ? Buffer.alloc(32, 0xff) : n % 4 === 1 ? Buffer.alloc(32) : randomBytes(32);
      const message = n % 3 === 0 ? Buffer.alloc(n % 97, 0xff) : randomBytes(n % 211);
      cases.push([key, message]);
    }
    // r = 1: the accumulator is the sum of the blocks (each with its 2^128 pad bit). A first block of
    // 2^128 - 4 + k and a second of 2^128 - 1 sum to p - 2 + k: p - 2, p - 1, p and p + 1 before reduction.
    const rOne = Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]);
    for (const low of [0xfa, 0xfb, 0xfc, 0xfd]) {
      const first = Buffer.alloc(16, 0xff);
      first[0] = low;
      cases.push([rOne, Buffer.concat([first, Buffer.alloc(16, 0xff)])]);
    }
    for (const [key, message] of cases) {
      assert.equal(Buffer.from(poly1305(key, message)).toString("hex"), bigintPoly1305(key, message).toString("hex"));
    }
  });

  it("agrees with node:crypto on 4,000 random keys, nonces, AAD and lengths, and refuses every one-bit change", () => {
    for (let n = 0; n < 4000; n++) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const aad = randomBytes(n % 2 === 0 ? 13 : n % 37);
      const plaintext = randomBytes(n % (CHACHA_JS_MAX_BYTES + 1));
      const expected = opensslSeal(key, nonce, aad, plaintext);
      const sealed = Buffer.alloc(plaintext.length + 16);
      chachaSeal(key, 0, nonce, aad, plaintext, sealed, 0);
      assert.equal(sealed.toString("hex"), expected.toString("hex"), `case ${n}, ${plaintext.length} bytes`);
      const opened = Buffer.alloc(plaintext.length);
      assert.equal(chachaOpen(key, 0, nonce, aad, expected, 0, plaintext.length, opened), true);
      assert.ok(opened.equals(plaintext));
      const flipped = Buffer.from(expected);
      flipped[n % flipped.length] ^= 1 << (n % 8);
      const untouched = Buffer.alloc(plaintext.length, 0xa5);
      assert.equal(chachaOpen(key, 0, nonce, aad, flipped, 0, plaintext.length, untouched), false);
      assert.ok(
        untouched.every((b) => b === 0xa5),
        "nothing is written when the tag does not match",
      );
    }
  });

  it("DTLS records seal and open the same on both sides of the cut-over to node:crypto", () => {
    const material = randomBytes(44);
    for (const length of [0, 1, 15, 16, 17, 63, 64, 65, CHACHA_JS_MAX_BYTES - 1, CHACHA_JS_MAX_BYTES, CHACHA_JS_MAX_BYTES + 1, 1400]) {
      const plaintext = randomBytes(length);
      const sequence = 0x0102030405 + length;
      const sealed = sealRecord(CHACHA, material, 0, 32, 23, 0xfefd, 1, sequence, plaintext);
      // The same record sealed by OpenSSL with the RFC 7905 nonce and the TLS additional data.
      const nonce = Buffer.from(material.subarray(32, 44));
      const padded = Buffer.alloc(12);
      padded.writeUInt16BE(1, 4);
      padded.writeUIntBE(sequence, 6, 6);
      for (let i = 0; i < 12; i++) nonce[i] ^= padded[i];
      const aad = aeadAdditionalData(1, sequence, 23, 0xfefd, length, Buffer.alloc(13));
      assert.equal(sealed.toString("hex"), opensslSeal(material.subarray(0, 32), nonce, aad, plaintext).toString("hex"), `${length} bytes`);
      assert.ok(openRecord(CHACHA, material, 0, 32, 23, 0xfefd, 1, sequence, sealed)?.equals(plaintext), `${length} bytes open`);
      const bad = Buffer.from(sealed);
      bad[bad.length - 1] ^= 0x80;
      assert.equal(openRecord(CHACHA, material, 0, 32, 23, 0xfefd, 1, sequence, bad), undefined);
    }
  });
});
