// Which certificate keys our DTLS suites take (EC P-256, RSA >= 2048 bits) and the signature
// schemes each signs and verifies with: ECDSA P-256 SHA-256, RSA-PSS (rsae) and PKCS#1 v1.5 SHA-256,
// never SHA-1, never a scheme of the other key kind.
import { strict as assert } from "node:assert";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import {
  buildCertificateRequest,
  certificateKeyKindOf,
  parseCertificateRequest,
  pickSignatureScheme,
  signParts,
  verifyParts,
} from "../../../src/transport/dtls/certificate";
import {
  CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN,
  CLIENT_CERTIFICATE_TYPE_RSA_SIGN,
  SIGNATURE_ECDSA_SECP256R1_SHA256,
  SIGNATURE_RSA_PKCS1_SHA256,
  SIGNATURE_RSA_PSS_RSAE_SHA256,
} from "../../../src/transport/dtls/constants";

/** rsa_pkcs1_sha1 (RFC 5246 7.4.1.4.1 {sha1, rsa}): what a peer without signature_algorithms means. */
const RSA_PKCS1_SHA1 = 0x0201;

describe("DTLS certificate keys and signature schemes", () => {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const parts = [Buffer.from("client random"), Buffer.from("server random"), Buffer.from("params")];
  const holder = (k: KeyObject) => ({ publicKey: k });

  it("takes EC P-256 and RSA of 2048 bits or more; refuses RSA-1024, P-384, Ed25519 and RSA-PSS-only keys", () => {
    assert.equal(certificateKeyKindOf(ec.privateKey), "ec");
    assert.equal(certificateKeyKindOf(ec.publicKey), "ec");
    assert.equal(certificateKeyKindOf(rsa.privateKey), "rsa");
    assert.equal(certificateKeyKindOf(generateKeyPairSync("rsa", { modulusLength: 3072 }).publicKey), "rsa");
    assert.equal(certificateKeyKindOf(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey), undefined);
    assert.equal(certificateKeyKindOf(generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey), undefined);
    assert.equal(certificateKeyKindOf(generateKeyPairSync("ed25519").publicKey), undefined);
    assert.equal(certificateKeyKindOf(generateKeyPairSync("rsa-pss", { modulusLength: 2048 }).publicKey), undefined);
  });

  it("picks the scheme the peer accepts, RSA-PSS before PKCS#1 v1.5; nothing without a list (SHA-1) or across kinds", () => {
    assert.equal(
      pickSignatureScheme("ec", [SIGNATURE_RSA_PKCS1_SHA256, SIGNATURE_ECDSA_SECP256R1_SHA256]),
      SIGNATURE_ECDSA_SECP256R1_SHA256,
    );
    assert.equal(pickSignatureScheme("rsa", [SIGNATURE_RSA_PKCS1_SHA256, SIGNATURE_RSA_PSS_RSAE_SHA256]), SIGNATURE_RSA_PSS_RSAE_SHA256);
    assert.equal(pickSignatureScheme("rsa", [RSA_PKCS1_SHA1, SIGNATURE_RSA_PKCS1_SHA256]), SIGNATURE_RSA_PKCS1_SHA256);
    assert.equal(pickSignatureScheme("rsa", [SIGNATURE_ECDSA_SECP256R1_SHA256, RSA_PKCS1_SHA1]), undefined);
    assert.equal(pickSignatureScheme("ec", [SIGNATURE_RSA_PSS_RSAE_SHA256]), undefined);
    assert.equal(pickSignatureScheme("rsa", undefined), undefined);
    assert.equal(pickSignatureScheme("ec", undefined), undefined);
  });

  it("each scheme verifies its own signatures only: tampered data, another scheme or the other key kind fail", () => {
    const cases: Array<[KeyObject, KeyObject, number]> = [
      [ec.privateKey, ec.publicKey, SIGNATURE_ECDSA_SECP256R1_SHA256],
      [rsa.privateKey, rsa.publicKey, SIGNATURE_RSA_PSS_RSAE_SHA256],
      [rsa.privateKey, rsa.publicKey, SIGNATURE_RSA_PKCS1_SHA256],
    ];
    for (const [priv, pub, scheme] of cases) {
      const sig = signParts(priv, scheme, parts);
      assert.equal(verifyParts(holder(pub), parts, scheme, sig), true, `scheme 0x${scheme.toString(16)}`);
      assert.equal(verifyParts(holder(pub), [...parts.slice(0, 2), Buffer.from("paramz")], scheme, sig), false);
      const flipped = Buffer.from(sig);
      flipped[flipped.length - 1] ^= 1;
      assert.equal(verifyParts(holder(pub), parts, scheme, flipped), false);
    }
    const pss = signParts(rsa.privateKey, SIGNATURE_RSA_PSS_RSAE_SHA256, parts);
    const pkcs1 = signParts(rsa.privateKey, SIGNATURE_RSA_PKCS1_SHA256, parts);
    assert.equal(verifyParts(holder(rsa.publicKey), parts, SIGNATURE_RSA_PKCS1_SHA256, pss), false, "a PSS signature is not PKCS#1 v1.5");
    assert.equal(verifyParts(holder(rsa.publicKey), parts, SIGNATURE_RSA_PSS_RSAE_SHA256, pkcs1), false, "nor the reverse");
    assert.equal(
      verifyParts(holder(rsa.publicKey), parts, SIGNATURE_ECDSA_SECP256R1_SHA256, pkcs1),
      false,
      "an ECDSA scheme with an RSA key",
    );
    assert.equal(verifyParts(holder(rsa.publicKey), parts, RSA_PKCS1_SHA1, pkcs1), false, "SHA-1 is not one of ours");
    const ecSig = signParts(ec.privateKey, SIGNATURE_ECDSA_SECP256R1_SHA256, parts);
    assert.equal(verifyParts(holder(ec.publicKey), parts, SIGNATURE_RSA_PSS_RSAE_SHA256, ecSig), false, "an RSA scheme with an EC key");
    assert.equal(verifyParts(holder(ec.publicKey), parts, SIGNATURE_ECDSA_SECP256R1_SHA256, Buffer.from([0x30, 0x02, 0x01])), false);
  });

  it("CertificateRequest asks for ECDSA and RSA client certificates with every scheme we verify", () => {
    const req = parseCertificateRequest(buildCertificateRequest());
    assert.deepEqual(req.certificateTypes, [CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN, CLIENT_CERTIFICATE_TYPE_RSA_SIGN]);
    assert.deepEqual(req.signatureAlgorithms, [
      SIGNATURE_ECDSA_SECP256R1_SHA256,
      SIGNATURE_RSA_PSS_RSAE_SHA256,
      SIGNATURE_RSA_PKCS1_SHA256,
    ]);
  });
});
