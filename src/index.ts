// Public API of the package (package.json "main"). Everything here works without Node-RED.
// The most used names are exported flat; each layer is also available whole as a namespace.
export * from "./dots";
export { encodeDotsCbor, decodeDotsCbor, DotsCborError } from "./cbor";
export { createHomeEnforcer } from "./home";
export type { Connection, PeerIdentity, LocalIdentity, TransportKind } from "./transport/connection";
export { TransportError } from "./transport/connection";
export * as cbor from "./cbor";
export * as coap from "./coap";
export * as transport from "./transport";
export * as home from "./home";
