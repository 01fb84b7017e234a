// In-project DTLS 1.2 PSK server (issue 3).
export { DtlsServer } from "./server";
export type { DtlsServerOptions, DtlsCipherSuiteName, HandshakeFailure, HandshakeFailureReason, DtlsServerStats } from "./server";
export { DtlsServerConnection } from "./connection";
