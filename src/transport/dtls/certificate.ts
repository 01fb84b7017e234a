// Certificates over DTLS 1.2, both roles: the ECDHE_ECDSA / ECDHE_RSA messages (RFC 8422 5.4-5.8,
// RFC 5246 7.4.2, 7.4.4, 7.4.8), signatures with EC P-256 keys (ECDSA, SHA-256) and RSA keys of
// 2048 bits or more (RSA-PSS or PKCS#1 v1.5, SHA-256), and the checks a peer's chain gets (issuer
// signatures up to a trusted CA, validity, CA flags, key type, extended key usage, and the RFC 6125
// name when the client checks the server).
import { X509Certificate, constants, createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import type { PeerIdentity } from "../connection";
import { certificatePeerIdentityOf, formatSubject } from "../identity";
import {
  AlertDescription,
  CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN,
  CLIENT_CERTIFICATE_TYPE_RSA_SIGN,
  SIGNATURE_ECDSA_SECP256R1_SHA256,
  SIGNATURE_RSA_PKCS1_SHA256,
  SIGNATURE_RSA_PSS_RSAE_SHA256,
} from "./constants";
import { DtlsDecodeError, Reader, readU16Vector } from "./handshake";

/** Bounds on what a peer's Certificate message can make us parse and hold. */
export const CERTIFICATE_LIMITS = Object.freeze({ maxCertificates: 8, maxCertificateBytes: 8192, maxChainBytes: 32768 });

const ANY_EKU = "2.5.29.37.0";
const SERVER_AUTH_EKU = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH_EKU = "1.3.6.1.5.5.7.3.2";
/** ECCurveType named_curve (RFC 8422 5.4). */
const NAMED_CURVE = 3;
/** Smaller RSA keys are refused (NIST SP 800-57: 2048 bits for use after 2010). */
export const MIN_RSA_KEY_BITS = 2048;

/** The keys our certificate suites sign and verify with: EC P-256, or RSA of at least MIN_RSA_KEY_BITS. */
export type CertificateKeyKind = "ec" | "rsa";

/** Signature schemes per key kind, in our order of preference (RSA: PSS before PKCS#1 v1.5). */
const SIGNATURE_SCHEMES: Readonly<Record<CertificateKeyKind, readonly number[]>> = {
  ec: [SIGNATURE_ECDSA_SECP256R1_SHA256],
  rsa: [SIGNATURE_RSA_PSS_RSAE_SHA256, SIGNATURE_RSA_PKCS1_SHA256],
};
/** Every scheme we can verify: our signature_algorithms, in ClientHello and CertificateRequest. */
export const VERIFIABLE_SIGNATURE_SCHEMES: readonly number[] = [...SIGNATURE_SCHEMES.ec, ...SIGNATURE_SCHEMES.rsa];
/** SHA-256 output: the RSA-PSS salt length TLS requires (RFC 8446 4.2.3). */
const PSS_SALT_LENGTH = 32;

export type PemInput = string | Buffer;

/** Our own certificate chain (DER, leaf first) and the key that signs for it. */
export interface CertificateCredentials {
  readonly chain: readonly Buffer[];
  readonly key: KeyObject;
  readonly kind: CertificateKeyKind;
  readonly leaf: X509Certificate;
}

/** Why a peer's certificate chain is refused: the alert to send and words for people. */
export interface CertificateRefusal {
  readonly alert: number;
  /** Listener/dialer reason word: certificate-untrusted, certificate-expired, certificate-not-yet-valid, bad-certificate. */
  readonly reason:
    "certificate-untrusted" | "certificate-expired" | "certificate-not-yet-valid" | "bad-certificate" | "certificate-name-mismatch";
  readonly detail: string;
  /** Subject of the leaf, when it parsed. */
  readonly subject?: string;
}

export type ChainCheck =
  | {
      ok: true;
      leaf: X509Certificate;
      leafDer: Buffer;
      /** The trust anchor the chain ends at. */
      anchor: X509Certificate;
      /** The earliest notAfter of the chain and its anchor (ms since the epoch): the verdict holds until then. */
      validUntil: number;
    }
  | ({ ok: false } & CertificateRefusal);

/** Every PEM certificate block in `pem`, in order. */
export function splitPemCertificates(pem: PemInput): X509Certificate[] {
  const text = Buffer.isBuffer(pem) ? pem.toString("latin1") : pem;
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/**
 * Our chain and key from PEM. Throws TypeError when they do not parse, the key is neither EC P-256
 * nor RSA of at least 2048 bits, or the key does not belong to the first certificate.
 */
export function loadCertificateCredentials(opts: { cert: PemInput; key: PemInput; passphrase?: string }): CertificateCredentials {
  let certs: X509Certificate[];
  try {
    certs = splitPemCertificates(opts.cert);
  } catch (e) {
    throw new TypeError(`certificate does not parse: ${(e as Error).message}`);
  }
  if (certs.length === 0) throw new TypeError("certificate: no PEM CERTIFICATE block found");
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: opts.key, ...(opts.passphrase !== undefined ? { passphrase: opts.passphrase } : {}) });
  } catch (e) {
    throw new TypeError(`private key does not parse: ${(e as Error).message}`);
  }
  const kind = certificateKeyKindOf(key);
  if (kind === undefined) {
    throw new TypeError(
      `DTLS certificates need an EC P-256 key or an RSA key of ${MIN_RSA_KEY_BITS} bits or more; this key is ${describeKey(key)}`,
    );
  }
  if (!certs[0].checkPrivateKey(key)) throw new TypeError("the private key does not belong to the first certificate of the chain");
  return { chain: certs.map((c) => c.raw), key, kind, leaf: certs[0] };
}

