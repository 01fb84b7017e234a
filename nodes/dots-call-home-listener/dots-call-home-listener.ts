// ISP side (Call Home DOTS client): a thin user of a dots-isp-endpoint config node, which owns
// the listener (its socket and sessions survive deploys). Sends mitigation requests, withdrawals,
// status queries, efficacy updates and redirects over the session of the home a message names,
// and emits the endpoint's events. A v1 node (inline listener settings, no endpoint) gets an
// implicit endpoint built from those settings.
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from "node-red";
import type { RequestOutcome, SessionInfo, StatusNotification } from "../../src/dots/api";
import type { CallHomeListener } from "../../src/dots/isp-engine";
import { LISTENER_DROP_EVENT, type DropBanEvent } from "../../src/dots/auth-events";
import { readScopeStatuses } from "../../src/dots/isp-session";
import { checkConfigVersion, ErrorReporter, finishClose, statusFields, toError } from "../lib/common";
import type { EndpointHub, EndpointNode, EndpointStatus, EndpointUser } from "../lib/endpoint";
import { int, ispHub, type IspEndpointSettings } from "../lib/isp-endpoint";

/** v2: the listener settings live in a dots-isp-endpoint; v1 nodes carry them inline. */
const LISTENER_CONFIG_VERSION = 2;
/** How long a new ban stays in the node's status before the endpoint's status returns. */
const BAN_STATUS_MS = 15000;

interface ListenerDef extends NodeDef, Partial<IspEndpointSettings> {
  endpoint?: string;
  version: number;
}

type Action = "mitigate" | "withdraw" | "get" | "efficacy" | "redirect";
const ACTIONS: Action[] = ["mitigate", "withdraw", "get", "efficacy", "redirect"];

