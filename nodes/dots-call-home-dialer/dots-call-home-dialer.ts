// Home side (Call Home DOTS server): a thin user of a dots-home-endpoint config node, which owns
// the dialer (its session survives deploys). Turns the ISP's mitigation requests into messages;
// decisions (the filter action's outcome) come back on the input. A v1 node (inline dialer
// settings, no endpoint) gets an implicit endpoint built from those settings.
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from "node-red";
import type { Decision, DecisionOutcome, MitigationEnded, MitigationEvent } from "../../src/dots/api";
import type { CallHomeDialer } from "../../src/dots/home-engine";
import { MITIGATION_SCOPE_KEY, isDecisionOutcome } from "../../src/dots/vocabulary";
import { checkConfigVersion, ErrorReporter, finishClose, toError } from "../lib/common";
import type { EndpointHub, EndpointNode, EndpointStatus, EndpointUser } from "../lib/endpoint";
import { homeHub, type HomeEndpointSettings } from "../lib/home-endpoint";
import { int } from "../lib/isp-endpoint";

/** v2: the dialer settings live in a dots-home-endpoint; v1 nodes carry them inline. */
const DIALER_CONFIG_VERSION = 2;

interface DialerDef extends NodeDef, Partial<HomeEndpointSettings> {
  endpoint?: string;
  version: number;
}

export = function (RED: NodeAPI): void {
  function DotsCallHomeDialer(this: Node, config: DialerDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    // Errors outside a message reach Catch nodes through a synthetic msg, also early ones.
    const reporter = new ErrorReporter(RED, node);
    const report = (e: unknown, msg: NodeMessage = {}): void => reporter.report(e, msg);
    checkConfigVersion(RED, node, config.version, DIALER_CONFIG_VERSION);

    // The endpoint: the referenced config node, else (v1) an implicit one from the inline settings.
    let hub: EndpointHub<CallHomeDialer> | undefined;
    let implicit = false;
    if (config.endpoint) {
      const ep = RED.nodes.getNode(config.endpoint) as EndpointNode<CallHomeDialer> | null;
      if (ep && ep.hub) hub = ep.hub;
    } else if (
      config.hosts !== undefined ||
      config.psk !== undefined ||
      config.tlsConfig !== undefined ||
      config.discoverDomain !== undefined
    ) {
      implicit = true;
      const t = (key: string, args?: Record<string, unknown>): string => RED._(`dots-call-home-dialer.${key}`, args as never);
      hub = homeHub(RED, node, node.id, node.id, config as HomeEndpointSettings, t);
    }

    const showStatus = (s: EndpointStatus): void => {
      node.status({ fill: s.fill, shape: s.shape, text: RED._(`dots-call-home-dialer.status.${s.key}`, s.args as never) });
    };
    const user: EndpointUser = {
      onStatus: showStatus,
      onError: (err) => report(err),
      onEvent: (name, args) => {
        if (name === "mitigation") {
          const m = args[0] as MitigationEvent;
          node.send([
            {
              topic: "mitigation",
              payload: { [MITIGATION_SCOPE_KEY]: { scope: [{ ...m.scope, mid: m.mid, lifetime: m.lifetime }] } },
              dots: { side: "home", cuid: m.cuid, mid: m.mid, kind: m.kind, lifetime: m.lifetime },
            },
            null,
            null,
          ]);
        } else if (name === "ended") {
          const m = args[0] as MitigationEnded;
          node.send([
            null,
            {
              topic: "ended",
              payload: { [MITIGATION_SCOPE_KEY]: { scope: [{ ...m.scope, mid: m.mid }] } },
              dots: { side: "home", cuid: m.cuid, mid: m.mid, reason: m.reason, action: "end" },
            },
            null,
          ]);
        } else {
          node.send([null, null, { topic: name, payload: args[0], dots: { side: "home" } }]);
        }
      },
    };

    if (!hub) {
      node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-dialer.status.no-endpoint") });
      report(
        new Error(RED._(config.endpoint ? "dots-call-home-dialer.errors.endpoint-missing" : "dots-call-home-dialer.errors.no-endpoint")),
      );
    } else if (hub.problem) {
      showStatus(hub.status);
      report(hub.problem);
    } else {
      hub.attach(user);
    }

    // Input: a decision for a mitigation, as the filter action reports it.
    node.on("input", (msg: NodeMessageInFlow, _send, done) => {
      try {
        const engine = hub?.engine;
        if (!hub || !engine) throw new Error(hub?.problem ? hub.problem.message : RED._("dots-call-home-dialer.errors.not-running"));
        const m = msg as NodeMessageInFlow & { dots?: Record<string, unknown> };
        const p = (m.payload && typeof m.payload === "object" ? m.payload : {}) as Record<string, unknown>;
        const outcome = String(p.outcome ?? "") as DecisionOutcome;
        if (!isDecisionOutcome(outcome)) throw new Error(RED._("dots-call-home-dialer.errors.outcome", { outcome }));
        const midRaw = m.dots?.mid ?? p.mid;
        if (midRaw === undefined) throw new Error(RED._("dots-call-home-dialer.errors.no-mid"));
        const decision: Decision = { mid: int(midRaw, "msg.dots.mid", 0, 0xffffffff), outcome };
        const cuid = m.dots?.cuid ?? p.cuid;
        if (typeof cuid === "string") decision.cuid = cuid;
        if (typeof p.detail === "string") decision.detail = p.detail;
        engine.decide(decision);
        hub.refresh();
        done();
      } catch (e) {
        done(toError(e));
      }
    });

    node.on("close", (removed: boolean, done: () => void) => {
      hub?.detach(user);
      // A v1 node owns its implicit endpoint: kept for the next deploy unless the node is removed.
      finishClose(node, reporter, implicit && hub ? hub.close(removed) : Promise.resolve(), done);
    });
  }
  RED.nodes.registerType("dots-call-home-dialer", DotsCallHomeDialer as never);
};