/** Trust anchors from one or more PEM bundles. */
export function loadTrustAnchors(ca: PemInput | readonly PemInput[]): X509Certificate[] {
  const list = Array.isArray(ca) ? ca : [ca as PemInput];
  const out: X509Certificate[] = [];
  for (const pem of list) out.push(...splitPemCertificates(pem));
  if (out.length === 0) throw new TypeError("ca: no PEM CERTIFICATE block found");
  return out;
}

/** Which of our certificate suites' key kinds `key` is (public or private), if any. */
export function certificateKeyKindOf(key: KeyObject): CertificateKeyKind | undefined {
  if (key.asymmetricKeyType === "ec") return key.asymmetricKeyDetails?.namedCurve === "prime256v1" ? "ec" : undefined;
  // An "rsa-pss" key (id-RSASSA-PSS) may only sign with rsa_pss_pss_* schemes: not offered, so refused.
  if (key.asymmetricKeyType === "rsa") return (key.asymmetricKeyDetails?.modulusLength ?? 0) >= MIN_RSA_KEY_BITS ? "rsa" : undefined;
  return undefined;
}

/** "EC P-256" or "RSA", for messages. */
export function keyKindLabel(kind: CertificateKeyKind | undefined): string {
  return kind === "ec" ? "EC P-256" : kind === "rsa" ? "RSA" : "of no kind we sign with";
}

function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  const detail = d?.namedCurve ?? (d?.modulusLength !== undefined ? `${d.modulusLength} bits` : undefined);
  return `${key.asymmetricKeyType ?? "unknown"}${detail ? ` ${detail}` : ""}`;
}

/**
 * Checks a peer's chain (DER, leaf first, as sent). `role` is the peer's: a server certificate must
 * allow serverAuth, a client certificate clientAuth (when the certificate lists extended key usages).
 * `name`: the name the server must carry (RFC 6125 DNS-ID or IP address), for the client's check.
 */
export function checkPeerChain(
  chainDer: readonly Buffer[],
  anchors: readonly X509Certificate[],
  opts: { role: "server" | "client"; name?: string; now?: number },
): ChainCheck {
  try {
    return checkChain(chainDer, anchors, opts);
  } catch (e) {
    // X509Certificate decodes its parts lazily: a key or extension that does not decode throws here.
    return refuse(AlertDescription.BadCertificate, "bad-certificate", `certificate does not decode: ${(e as Error).message}`);
  }
}