export = function (RED: NodeAPI): void {
  function DotsCallHomeListener(this: Node, config: ListenerDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    // Errors outside a message still reach Catch nodes through a synthetic msg, also those raised
    // before the flows have started.
    const reporter = new ErrorReporter(RED, node);
    const report = (e: unknown, msg: NodeMessage = {}): void => reporter.report(e, msg);
    checkConfigVersion(RED, node, config.version, LISTENER_CONFIG_VERSION);

    // The endpoint: the referenced config node, else (v1) an implicit one from the inline settings.
    let hub: EndpointHub<CallHomeListener> | undefined;
    let implicit = false;
    if (config.endpoint) {
      const ep = RED.nodes.getNode(config.endpoint) as EndpointNode<CallHomeListener> | null;
      if (ep && ep.hub) hub = ep.hub;
    } else if (config.port !== undefined || config.psk !== undefined || config.tlsConfig !== undefined) {
      implicit = true;
      const t = (key: string, args?: Record<string, unknown>): string => RED._(`dots-call-home-listener.${key}`, args as never);
      hub = ispHub(RED, node, node.id, node.id, config as IspEndpointSettings, t);
    }

    let banShown: NodeJS.Timeout | undefined;
    const showStatus = (s: EndpointStatus): void => {
      if (banShown) return;
      node.status({ fill: s.fill, shape: s.shape, text: RED._(`dots-call-home-listener.status.${s.key}`, s.args as never) });
    };
    const sessionEvent = (topic: string, payload: unknown, dots: Record<string, unknown> = {}): void => {
      node.send([{ topic, payload, dots: { side: "isp", ...dots } }, null]);
    };
    const user: EndpointUser = {
      onStatus: showStatus,
      onError: (err) => report(err),
      onEvent: (name, args) => {
        const e = hub?.engine;
        switch (name) {
          case "listening":
            sessionEvent("listening", args[0]);
            break;
          case "session-up": {
            const s = args[0] as SessionInfo;
            sessionEvent("session-up", s, { session: s.id, home: s.home });
            break;
          }
          case "session-down": {
            const s = args[0] as SessionInfo;
            sessionEvent("session-down", { ...s, reason: args[1] as string }, { session: s.id, home: s.home });
            break;
          }
          case "status": {
            const n = args[0] as StatusNotification;
            const home = e?.findSession(n.sessionId)?.home;
            node.send([
              null,
              {
                topic: "status",
                payload: n.body,
                dots: {
                  side: "isp",
                  session: n.sessionId,
                  ...(home !== undefined ? { home } : {}),
                  cuid: n.cuid,
                  mid: n.mid,
                  ...statusFields(n.status, n.conflictCause),
                },
              },
            ]);
            break;
          }
          case "resynced": {
            const r = args[0] as { sessionId: string; home?: string };
            sessionEvent("resynced", r, { session: r.sessionId, ...(r.home !== undefined ? { home: r.home } : {}) });
            break;
          }
          case LISTENER_DROP_EVENT: {
            const d = args[0] as DropBanEvent;
            sessionEvent(name, d, d.home !== undefined ? { home: d.home } : {});
            // the ban shows briefly, then the endpoint's own status again
            const until = new Date(d.until);
            const hhmm = Number.isNaN(until.getTime())
              ? d.until
              : `${String(until.getHours()).padStart(2, "0")}:${String(until.getMinutes()).padStart(2, "0")}`;
            if (banShown) clearTimeout(banShown);
            banShown = undefined;
            node.status({
              fill: "yellow",
              shape: "ring",
              text: RED._("dots-call-home-listener.status.banned", { address: d.remoteAddress, until: hhmm }),
            });
            banShown = setTimeout(() => {
              banShown = undefined;
              if (hub) showStatus(hub.status);
            }, BAN_STATUS_MS);
            banShown.unref?.();
            break;
          }
          default:
            sessionEvent(name, args[0]);
        }
      },
    };

    if (!hub) {
      node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-listener.status.no-endpoint") });
      report(
        new Error(
          RED._(config.endpoint ? "dots-call-home-listener.errors.endpoint-missing" : "dots-call-home-listener.errors.no-endpoint"),
        ),
      );
    } else if (hub.problem) {
      showStatus(hub.status);
      report(hub.problem);
    } else {
      hub.attach(user);
    }

    node.on("input", (msg: NodeMessageInFlow, send, done) => {
      const m = msg as NodeMessageInFlow & { dots?: Record<string, unknown> };
      const dots = m.dots ?? {};
      const run = async (): Promise<void> => {
        const engine = hub?.engine;
        if (!hub || !engine || !hub.started)
          throw new Error(hub?.problem ? hub.problem.message : RED._("dots-call-home-listener.errors.not-running"));
        await hub.started;
        const payload = m.payload as Record<string, unknown> | undefined;
        const action = String(
          dots.action ?? (typeof m.topic === "string" && (ACTIONS as string[]).includes(m.topic) ? m.topic : "mitigate"),
        ) as Action;
        if (!ACTIONS.includes(action)) throw new Error(RED._("dots-call-home-listener.errors.action", { action }));
        const session = String(dots.session ?? dots.home ?? "");
        if (!session) throw new Error(RED._("dots-call-home-listener.errors.no-session"));
        const mid = dots.mid === undefined ? undefined : int(dots.mid, "msg.dots.mid", 0, 0xffffffff);
        const needMid = (): number => {
          if (mid === undefined) throw new Error(RED._("dots-call-home-listener.errors.no-mid", { action }));
          return mid;
        };
        let outcome: RequestOutcome;
        switch (action) {
          case "mitigate":
            if (!payload || typeof payload !== "object") throw new Error(RED._("dots-call-home-listener.errors.no-request"));
            outcome = await engine.mitigate(session, payload, mid === undefined ? undefined : { mid });
            break;
          case "withdraw":
            outcome = await engine.withdraw(session, needMid());
            break;
          case "get":
            outcome = await engine.get(session, mid);
            break;
          case "efficacy": {
            const status = String(dots.attackStatus ?? (payload && payload["attack-status"]) ?? "");
            if (status !== "under-attack" && status !== "attack-successfully-mitigated")
              throw new Error(RED._("dots-call-home-listener.errors.attack-status"));
            outcome = await engine.efficacy(session, needMid(), status);
            break;
          }
          case "redirect": {
            const p = (payload ?? {}) as { altClient?: string; records?: string[]; ttl?: number };
            outcome = await engine.redirect(session, { altClient: String(p.altClient ?? ""), records: p.records, ttl: p.ttl });
            break;
          }
        }
        // The same msg goes on (msg.req/res of an HTTP trigger stay with it); a Catch node then sees
        // msg.dots.code and knows an answer was already sent.
        m.topic = action;
        m.payload = outcome.body;
        // The answer's status for this mid (or its only entry) as label and number, and the home's name.
        const answeredMid = outcome.mid ?? mid;
        const scopes = readScopeStatuses(outcome.body);
        const entry = scopes.find((x) => x.mid !== undefined && x.mid === answeredMid) ?? (scopes.length === 1 ? scopes[0] : undefined);
        const home = engine.findSession(outcome.sessionId)?.home;
        // a status carried in from an earlier message must not pass for this answer's
        const { status: _s, statusCode: _sc, conflictCause: _c, conflictCauseCode: _cc, ...carried } = dots;
        m.dots = {
          ...carried,
          side: "isp",
          action,
          session: outcome.sessionId,
          ...(home !== undefined ? { home } : {}),
          cuid: outcome.cuid,
          mid: answeredMid,
          code: outcome.code,
          ...statusFields(entry?.status, entry?.conflictCause),
        };
        send([null, m]);
        hub.refresh();
        if (!/^2\./.test(outcome.code)) {
          const text = typeof outcome.body === "string" ? outcome.body : JSON.stringify(outcome.body ?? "");
          throw new Error(RED._("dots-call-home-listener.errors.refused", { action, code: outcome.code, text }));
        }
      };
      run().then(
        () => done(),
        (e) => done(toError(e)),
      );
    });

    node.on("close", (removed: boolean, done: () => void) => {
      if (banShown) clearTimeout(banShown);
      banShown = undefined;
      hub?.detach(user);
      // A v1 node owns its implicit endpoint: kept for the next deploy unless the node is removed.
      finishClose(node, reporter, implicit && hub ? hub.close(removed) : Promise.resolve(), done);
    });
  }
  RED.nodes.registerType("dots-call-home-listener", DotsCallHomeListener as never);
};
