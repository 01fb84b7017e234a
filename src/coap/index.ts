// The CoAP layer's public surface.
export * from "./message";
export * from "./errors";
export * from "./options";
export * from "./udp-codec";
export * from "./tcp-codec";
export * from "./signalling";
export * from "./endpoint";