function checkChain(
  chainDer: readonly Buffer[],
  anchors: readonly X509Certificate[],
  opts: { role: "server" | "client"; name?: string; now?: number },
): ChainCheck {
  const now = opts.now ?? Date.now();
  let chain: X509Certificate[];
  try {
    chain = chainDer.map((der) => new X509Certificate(der));
  } catch (e) {
    return refuse(AlertDescription.BadCertificate, "bad-certificate", `certificate does not parse: ${(e as Error).message}`);
  }
  const leaf = chain[0];
  if (!leaf) return refuse(AlertDescription.BadCertificate, "bad-certificate", "empty certificate chain");
  const subject = formatSubject(leaf.subject);
  const no = (alert: number, reason: CertificateRefusal["reason"], detail: string): ChainCheck => refuse(alert, reason, detail, subject);
  const key = leaf.publicKey;
  if (certificateKeyKindOf(key) === undefined) {
    return no(
      AlertDescription.UnsupportedCertificate,
      "bad-certificate",
      `certificate key is ${describeKey(key)}, not EC P-256 or RSA of ${MIN_RSA_KEY_BITS} bits or more`,
    );
  }
  const eku = leaf.keyUsage; // Node names the extended key usage OIDs keyUsage
  const wanted = opts.role === "server" ? SERVER_AUTH_EKU : CLIENT_AUTH_EKU;
  if (Array.isArray(eku) && eku.length > 0 && !eku.includes(wanted) && !eku.includes(ANY_EKU)) {
    return no(
      AlertDescription.UnsupportedCertificate,
      "bad-certificate",
      `certificate is not for ${opts.role === "server" ? "servers" : "clients"} (extended key usage)`,
    );
  }
  // Walk up: each certificate must be signed by the next one sent, or by a trust anchor.
  let validUntil = Infinity;
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i];
    const validity = checkValidity(cert, now);
    validUntil = Math.min(validUntil, Date.parse(cert.validTo));
    if (validity)
      return no(validity.alert, validity.reason, `${i === 0 ? "certificate" : `issuer ${formatSubject(cert.subject)}`} ${validity.detail}`);
    const anchor = anchors.find((a) => cert.checkIssued(a) && cert.verify(a.publicKey));
    if (anchor) {
      const anchorValidity = checkValidity(anchor, now);
      if (anchorValidity)
        return no(anchorValidity.alert, anchorValidity.reason, `trusted CA ${formatSubject(anchor.subject)} ${anchorValidity.detail}`);
      if (opts.name !== undefined && !nameMatches(leaf, opts.name)) {
        // The chain is good but names someone else (certificate_unknown: nothing is wrong with it as such).
        return no(AlertDescription.CertificateUnknown, "certificate-name-mismatch", `certificate does not name ${opts.name}`);
      }
      return { ok: true, leaf, leafDer: Buffer.from(chainDer[0]), anchor, validUntil: Math.min(validUntil, Date.parse(anchor.validTo)) };
    }
    const next = chain[i + 1];
    if (!next || !cert.checkIssued(next)) {
      return no(
        AlertDescription.UnknownCa,
        "certificate-untrusted",
        `certificate is not signed by a CA we trust (issuer ${formatSubject(cert.issuer)})`,
      );
    }
    if (!next.ca) return no(AlertDescription.BadCertificate, "bad-certificate", `issuer ${formatSubject(next.subject)} is not a CA`);
    if (!cert.verify(next.publicKey))
      return no(AlertDescription.BadCertificate, "bad-certificate", "a signature in the chain does not verify");
  }
  return no(AlertDescription.UnknownCa, "certificate-untrusted", "certificate chain does not end at a CA we trust");
}

function refuse(alert: number, reason: CertificateRefusal["reason"], detail: string, subject?: string): ChainCheck {
  return { ok: false, alert, reason, detail, ...(subject !== undefined ? { subject } : {}) };
}

function checkValidity(cert: X509Certificate, now: number): Omit<CertificateRefusal, "subject"> | undefined {
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (!(now >= from))
    return {
      alert: AlertDescription.CertificateExpired,
      reason: "certificate-not-yet-valid",
      detail: `is not valid before ${cert.validFrom}`,
    };
  if (!(now <= to)) return { alert: AlertDescription.CertificateExpired, reason: "certificate-expired", detail: `expired ${cert.validTo}` };
  return undefined;
}

function nameMatches(leaf: X509Certificate, name: string): boolean {
  const bare = name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name;
  if (/^[\d.]+$/.test(bare) || bare.includes(":")) return leaf.checkIP(bare) !== undefined;
  return leaf.checkHost(bare) !== undefined;
}

// ------------------------------------------------------------------------------- messages

