// The transport layer's public surface: authenticated message pipes (Connection) over TLS and
// DTLS, the ISP-side call-home listener and its drop-list.
export * from "./connection";
export * from "./identity";
export * from "./stream-framer";
export * from "./tls";
export * from "./dtls-client";
export * from "./drop-list";
export * from "./listener";
export { DtlsServer, DtlsServerConnection, DEFAULT_DTLS_CIPHER_SUITES, DEFAULT_DTLS_GROUPS, isDtlsCertificateKey } from "./dtls";
export type {
  DtlsServerOptions,
  DtlsCipherSuiteName,
  DtlsNamedGroupName,
  DtlsServerStats,
  HandshakeFailure as DtlsHandshakeFailure,
  HandshakeFailureReason as DtlsHandshakeFailureReason,
} from "./dtls";
