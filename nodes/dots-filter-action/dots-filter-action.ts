// Enforces a mitigation on the home router: blocks the device(s) the NAT lookup found from the
// attack target (or quarantines them), optionally after the administrator's consent, removes the
// filter on withdrawal/expiry, and reports the outcome for the dialer. Over src/home's enforcer.
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from "node-red";
import { MITIGATION_SCOPE_KEY } from "../../src/dots/vocabulary";
import { createHomeEnforcer, type HandleResult, type HomeEnforcer } from "../../src/home/enforcer";
import type { ConsentPolicy } from "../../src/home/consent";
import { NatLookup, type Device } from "../../src/home/nat-lookup";
import type { NatSource } from "../../src/home/nat-source";
import type { ConntrackFlow } from "../../src/home/conntrack-parse";
import { CommandRunner, netnsRunner } from "../../src/home/runner";
import { liveView } from "../lib/live-view";
import { checkConfigVersion, ErrorReporter, finishClose, stopAndDetach, toError } from "../lib/common";

interface FilterDef extends NodeDef {
  backend: string; // nftables | dry-run
  action: string; // block | quarantine
  consent: string; // auto | manual
  consentTimeout: string | number; // seconds
  onTimeout: string; // reject | approve
  table: string;
  netns: string;
  version: number;
}

type Msg = NodeMessageInFlow & { dots?: Record<string, unknown>; nat?: { found?: boolean; devices?: Device[] } };

/**
 * The enforcer asks a NAT source for flows; here the flows come from the NAT lookup node's result
 * in the message. handle() reads the source synchronously before its first await, so one slot
 * holding "the flows of the message being handled" is enough.
 */
class MessageNatSource implements NatSource {
  readonly kind = "message";
  current: ConntrackFlow[] = [];
  macs = new Map<string, string>();
  async start(): Promise<void> {}
  lookup(): Promise<ConntrackFlow[]> {
    return Promise.resolve(this.current);
  }
  macFor(address: string): string | undefined {
    return this.macs.get(address);
  }
  async close(): Promise<void> {}
}