/** Certificate (RFC 5246 7.4.2): certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>. */
export function encodeCertificateMessage(chain: readonly Buffer[]): Buffer {
  const total = chain.reduce((n, c) => n + 3 + c.length, 0);
  const out = Buffer.allocUnsafe(3 + total);
  out.writeUIntBE(total, 0, 3);
  let at = 3;
  for (const der of chain) {
    out.writeUIntBE(der.length, at, 3);
    at += 3;
    at += der.copy(out, at);
  }
  return out;
}

/** The DER certificates of a Certificate message (possibly none), within CERTIFICATE_LIMITS. */
export function parseCertificateMessage(body: Buffer): Buffer[] {
  if (body.length < 3) throw new DtlsDecodeError("truncated certificate_list");
  const total = body.readUIntBE(0, 3);
  if (total !== body.length - 3) throw new DtlsDecodeError("certificate_list length does not match the message");
  if (total > CERTIFICATE_LIMITS.maxChainBytes) throw new DtlsDecodeError("certificate chain too large");
  const out: Buffer[] = [];
  let at = 3;
  while (at < body.length) {
    if (body.length - at < 3) throw new DtlsDecodeError("truncated certificate length");
    const n = body.readUIntBE(at, 3);
    at += 3;
    if (n === 0 || n > CERTIFICATE_LIMITS.maxCertificateBytes || at + n > body.length) throw new DtlsDecodeError("bad certificate length");
    if (out.length === CERTIFICATE_LIMITS.maxCertificates) throw new DtlsDecodeError("too many certificates");
    out.push(body.subarray(at, at + n));
    at += n;
  }
  return out;
}

/**
 * CertificateRequest (RFC 5246 7.4.4): certificate_types [ecdsa_sign, rsa_sign], the signature schemes
 * we verify, and no CA names (the client has one certificate; naming our CAs gains nothing).
 */
export function buildCertificateRequest(): Buffer {
  const schemes = VERIFIABLE_SIGNATURE_SCHEMES;
  const out = Buffer.alloc(1 + 2 + 2 + 2 * schemes.length + 2);
  out[0] = 2;
  out[1] = CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN;
  out[2] = CLIENT_CERTIFICATE_TYPE_RSA_SIGN;
  out.writeUInt16BE(2 * schemes.length, 3);
  schemes.forEach((s, i) => out.writeUInt16BE(s, 5 + 2 * i));
  return out; // certificate_authorities: empty
}

/** The ClientCertificateType a client with a `kind` key answers to (RFC 5246 7.4.6). */
export function clientCertificateType(kind: CertificateKeyKind): number {
  return kind === "ec" ? CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN : CLIENT_CERTIFICATE_TYPE_RSA_SIGN;
}

/**
 * The scheme a `kind` key signs with for a peer that accepts `offered` (its signature_algorithms), or
 * undefined when it accepts none of ours. No list means SHA-1 only (RFC 5246 7.4.1.4.1): refused.
 */
export function pickSignatureScheme(kind: CertificateKeyKind, offered: readonly number[] | undefined): number | undefined {
  return offered === undefined ? undefined : SIGNATURE_SCHEMES[kind].find((s) => offered.includes(s));
}

export function parseCertificateRequest(body: Buffer): { certificateTypes: number[]; signatureAlgorithms: number[] } {
  const r = new Reader(body);
  const types = r.bytes(r.u8());
  if (types.length === 0) throw new DtlsDecodeError("no certificate_types");
  const signatureAlgorithms = readU16Vector(r, "supported_signature_algorithms");
  const names = r.bytes(r.u16());
  // certificate_authorities: DistinguishedName<1..2^16-1> entries; only their framing is checked.
  const dn = new Reader(names);
  while (dn.remaining > 0) if (dn.bytes(dn.u16()).length === 0) throw new DtlsDecodeError("empty DistinguishedName");
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after CertificateRequest");
  return { certificateTypes: [...types], signatureAlgorithms };
}

/** ServerECDHParams (RFC 8422 5.4): named_curve, the group, and the ephemeral public point. */
export function encodeEcdheParams(group: number, point: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + point.length);
  out[0] = NAMED_CURVE;
  out.writeUInt16BE(group, 1);
  out[3] = point.length;
  point.copy(out, 4);
  return out;
}

/** digitally-signed (RFC 5246 4.7): SignatureAndHashAlgorithm, then signature<0..2^16-1>. */
export function encodeDigitallySigned(scheme: number, signature: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + signature.length);
  out.writeUInt16BE(scheme, 0);
  out.writeUInt16BE(signature.length, 2);
  signature.copy(out, 4);
  return out;
}

