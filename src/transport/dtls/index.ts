// In-project DTLS 1.2 PSK / ECDHE_PSK server (issue 3).
export { DtlsServer, DEFAULT_DTLS_CIPHER_SUITES, DEFAULT_DTLS_GROUPS } from "./server";
export { isDtlsCertificateKey } from "./certificate";
export type {
  DtlsServerOptions,
  DtlsCipherSuiteName,
  DtlsNamedGroupName,
  HandshakeFailure,
  HandshakeFailureReason,
  DtlsServerStats,
} from "./server";
export { DtlsServerConnection } from "./connection";
