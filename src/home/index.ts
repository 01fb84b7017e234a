// Home side (RFC 9066 sections 5.3.1 and 5.3.2): NAT lookup over conntrack and enforcement with
// nftables. Entry point for the Node-RED nodes and the CLI: createHomeEnforcer.
export * from "./errors";
export * from "./address";
export * from "./runner";
export * from "./conntrack-parse";
export * from "./scope";
export * from "./flow-index";
export * from "./neighbours";
export * from "./nat-source";
export * from "./nat-lookup";
export * from "./nft-script";
export * from "./filter-backend";
export * from "./consent";
export * from "./enforcer";
export * from "./wiring";