export function parseDigitallySigned(r: Reader): { scheme: number; signature: Buffer } {
  const scheme = r.u16();
  const signature = r.bytes(r.u16());
  if (signature.length === 0) throw new DtlsDecodeError("empty signature");
  return { scheme, signature };
}

/** ECDHE_ECDSA / ECDHE_RSA ServerKeyExchange: params, then the signature over client_random + server_random + params. */
export function buildSignedServerKeyExchange(params: Buffer, scheme: number, signature: Buffer): Buffer {
  return Buffer.concat([params, encodeDigitallySigned(scheme, signature)]);
}

export function parseSignedServerKeyExchange(body: Buffer): {
  group: number;
  point: Buffer;
  params: Buffer;
  scheme: number;
  signature: Buffer;
} {
  const r = new Reader(body);
  if (r.u8() !== NAMED_CURVE) throw new DtlsDecodeError("ServerKeyExchange: only named curves");
  const group = r.u16();
  const point = r.bytes(r.u8());
  if (point.length === 0) throw new DtlsDecodeError("empty ECDH public value");
  const params = body.subarray(0, 4 + point.length);
  const { scheme, signature } = parseDigitallySigned(r);
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ServerKeyExchange");
  return { group, point, params, scheme, signature };
}

/** CertificateVerify body (RFC 5246 7.4.8). */
export function parseCertificateVerify(body: Buffer): { scheme: number; signature: Buffer } {
  const r = new Reader(body);
  const out = parseDigitallySigned(r);
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after CertificateVerify");
  return out;
}

/** ClientECDiffieHellmanPublic (RFC 8422 5.7): ECPoint ecdh_Yc<1..2^8-1>. */
export function parseEcdhClientKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body);
  const point = r.bytes(r.u8());
  if (point.length === 0) throw new DtlsDecodeError("empty ECDH public value");
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ecdh_Yc");
  return point;
}

export function encodeEcdhClientKeyExchange(point: Buffer): Buffer {
  return Buffer.concat([Buffer.from([point.length]), point]);
}

/** node:crypto sign/verify options for `scheme` (one of SIGNATURE_SCHEMES) with `key`. */
function schemeOptions(key: KeyObject, scheme: number): { key: KeyObject; dsaEncoding?: "der"; padding?: number; saltLength?: number } {
  if (scheme === SIGNATURE_ECDSA_SECP256R1_SHA256) return { key, dsaEncoding: "der" };
  if (scheme === SIGNATURE_RSA_PSS_RSAE_SHA256) return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: PSS_SALT_LENGTH };
  return { key, padding: constants.RSA_PKCS1_PADDING };
}

/** The signature over `parts` with SHA-256 and `scheme` (picked by pickSignatureScheme for the key), as TLS carries it. */
export function signParts(key: KeyObject, scheme: number, parts: readonly Buffer[]): Buffer {
  return sign("sha256", Buffer.concat(parts), schemeOptions(key, scheme));
}

/**
 * True when `signature` verifies over `parts` with the certificate's key, and `scheme` is one of
 * ours that fits the key's kind (an RSA key never verifies an ECDSA scheme or the reverse).
 */
export function verifyParts(cert: { readonly publicKey: KeyObject }, parts: readonly Buffer[], scheme: number, signature: Buffer): boolean {
  const kind = certificateKeyKindOf(cert.publicKey);
  if (kind === undefined || !SIGNATURE_SCHEMES[kind].includes(scheme)) return false;
  try {
    return verify("sha256", Buffer.concat(parts), schemeOptions(cert.publicKey, scheme), signature);
  } catch {
    return false; // malformed DER signature, wrong RSA signature length
  }
}

/** Whether this key can sign for our certificate suites (EC P-256, RSA >= 2048 bits); false when it does not parse. */
export function isDtlsCertificateKey(key: PemInput, passphrase?: string): boolean {
  try {
    const k = createPrivateKey({ key, ...(passphrase !== undefined ? { passphrase } : {}) });
    return certificateKeyKindOf(k) !== undefined;
  } catch {
    return false;
  }
}

interface VerifiedEntry {
  /** The verdict holds until then: the leaf's notAfter, or the cache lifetime if sooner. */
  until: number;
  accepted: AcceptedCertificate;
}

