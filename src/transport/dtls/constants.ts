// Wire constants for DTLS 1.2 (RFC 6347, RFC 5246) as used by the PSK server.

export const ContentType = {
  ChangeCipherSpec: 20,
  Alert: 21,
  Handshake: 22,
  ApplicationData: 23,
  /** RFC 9146 4: a record carrying a Connection ID; its real type is inside the protected DTLSInnerPlaintext. */
  Tls12Cid: 25,
} as const;

export const HandshakeType = {
  HelloRequest: 0,
  ClientHello: 1,
  ServerHello: 2,
  HelloVerifyRequest: 3,
  /** RFC 5077 3.3 */
  NewSessionTicket: 4,
  Certificate: 11,
  ServerKeyExchange: 12,
  CertificateRequest: 13,
  ServerHelloDone: 14,
  CertificateVerify: 15,
  ClientKeyExchange: 16,
  Finished: 20,
} as const;

export const AlertLevel = { Warning: 1, Fatal: 2 } as const;

export const AlertDescription = {
  CloseNotify: 0,
  UnexpectedMessage: 10,
  HandshakeFailure: 40,
  BadCertificate: 42,
  UnsupportedCertificate: 43,
  CertificateExpired: 45,
  CertificateUnknown: 46,
  IllegalParameter: 47,
  UnknownCa: 48,
  AccessDenied: 49,
  DecodeError: 50,
  DecryptError: 51,
  ProtocolVersion: 70,
  InternalError: 80,
  UserCanceled: 90,
  NoRenegotiation: 100,
  UnsupportedExtension: 110,
  UnknownPskIdentity: 115,
} as const;

/**
 * Handshakes in progress per source (IPv4 address, IPv6 /64). Homes behind one CGN address share
 * it; a handshake holds its slot for about two round trips.
 */
export const DEFAULT_MAX_HANDSHAKING_PER_SOURCE = 16;

/** Record-layer and hello version values; DTLS versions count downwards (1.0 = 0xfeff, 1.2 = 0xfefd). */
export const DTLS_1_0 = 0xfeff;
export const DTLS_1_2 = 0xfefd;

export const RECORD_HEADER_LENGTH = 13;
export const HANDSHAKE_HEADER_LENGTH = 12;

export const ExtensionType = {
  SupportedGroups: 0x000a,
  /** RFC 5246 7.4.1.4.1 */
  SignatureAlgorithms: 0x000d,
  EcPointFormats: 0x000b,
  ExtendedMasterSecret: 0x0017,
  /** RFC 5077 3.2: empty = "I support tickets"; otherwise the ticket to resume from. */
  SessionTicket: 0x0023,
  /** RFC 9146 3: cid<0..2^8-1>, the CID the sender wants to receive (54; drafts used 53). */
  ConnectionId: 0x0036,
  RenegotiationInfo: 0xff01,
} as const;

/** Named groups for ECDHE (RFC 8422 5.1.1; x25519 from RFC 8422 too). */
export const NamedGroup = { secp256r1: 23, x25519: 29 } as const;
export type DtlsNamedGroupName = keyof typeof NamedGroup;
/** ECPointFormat uncompressed (RFC 8422 5.1.2): the only format we send and accept. */
export const POINT_FORMAT_UNCOMPRESSED = 0;
/** RFC 5746 signalling cipher suite value: the client supports secure renegotiation. */
export const EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;

/**
 * Signature schemes of our certificate suites (RFC 5246 7.4.1.4.1 SignatureAndHashAlgorithm; RFC 8446
 * 4.2.3 for RSA-PSS with rsaEncryption keys, usable in TLS 1.2): ECDSA P-256 with SHA-256, and for RSA
 * keys PSS (preferred) or PKCS#1 v1.5, both with SHA-256. No SHA-1.
 */
export const SIGNATURE_ECDSA_SECP256R1_SHA256 = 0x0403;
export const SIGNATURE_RSA_PSS_RSAE_SHA256 = 0x0804;
export const SIGNATURE_RSA_PKCS1_SHA256 = 0x0401;
/** ClientCertificateType (RFC 5246 7.4.4; RFC 8422 5.5): rsa_sign (1) and ecdsa_sign (64). */
export const CLIENT_CERTIFICATE_TYPE_RSA_SIGN = 1;
export const CLIENT_CERTIFICATE_TYPE_ECDSA_SIGN = 64;

export type DtlsCipherSuiteName =
  | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_PSK_WITH_AES_128_CCM_8"
  | "TLS_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_PSK_WITH_AES_128_CCM";

