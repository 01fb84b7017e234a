// Public API of the package (package.json "main"). Everything here works without Node-RED.
export * from "./transport/connection";
export * from "./coap/message";
