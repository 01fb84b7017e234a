// The transport layer's public surface: authenticated message pipes (Connection) over TLS and DTLS.
export * from "./connection";
export * from "./identity";
export * from "./stream-framer";
export * from "./tls";
export * from "./dtls-client";
