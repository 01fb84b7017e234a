// ISP side (Call Home DOTS client): listens for homes dialling in over DTLS and/or TLS and sends
// mitigation requests, withdrawals, status queries, efficacy updates and redirects over the
// session of the home a message names. A thin adapter over src/dots/isp-engine.ts.
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from "node-red";
import type { ListenerOptions, RequestOutcome, SessionInfo, StatusNotification } from "../../src/dots/api";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { readScopeStatuses } from "../../src/dots/isp-session";
import { certificateFrom, checkConfigVersion, ErrorReporter, finishClose, parseHomePrefixes, statusFields, stopAndDetach, toError, type TlsConfigNode } from "../lib/common";
import type { DotsPskNode } from "../lib/types";

interface ListenerDef extends NodeDef {
  port: string | number;
  host: string;
  dtls: boolean;
  tls: boolean;
  psk: string;
  extraPsks: string[];
  tlsConfig: string;
  homePrefixes: string;
  allowUnscoped: boolean;
  dropMaxFailures: string | number;
  dropWindow: string | number;
  dropBan: string | number;
  version: number;
}

type Action = "mitigate" | "withdraw" | "get" | "efficacy" | "redirect";
const ACTIONS: Action[] = ["mitigate", "withdraw", "get", "efficacy", "redirect"];

function int(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === "number" ? value : Number(String(value ?? "").trim());
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be a whole number in ${min}..${max}, got "${String(value)}"`);
  return n;
}

export = function (RED: NodeAPI): void {
  function DotsCallHomeListener(this: Node, config: ListenerDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    let engine: CallHomeListener | undefined;
    let started: Promise<void> | undefined;
    let listeningText = "";

    const showStatus = (): void => {
      if (!engine) return;
      const n = engine.sessions().length;
      node.status({ fill: n > 0 ? "green" : "grey", shape: "dot", text: RED._("dots-call-home-listener.status.listening", { where: listeningText, count: n }) });
    };
    // Errors outside a message still reach Catch nodes through a synthetic msg, also those raised
    // before the flows have started.
    const reporter = new ErrorReporter(RED, node);
    const report = (e: unknown, msg: NodeMessage = {}): void => reporter.report(e, msg);
    checkConfigVersion(RED, node, config.version);

    try {
      const options: ListenerOptions = {
        port: int(config.port === "" || config.port === undefined ? 4647 : config.port, "port", 0, 65535),
        host: (config.host || "").trim() || "::",
        transports: { dtls: config.dtls !== false, tls: config.tls === true },
        homePrefixes: parseHomePrefixes(config.homePrefixes),
        dropList: {
          maxFailures: int(config.dropMaxFailures ?? 5, "drop-list failures", 1, 1000),
          windowMs: int(config.dropWindow ?? 60, "drop-list window", 1, 86400) * 1000,
          banMs: int(config.dropBan ?? 300, "drop-list ban", 1, 604800) * 1000,
        },
      };
      const psks: NonNullable<ListenerOptions["psk"]> = [];
      for (const id of [config.psk, ...(Array.isArray(config.extraPsks) ? config.extraPsks : [])].filter((x) => x)) {
        const p = RED.nodes.getNode(id) as DotsPskNode | null;
        if (!p || typeof p.credential !== "function") throw new Error(RED._("dots-call-home-listener.errors.psk-missing", { id }));
        psks.push({ ...p.credential(), home: p.home });
      }
      if (psks.length) options.psk = psks;
      if (config.tlsConfig) {
        const t = RED.nodes.getNode(config.tlsConfig) as TlsConfigNode | null;
        if (!t) throw new Error(RED._("dots-call-home-listener.errors.tls-missing"));
        options.certificate = certificateFrom(t);
      }
      if (!options.psk && !options.certificate) throw new Error(RED._("dots-call-home-listener.errors.no-credentials"));
      if (!options.transports.dtls && !options.transports.tls) throw new Error(RED._("dots-call-home-listener.errors.no-transport"));
      engine = new CallHomeListener(options, { allowUnscopedHomes: config.allowUnscoped === true });
    } catch (e) {
      node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-listener.status.config") });
      report(e);
    }

    const sessionEvent = (topic: string, payload: unknown, dots: Record<string, unknown> = {}): void => {
      node.send([{ topic, payload, dots: { side: "isp", ...dots } }, null]);
    };

    if (engine) {
      const e = engine;
      e.on("listening", (info: { port: number; host: string; transports: string[] }) => {
        listeningText = `${info.host.includes(":") ? `[${info.host}]` : info.host}:${info.port} ${info.transports.join("+")}`;
        showStatus();
        sessionEvent("listening", info);
      });
      e.on("session-up", (s: SessionInfo) => {
        showStatus();
        sessionEvent("session-up", s, { session: s.id, home: s.home });
      });
      e.on("session-down", (s: SessionInfo, reason: string) => {
        showStatus();
        sessionEvent("session-down", { ...s, reason }, { session: s.id, home: s.home });
      });
      e.on("status", (n: StatusNotification) => {
        const home = e.findSession(n.sessionId)?.home;
        node.send([null, { topic: "status", payload: n.body, dots: { side: "isp", session: n.sessionId, ...(home !== undefined ? { home } : {}), cuid: n.cuid, mid: n.mid, ...statusFields(n.status, n.conflictCause) } }]);
      });
      e.on("auth-failure", (info: unknown) => sessionEvent("auth-failure", info));
      e.on("drop", (info: unknown) => sessionEvent("drop", info));
      e.on("cuid-changed", (info: unknown) => sessionEvent("cuid-changed", info));
      e.on("error", (err: Error) => report(err));
      node.status({ fill: "yellow", shape: "ring", text: RED._("dots-call-home-listener.status.starting") });
      started = e.start().catch((err) => {
        node.status({ fill: "red", shape: "ring", text: RED._("dots-call-home-listener.status.bind-failed", { reason: toError(err).message }) });
        report(err);
        throw err;
      });
      started.catch(() => undefined);
    }

    node.on("input", (msg: NodeMessageInFlow, send, done) => {
      const m = msg as NodeMessageInFlow & { dots?: Record<string, unknown> };
      const dots = m.dots ?? {};
      const run = async (): Promise<void> => {
        if (!engine || !started) throw new Error(RED._("dots-call-home-listener.errors.not-running"));
        await started;
        const payload = m.payload as Record<string, unknown> | undefined;
        const action = String(dots.action ?? (typeof m.topic === "string" && (ACTIONS as string[]).includes(m.topic) ? m.topic : "mitigate")) as Action;
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
            if (status !== "under-attack" && status !== "attack-successfully-mitigated") throw new Error(RED._("dots-call-home-listener.errors.attack-status"));
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
        showStatus();
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

    node.on("close", (_removed: boolean, done: () => void) => {
      const e = engine;
      engine = undefined;
      finishClose(node, reporter, stopAndDetach(e, (x) => x.stop()), done);
    });
  }
  RED.nodes.registerType("dots-call-home-listener", DotsCallHomeListener as never);
};