/** A client certificate this server accepted: what the rest of the handshake and the session need. */
export interface AcceptedCertificate {
  readonly leafDer: Buffer;
  /** Verifies the client's CertificateVerify. */
  readonly publicKey: KeyObject;
  /** "CN=..., O=..." */
  readonly subject: string;
  readonly identity: PeerIdentity;
  /** SHA-256 of the trust anchor (DER) the chain ended at. */
  readonly anchor: Buffer;
  /** The earliest notAfter of the chain and its anchor, ms since the epoch. */
  readonly validUntil: number;
}

/**
 * What a session ticket carries of a certificate session (sealed and authenticated by our ticket
 * key): enough to resume without parsing or verifying the chain again, and to refuse the
 * resumption once the chain has expired or its trust anchor is no longer configured.
 */
export interface SealedCertificate {
  leafDer: Buffer;
  subject: string;
  spki: Buffer;
  anchor: Buffer;
  /** Seconds since the epoch. */
  validUntil: number;
}

/** The SHA-256 of a certificate's DER, as AcceptedCertificate.anchor holds it. */
export function certificateDigest(cert: X509Certificate): Buffer {
  return createHash("sha256").update(cert.raw).digest();
}

/**
 * Client chains this server accepted, by a digest of the chain: a home that reconnects or resumes
 * (a reconnect storm after a restart) is not parsed and verified again. Only acceptances are kept,
 * each until its leaf expires or `lifetimeMs` passes (so a CA file change applies within it); bounded.
 */
export class VerifiedCertificates {
  private readonly entries = new Map<string, VerifiedEntry>();
  /** Trust anchors by certificateDigest (hex), with their notAfter (ms). */
  private readonly anchorsByDigest = new Map<string, number>();

  constructor(
    private readonly anchors: readonly X509Certificate[],
    private readonly maxEntries = 4096,
    private readonly lifetimeMs = 300_000,
  ) {
    for (const a of anchors) this.anchorsByDigest.set(certificateDigest(a).toString("hex"), Date.parse(a.validTo));
  }

  /**
   * A certificate session from one of our tickets: this server (or one sharing its ticket secret)
   * checked the chain when it issued the ticket, so resuming needs only what may have changed since:
   * the chain's expiry and whether its trust anchor is still one of ours. Nothing is parsed, so a
   * storm of resumptions after a restart costs no chain checks.
   */
  resume(sealed: SealedCertificate, now = Date.now()): AcceptedCertificate | undefined {
    const anchorUntil = this.anchorsByDigest.get(sealed.anchor.toString("hex"));
    if (anchorUntil === undefined || !(now <= anchorUntil) || !(now <= sealed.validUntil * 1000)) return undefined;
    const { leafDer, subject, spki, anchor } = sealed;
    let publicKey: KeyObject | undefined;
    return {
      leafDer,
      subject,
      anchor,
      validUntil: sealed.validUntil * 1000,
      identity: { method: "certificate", subject, spki, certificate: leafDer },
      // Only a full handshake's CertificateVerify needs the key object; a resumed session never does.
      get publicKey(): KeyObject {
        publicKey ??= createPublicKey({ key: spki, format: "der", type: "spki" });
        return publicKey;
      },
    };
  }

  /** checkPeerChain for a client chain; an accepted one comes back with its key and identity. */
  check(chainDer: readonly Buffer[], now = Date.now()): { ok: true; accepted: AcceptedCertificate } | ({ ok: false } & CertificateRefusal) {
    const key = chainKey(chainDer);
    const hit = this.entries.get(key);
    if (hit && now < hit.until) return { ok: true, accepted: hit.accepted };
    if (hit) this.entries.delete(key);
    const result = checkPeerChain(chainDer, this.anchors, { role: "client", now });
    if (!result.ok) return result;
    const accepted: AcceptedCertificate = {
      leafDer: result.leafDer,
      publicKey: result.leaf.publicKey,
      subject: formatSubject(result.leaf.subject),
      identity: certificatePeerIdentityOf(result.leaf, result.leafDer),
      anchor: certificateDigest(result.anchor),
      validUntil: result.validUntil,
    };
    this.entries.set(key, { until: Math.min(result.validUntil, now + this.lifetimeMs), accepted });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    return { ok: true, accepted };
  }
}

function chainKey(chainDer: readonly Buffer[]): string {
  const h = createHash("sha256");
  for (const der of chainDer) h.update(der);
  return h.digest("base64");
}
