// Wire constants for DTLS 1.2 (RFC 6347, RFC 5246) as used by the PSK server.

export const ContentType = { ChangeCipherSpec: 20, Alert: 21, Handshake: 22, ApplicationData: 23 } as const;

export const HandshakeType = {
  HelloRequest: 0,
  ClientHello: 1,
  ServerHello: 2,
  HelloVerifyRequest: 3,
  ServerKeyExchange: 12,
  ServerHelloDone: 14,
  ClientKeyExchange: 16,
  Finished: 20,
} as const;

export const AlertLevel = { Warning: 1, Fatal: 2 } as const;

export const AlertDescription = {
  CloseNotify: 0,
  UnexpectedMessage: 10,
  HandshakeFailure: 40,
  IllegalParameter: 47,
  DecodeError: 50,
  DecryptError: 51,
  ProtocolVersion: 70,
  InternalError: 80,
  NoRenegotiation: 100,
  UnknownPskIdentity: 115,
} as const;

/** Record-layer and hello version values; DTLS versions count downwards (1.0 = 0xfeff, 1.2 = 0xfefd). */
export const DTLS_1_0 = 0xfeff;
export const DTLS_1_2 = 0xfefd;

export const RECORD_HEADER_LENGTH = 13;
export const HANDSHAKE_HEADER_LENGTH = 12;

export const ExtensionType = { ExtendedMasterSecret: 0x0017, RenegotiationInfo: 0xff01 } as const;
/** RFC 5746 signalling cipher suite value: the client supports secure renegotiation. */
export const EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;

export type DtlsCipherSuiteName = "TLS_PSK_WITH_AES_128_CCM_8" | "TLS_PSK_WITH_AES_128_GCM_SHA256" | "TLS_PSK_WITH_AES_128_CCM";

export interface CipherSuiteInfo {
  readonly name: DtlsCipherSuiteName;
  readonly id: number;
  /** node:crypto algorithm name. */
  readonly algorithm: "aes-128-ccm" | "aes-128-gcm";
  readonly tagLength: 8 | 16;
}

/** AEAD suites only: key 16 bytes, implicit IV (salt) 4 bytes, explicit nonce 8 bytes (RFC 5288, RFC 6655). */
export const CIPHER_SUITES: Readonly<Record<DtlsCipherSuiteName, CipherSuiteInfo>> = {
  TLS_PSK_WITH_AES_128_CCM_8: { name: "TLS_PSK_WITH_AES_128_CCM_8", id: 0xc0a8, algorithm: "aes-128-ccm", tagLength: 8 },
  TLS_PSK_WITH_AES_128_GCM_SHA256: { name: "TLS_PSK_WITH_AES_128_GCM_SHA256", id: 0x00a8, algorithm: "aes-128-gcm", tagLength: 16 },
  TLS_PSK_WITH_AES_128_CCM: { name: "TLS_PSK_WITH_AES_128_CCM", id: 0xc0a4, algorithm: "aes-128-ccm", tagLength: 16 },
};
