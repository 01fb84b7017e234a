// Home side (RFC 9066 sections 5.3.1 and 5.3.2): NAT lookup over conntrack and enforcement with
// nftables. Typical wiring (CLI or Node-RED):
//
//   const runner = netnsRunner("router");              // or new CommandRunner() on the router itself
//   const enforcer = createHomeEnforcer({
//     nat: new ConntrackEventSource(runner),           // or createNatSource(parseNatSpec("static:nat.json"))
//     runner, backend: "nftables", action: "block",
//     consent: { mode: "manual", timeoutMs: 300_000, onTimeout: "reject" },
//   });
//   await enforcer.reconcile(dialer.mitigations());    // after a restart
//   const unwire = wireDialer(dialer, enforcer);       // mitigation -> handle -> decide; ended -> end
//   enforcer.on("consent-request", notifyAdmin);       // then enforcer.approve(mid) / reject(mid)
//
// createHomeEnforcerFromFlags() builds the same from the CLI's --nat/--enforce/--action/--consent.
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
