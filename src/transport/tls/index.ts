// CoAP over TLS (RFC 8323) with node:tls, both roles: the home router dials (client.ts), the ISP
// listens (server.ts); TLS 1.2 and 1.3, mutual certificates or PSK, ALPN "coap" required.

export * from "./connection";
export * from "./client";
export * from "./server";