function int(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === "number" ? value : Number(String(value ?? "").trim());
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name} must be a whole number in ${min}..${max}, got "${String(value)}"`);
  return n;
}

export = function (RED: NodeAPI): void {
  function DotsFilterAction(this: Node, config: FilterDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    const source = new MessageNatSource();
    let enforcer: HomeEnforcer | undefined;
    let unview = (): void => undefined;
    // Errors outside a message reach Catch nodes through a synthetic msg, also early ones.
    const reporter = new ErrorReporter(RED, node);
    const report = (e: unknown, msg: NodeMessage = {}): void => reporter.report(e, msg);
    checkConfigVersion(RED, node, config.version);

    const decisionMsg = (r: HandleResult, base?: Msg): NodeMessage => ({
      ...(base ?? {}),
      topic: "decision",
      payload: {
        outcome: r.outcome,
        detail: r.detail,
        cuid: r.cuid,
        mid: r.mid,
        action: r.action,
        devices: r.devices.map((d) => ({ address: d.address, mac: d.mac, ports: d.ports, protocols: d.protocols })),
        script: r.script,
        reason: r.reason,
        lifetime: r.lifetime,
      },
      dots: { ...((base?.dots as Record<string, unknown>) ?? {}), side: "home", cuid: r.cuid, mid: r.mid },
    });

    const showStatus = (last?: HandleResult): void => {
      if (!enforcer) return;
      const active = enforcer.activeMitigations().length;
      const pending = enforcer.pending().length;
      const mode = config.backend === "nftables" ? "nft" : "dry-run";
      if (last && last.outcome === "failed") {
        node.status({
          fill: "red",
          shape: "ring",
          text: RED._("dots-filter-action.status.failed", { mid: last.mid, reason: last.reason ?? "" }),
        });
      } else if (pending > 0) {
        node.status({ fill: "yellow", shape: "ring", text: RED._("dots-filter-action.status.pending", { count: pending, active, mode }) });
      } else {
        node.status({
          fill: active > 0 ? "green" : "grey",
          shape: active > 0 ? "dot" : "ring",
          text: RED._("dots-filter-action.status.active", { count: active, mode }),
        });
      }
    };

    try {
      const netns = (config.netns || "").trim();
      if (netns && !/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new Error(RED._("dots-filter-action.errors.netns"));
      const runner = netns ? netnsRunner(netns) : new CommandRunner();
      const backend = config.backend === "nftables" ? "nftables" : config.backend === "dry-run" || !config.backend ? "dry-run" : undefined;
      if (!backend) throw new Error(RED._("dots-filter-action.errors.backend", { backend: config.backend }));
      const action = config.action === "quarantine" ? "quarantine" : config.action === "block" || !config.action ? "block" : undefined;
      if (!action) throw new Error(RED._("dots-filter-action.errors.action", { action: config.action }));
      const consent: ConsentPolicy =
        config.consent === "manual"
          ? {
              mode: "manual",
              timeoutMs: int(config.consentTimeout ?? 300, "consent timeout", 1, 86400) * 1000,
              onTimeout: config.onTimeout === "approve" ? "approve" : "reject",
            }
          : { mode: "auto" };
      const table = (config.table || "").trim() || undefined;
      enforcer = createHomeEnforcer({ nat: new NatLookup({ source, localAddresses: [] }), backend, action, consent, runner, table });
    } catch (e) {
      node.status({ fill: "red", shape: "ring", text: RED._("dots-filter-action.status.config") });
      report(e);
    }

    if (enforcer) {
      const e = enforcer;
      // A decision after consent (approve, reject or timeout) goes to the dialer like any other.
      e.on("decision", (r: HandleResult) => {
        node.send([decisionMsg(r), null]);
        showStatus(r);
      });
      e.on("consent-request", (c) => {
        node.send([null, { topic: "consent-request", payload: c, dots: { side: "home", cuid: c.cuid, mid: c.mid } }]);
        showStatus();
      });
      e.on("enforcement", (c) => {
        node.send([null, { topic: "enforcement", payload: c, dots: { side: "home", cuid: c.cuid, mid: c.mid } }]);
        showStatus();
      });
      e.on("error", (err: Error) => report(err));
      unview = liveView.addFilter(node, e);
      showStatus();
    }

    node.on("input", (msg: NodeMessageInFlow, send, done) => {
      const m = msg as Msg;
      const run = async (): Promise<void> => {
        if (!enforcer) throw new Error(RED._("dots-filter-action.errors.not-running"));
        const dots = m.dots ?? {};
        const command = String(dots.action ?? m.topic ?? "");
        const midOf = (): number => int(dots.mid ?? (m.payload as Record<string, unknown> | undefined)?.mid, "msg.dots.mid", 0, 0xffffffff);
        const cuid = typeof dots.cuid === "string" ? dots.cuid : undefined;
        if (command === "approve" || command === "reject") {
          const mid = midOf();
          const ok = command === "approve" ? enforcer.approve(mid, cuid) : enforcer.reject(mid, cuid);
          if (!ok) throw new Error(RED._("dots-filter-action.errors.not-pending", { mid }));
          return; // the decision event sends the outcome
        }
        if (command === "end" || command === "ended" || dots.reason !== undefined) {
          if (!cuid) throw new Error(RED._("dots-filter-action.errors.no-cuid"));
          const mid = midOf();
          const r = await enforcer.end({ cuid, mid });
          send([null, { ...m, topic: "ended", payload: { cuid, mid, removed: r.removed, script: r.script, reason: dots.reason } }]);
          showStatus();
          return;
        }
        // A mitigation from the dialer, after the NAT lookup node.
        if (!cuid) throw new Error(RED._("dots-filter-action.errors.no-cuid"));
        const mid = midOf();
        if (!m.nat || !Array.isArray(m.nat.devices)) throw new Error(RED._("dots-filter-action.errors.no-nat"));
        const scope = m.payload;
        const entry = (scope as Record<string, { scope?: Array<Record<string, unknown>> }> | undefined)?.[MITIGATION_SCOPE_KEY]?.scope?.[0];
        const lifetime = int(
          dots.lifetime ?? entry?.lifetime ?? (scope as Record<string, unknown>)?.lifetime ?? 3600,
          "lifetime",
          -1,
          0xffffffff,
        );
        const kind = dots.kind === "refresh" || dots.kind === "efficacy" ? dots.kind : "new";
        source.current = m.nat.devices.flatMap((d) => (Array.isArray(d.flows) ? d.flows : []));
        source.macs = new Map(m.nat.devices.filter((d) => d.mac).map((d) => [d.address, d.mac as string]));
        let pendingResult: Promise<HandleResult>;
        try {
          pendingResult = enforcer.handle({ cuid, mid, scope, lifetime, kind });
        } finally {
          source.current = [];
        }
        const r = await pendingResult;
        send([decisionMsg(r, m), null]);
        showStatus(r);
      };
      run().then(
        () => done(),
        (e) => done(toError(e)),
      );
    });

    node.on("close", (_removed: boolean, done: () => void) => {
      const e = enforcer;
      enforcer = undefined;
      unview();
      finishClose(
        node,
        reporter,
        stopAndDetach(e, (x) => x.close()),
        done,
      );
    });
  }
  RED.nodes.registerType("dots-filter-action", DotsFilterAction as never);
};
