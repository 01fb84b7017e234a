// Home side (Call Home DOTS server): dials the ISP, keeps the session alive, and turns the ISP's
// mitigation requests into messages; decisions (the filter action's outcome) come back on the
// input. A thin adapter over src/dots/home-engine.ts.
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from "node-red";
import type { Decision, DecisionOutcome, MitigationEnded, MitigationEvent, TransportChoice } from "../../src/dots/api";
import { CallHomeDialer, type HomeEngineOptions } from "../../src/dots/home-engine";
import { certificateFrom, checkConfigVersion, ErrorReporter, finishClose, listOf, normalisePrefix, parseDnsServers, parseDomain, stopAndDetach, toError, type TlsConfigNode } from "../lib/common";
import type { DotsPskNode } from "../lib/types";

interface DialerDef extends NodeDef {
  hosts: string;
  discoverDomain?: string;
  dnsServers?: string;
  port: string | number;
  transport: string;
  psk: string;
  tlsConfig: string;
  homePrefixes: string;
  heartbeatInterval: string | number;
  decisionWait: string | number;
  allowIndefinite: boolean;
  terminatingPeriod: string | number;
  version: number;
}

const OUTCOMES: DecisionOutcome[] = ["enforced", "pending", "legitimate", "failed"];

function int(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === "number" ? value : Number(String(value ?? "").trim());
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be a whole number in ${min}..${max}, got "${String(value)}"`);
  return n;
}

export = function (RED: NodeAPI): void {
  function DotsCallHomeDialer(this: Node, config: DialerDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    let engine: CallHomeDialer | undefined;
    let connectedText = "";
    // Errors outside a message reach Catch nodes through a synthetic msg, also early ones.
    const reporter = new ErrorReporter(RED, node);
    const report = (e: unknown, msg: NodeMessage = {}): void => reporter.report(e, msg);
    checkConfigVersion(RED, node, config.version);

    const showConnected = (): void => {
      if (!engine) return;
      const active = engine.mitigations().length;
      node.status({
        fill: "green",
        shape: active > 0 ? "ring" : "dot",
        text: active > 0 ? RED._("dots-call-home-dialer.status.mitigating", { where: connectedText, count: active }) : RED._("dots-call-home-dialer.status.connected", { where: connectedText }),
      });
    };

    try {
      const hosts = listOf(config.hosts);
      // RFC 8973: with a discovery domain the SRV records name the ISP; hosts become the fallback.
      const domain = parseDomain(RED._("dots-call-home-dialer.label.discoverDomain"), config.discoverDomain);
      const dnsServers = parseDnsServers(RED._("dots-call-home-dialer.label.dnsServers"), config.dnsServers);
      if (dnsServers.length > 0 && !domain) throw new Error(RED._("dots-call-home-dialer.errors.dns-without-domain"));
      if (hosts.length === 0 && !domain) throw new Error(RED._("dots-call-home-dialer.errors.no-hosts"));
      const transport = (config.transport || "auto") as TransportChoice;
      if (!["auto", "udp", "tcp"].includes(transport)) throw new Error(RED._("dots-call-home-dialer.errors.transport", { transport }));
      const options: HomeEngineOptions = {
        hosts,
        port: int(config.port === "" || config.port === undefined ? 4647 : config.port, "port", 1, 65535),
        transport,
        homePrefixes: listOf(config.homePrefixes).map(normalisePrefix),
        heartbeatInterval: int(config.heartbeatInterval ?? 30, "heartbeat interval", 15, 240),
        decisionWaitMs: int(config.decisionWait ?? 1000, "decision wait", 0, 60000),
        allowIndefiniteLifetime: config.allowIndefinite === true,
        // RFC 9132 4.4.3: after a withdrawal the home may keep mitigating for a while (status 5).
        tuning: { terminatingPeriodMs: int(config.terminatingPeriod ?? 120, "terminating period", 0, 3600) * 1000 },
      };
      if (domain) options.discover = dnsServers.length > 0 ? { domain, dnsServers } : { domain };
      if (options.homePrefixes.length === 0) throw new Error(RED._("dots-call-home-dialer.errors.no-prefixes"));
      if (config.psk) {
        const p = RED.nodes.getNode(config.psk) as DotsPskNode | null;
        if (!p || typeof p.credential !== "function") throw new Error(RED._("dots-call-home-dialer.errors.psk-missing"));
        options.psk = p.credential();
      }
      if (config.tlsConfig) {
        const t = RED.nodes.getNode(config.tlsConfig) as TlsConfigNode | null;
        if (!t) throw new Error(RED._("dots-call-home-dialer.errors.tls-missing"));
        options.certificate = certificateFrom(t);
      }
      if (!options.psk && !options.certificate) throw new Error(RED._("dots-call-home-dialer.errors.no-credentials"));
      engine = new CallHomeDialer(options);
    } catch (e) {
      node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-dialer.status.config") });
      report(e);
    }

    if (engine) {
      const e = engine;
      const event = (topic: string, payload: unknown): void => node.send([null, null, { topic, payload, dots: { side: "home" } }]);
      e.on("discovered", (info: { domain: string; candidates: Array<{ host: string; address: string; port: number; transport: string }> }) => {
        node.status({ fill: "yellow", shape: "ring", text: RED._("dots-call-home-dialer.status.discovered", { domain: info.domain, count: info.candidates.length }) });
        event("discovered", info);
      });
      e.on("connecting", (info: { host: string; port: number; transport: string }) => {
        node.status({ fill: "yellow", shape: "ring", text: RED._("dots-call-home-dialer.status.connecting", { where: `${info.host}:${info.port} ${info.transport}` }) });
        event("connecting", info);
      });
      e.on("connected", (info: { remoteAddress: string; remotePort: number; transport: string; cipher: string }) => {
        connectedText = `${info.transport.toUpperCase()} ${info.remoteAddress}:${info.remotePort}`;
        showConnected();
        event("connected", info);
      });
      e.on("disconnected", (info: { reason: string; retryInMs?: number }) => {
        node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-dialer.status.disconnected", { reason: info.reason.slice(0, 60) }) });
        event("disconnected", info);
      });
      e.on("redirected", (info: unknown) => event("redirected", info));
      e.on("mitigation", (m: MitigationEvent) => {
        node.send([
          {
            topic: "mitigation",
            payload: { "ietf-dots-signal-channel:mitigation-scope": { scope: [{ ...m.scope, mid: m.mid, lifetime: m.lifetime }] } },
            dots: { side: "home", cuid: m.cuid, mid: m.mid, kind: m.kind, lifetime: m.lifetime },
          },
          null,
          null,
        ]);
        showConnected();
      });
      e.on("ended", (m: MitigationEnded) => {
        node.send([
          null,
          {
            topic: "ended",
            payload: { "ietf-dots-signal-channel:mitigation-scope": { scope: [{ ...m.scope, mid: m.mid }] } },
            dots: { side: "home", cuid: m.cuid, mid: m.mid, reason: m.reason, action: "end" },
          },
          null,
        ]);
        showConnected();
      });
      e.on("error", (err: Error) => report(err));
      node.status({ fill: "yellow", shape: "ring", text: RED._("dots-call-home-dialer.status.starting") });
      e.start().catch((err) => {
        node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-dialer.status.config") });
        report(err);
      });
    }

    // Input: a decision for a mitigation, as the filter action reports it.
    node.on("input", (msg: NodeMessageInFlow, _send, done) => {
      try {
        if (!engine) throw new Error(RED._("dots-call-home-dialer.errors.not-running"));
        const m = msg as NodeMessageInFlow & { dots?: Record<string, unknown> };
        const p = (m.payload && typeof m.payload === "object" ? m.payload : {}) as Record<string, unknown>;
        const outcome = String(p.outcome ?? "") as DecisionOutcome;
        if (!OUTCOMES.includes(outcome)) throw new Error(RED._("dots-call-home-dialer.errors.outcome", { outcome }));
        const midRaw = m.dots?.mid ?? p.mid;
        if (midRaw === undefined) throw new Error(RED._("dots-call-home-dialer.errors.no-mid"));
        const decision: Decision = { mid: int(midRaw, "msg.dots.mid", 0, 0xffffffff), outcome };
        const cuid = m.dots?.cuid ?? p.cuid;
        if (typeof cuid === "string") decision.cuid = cuid;
        if (typeof p.detail === "string") decision.detail = p.detail;
        engine.decide(decision);
        showConnected();
        done();
      } catch (e) {
        done(toError(e));
      }
    });

    node.on("close", (_removed: boolean, done: () => void) => {
      const e = engine;
      engine = undefined;
      finishClose(node, reporter, stopAndDetach(e, (x) => x.stop()), done);
    });
  }
  RED.nodes.registerType("dots-call-home-dialer", DotsCallHomeDialer as never);
};