export interface CipherSuiteInfo {
  readonly name: DtlsCipherSuiteName;
  readonly id: number;
  /**
   * RFC 4279 plain PSK, RFC 5489 ECDHE_PSK (ephemeral ECDH mixed with the PSK: forward secrecy), or
   * RFC 8422 ECDHE_ECDSA / ECDHE_RSA (ephemeral ECDH signed with the server's certificate key, EC
   * P-256 or RSA; mutual certificates).
   */
  readonly keyExchange: "psk" | "ecdhe_psk" | "ecdhe_ecdsa" | "ecdhe_rsa";
  /** node:crypto algorithm name. */
  readonly algorithm: "aes-128-ccm" | "aes-128-gcm" | "chacha20-poly1305";
  readonly tagLength: 8 | 16;
  readonly keyLength: 16 | 32;
  /** Implicit IV from the key block: 4-byte salt (AES) or 12-byte IV (ChaCha20, RFC 7905). */
  readonly fixedIvLength: 4 | 12;
  /** Explicit nonce carried in each record: 8 (AES-GCM/CCM) or none (ChaCha20-Poly1305). */
  readonly explicitNonceLength: 0 | 8;
}

/**
 * AEAD suites only. AES: key 16 bytes, implicit IV (salt) 4 bytes, explicit nonce 8 bytes (RFC 5288,
 * RFC 6655). ChaCha20-Poly1305: key 32 bytes, IV 12 bytes, no explicit nonce (RFC 7905).
 */
export const CIPHER_SUITES: Readonly<Record<DtlsCipherSuiteName, CipherSuiteInfo>> = {
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: {
    name: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    id: 0xcca9,
    keyExchange: "ecdhe_ecdsa",
    algorithm: "chacha20-poly1305",
    tagLength: 16,
    keyLength: 32,
    fixedIvLength: 12,
    explicitNonceLength: 0,
  },
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: {
    name: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    id: 0xc02b,
    keyExchange: "ecdhe_ecdsa",
    algorithm: "aes-128-gcm",
    tagLength: 16,
    keyLength: 16,
    fixedIvLength: 4,
    explicitNonceLength: 8,
  },
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: {
    name: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    id: 0xcca8,
    keyExchange: "ecdhe_rsa",
    algorithm: "chacha20-poly1305",
    tagLength: 16,
    keyLength: 32,
    fixedIvLength: 12,
    explicitNonceLength: 0,
  },
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: {
    name: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    id: 0xc02f,
    keyExchange: "ecdhe_rsa",
    algorithm: "aes-128-gcm",
    tagLength: 16,
    keyLength: 16,
    fixedIvLength: 4,
    explicitNonceLength: 8,
  },
  TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: {
    name: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    id: 0xccac,
    keyExchange: "ecdhe_psk",
    algorithm: "chacha20-poly1305",
    tagLength: 16,
    keyLength: 32,
    fixedIvLength: 12,
    explicitNonceLength: 0,
  },
  TLS_PSK_WITH_AES_128_CCM_8: {
    name: "TLS_PSK_WITH_AES_128_CCM_8",
    id: 0xc0a8,
    keyExchange: "psk",
    algorithm: "aes-128-ccm",
    tagLength: 8,
    keyLength: 16,
    fixedIvLength: 4,
    explicitNonceLength: 8,
  },
  TLS_PSK_WITH_AES_128_GCM_SHA256: {
    name: "TLS_PSK_WITH_AES_128_GCM_SHA256",
    id: 0x00a8,
    keyExchange: "psk",
    algorithm: "aes-128-gcm",
    tagLength: 16,
    keyLength: 16,
    fixedIvLength: 4,
    explicitNonceLength: 8,
  },
  TLS_PSK_WITH_AES_128_CCM: {
    name: "TLS_PSK_WITH_AES_128_CCM",
    id: 0xc0a4,
    keyExchange: "psk",
    algorithm: "aes-128-ccm",
    tagLength: 16,
    keyLength: 16,
    fixedIvLength: 4,
    explicitNonceLength: 8,
  },
};

/** The kind of key that signs for a certificate suite, or undefined for the PSK suites. */
export function certificateKeyKind(suite: CipherSuiteInfo): "ec" | "rsa" | undefined {
  return suite.keyExchange === "ecdhe_ecdsa" ? "ec" : suite.keyExchange === "ecdhe_rsa" ? "rsa" : undefined;
}

/** RFC 5246 6.3 key block of an AEAD suite: two keys and two implicit IVs (no MAC keys). */
export function keyBlockLength(suite: CipherSuiteInfo): number {
  return 2 * suite.keyLength + 2 * suite.fixedIvLength;
}
