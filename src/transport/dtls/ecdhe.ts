// Ephemeral ECDH for the ECDHE_PSK key exchange (RFC 5489, RFC 8422) with node:crypto: x25519 and
// secp256r1, uncompressed points only. A key pair lives from the ClientHello to the
// ClientKeyExchange; derive() never throws on peer input, an unusable point gives undefined.
import { createECDH, createPublicKey, diffieHellman, generateKeyPairSync, type ECDH, type KeyObject } from "node:crypto";
import { NamedGroup, type DtlsNamedGroupName } from "./constants";

export interface EphemeralKey {
  readonly group: number;
  /** Our ECPoint as sent in ServerKeyExchange (32 bytes for x25519, 65 uncompressed for P-256). */
  readonly publicKey: Buffer;
  /** ECDH shared secret with the peer's ECPoint, or undefined when the point is invalid or yields zero. */
  derive(peerPoint: Buffer): Buffer | undefined;
}

// Peer X25519 keys enter node:crypto as JWK (RFC 8037 "OKP"): on Node 20 / OpenSSL 3 that is several
// times faster than DER SubjectPublicKeyInfo (about 6 us against 80 us per import).
const X25519_LENGTH = 32;
// Our public key comes out of the key generation itself, as JWK (encoded inside the generation job).
// Not an export of the generated key: Node 20 exports under the key's mutex while allocating, and a
// GC finalising the generation job then takes the same mutex, freezing the process (reproduced in
// dtls-ecdhe-psk.test); and not X25519(private, 9), a second scalar multiplication (about 33 us).
// node:crypto takes format "jwk" for the public key here; @types/node lists only pem and der.
const generateJwkPair = generateKeyPairSync as unknown as (
  type: "x25519",
  options: { publicKeyEncoding: { format: "jwk" } },
) => { publicKey: { x?: unknown }; privateKey: KeyObject };
const P256_POINT_LENGTH = 65;

export const GROUP_IDS: Readonly<Record<DtlsNamedGroupName, number>> = NamedGroup;

export function isSupportedGroup(id: number): boolean {
  return id === NamedGroup.x25519 || id === NamedGroup.secp256r1;
}

class X25519Key implements EphemeralKey {
  readonly group = NamedGroup.x25519;
  readonly publicKey: Buffer;
  private readonly privateKey: KeyObject;

  constructor() {
    const pair = generateJwkPair("x25519", { publicKeyEncoding: { format: "jwk" } });
    this.privateKey = pair.privateKey;
    this.publicKey = Buffer.from(typeof pair.publicKey.x === "string" ? pair.publicKey.x : "", "base64url");
    if (this.publicKey.length !== X25519_LENGTH) throw new Error("x25519 public key encoding failed"); // a defect, not peer input
  }

  derive(peerPoint: Buffer): Buffer | undefined {
    if (peerPoint.length !== X25519_LENGTH) return undefined;
    try {
      const publicKey = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: peerPoint.toString("base64url") }, format: "jwk" });
      const shared = diffieHellman({ privateKey: this.privateKey, publicKey });
      // RFC 8422 5.11: a low-order point gives the all-zero secret; abort.
      return shared.every((b) => b === 0) ? undefined : shared;
    } catch {
      return undefined;
    }
  }
}

class P256Key implements EphemeralKey {
  readonly group = NamedGroup.secp256r1;
  readonly publicKey: Buffer;
  private readonly ecdh: ECDH;

  constructor() {
    this.ecdh = createECDH("prime256v1");
    this.publicKey = this.ecdh.generateKeys();
  }

  derive(peerPoint: Buffer): Buffer | undefined {
    // Uncompressed only (the one format we negotiate); this also refuses the 1-byte point at infinity.
    if (peerPoint.length !== P256_POINT_LENGTH || peerPoint[0] !== 0x04) return undefined;
    try {
      // OpenSSL checks that the point lies on the curve and is not the identity.
      return this.ecdh.computeSecret(peerPoint);
    } catch {
      return undefined;
    }
  }
}

export function generateEphemeralKey(group: number): EphemeralKey {
  if (group === NamedGroup.x25519) return new X25519Key();
  if (group === NamedGroup.secp256r1) return new P256Key();
  throw new RangeError(`unsupported ECDHE group ${group}`);
}
