// The home endpoint: dialer settings (from a dots-home-endpoint config node, or inline in a v1
// dots-call-home-dialer) -> a CallHomeDialer held in the engine registry.
import type { Node, NodeAPI } from "node-red";
import type { TransportChoice } from "../../src/dots/api";
import { DEFAULTS, LIMITS } from "../../src/dots/defaults";
import { CallHomeDialer, type HomeEngineOptions } from "../../src/dots/home-engine";
import { certificateFrom, listOf, normalisePrefix, parseDnsServers, parseDomain, type TlsConfigNode } from "./common";
import { EndpointHub, pskOf, stateDirFor, type EndpointStatus, type HubKind, type Words } from "./endpoint";
import { int } from "./isp-endpoint";

/** The dialer's own settings, as the endpoint config node (and a v1 dialer node) stores them. */
export interface HomeEndpointSettings {
  hosts: string;
  discoverDomain?: string;
  dnsServers?: string;
  /** The DNS answers are DNSSEC-validated: the certificate may name the SRV target (RFC 6125). */
  discoverDnssec?: boolean;
  port: string | number;
  transport: string;
  psk: string;
  tlsConfig: string;
  homePrefixes: string;
  heartbeatInterval: string | number;
  decisionWait: string | number;
  allowIndefinite: boolean;
  /** Longest lifetime granted, seconds ("" = DEFAULTS.maxLifetimeS). */
  maxLifetime?: string | number;
  terminatingPeriod: string | number;
}

export const HOME_SETTING_NAMES: ReadonlyArray<keyof HomeEndpointSettings> = [
  "hosts",
  "discoverDomain",
  "dnsServers",
  "port",
  "transport",
  "psk",
  "tlsConfig",
  "homePrefixes",
  "heartbeatInterval",
  "decisionWait",
  "allowIndefinite",
  "terminatingPeriod",
  "maxLifetime",
  "discoverDnssec",
];

function dialerOptions(RED: NodeAPI, c: HomeEndpointSettings, t: Words, stateDir: string | undefined): HomeEngineOptions {
  const hosts = listOf(c.hosts);
  // RFC 8973: with a discovery domain the SRV records name the ISP; hosts become the fallback.
  const domain = parseDomain(t("label.discoverDomain"), c.discoverDomain);
  const dnsServers = parseDnsServers(t("label.dnsServers"), c.dnsServers);
  if (dnsServers.length > 0 && !domain) throw new Error(t("errors.dns-without-domain"));
  if (hosts.length === 0 && !domain) throw new Error(t("errors.no-hosts"));
  const transport = (c.transport || "auto") as TransportChoice;
  if (!["auto", "udp", "tcp"].includes(transport)) throw new Error(t("errors.transport", { transport }));
  const options: HomeEngineOptions = {
    hosts,
    port: int(c.port === "" || c.port === undefined ? DEFAULTS.port : c.port, "port", 1, 65535),
    transport,
    homePrefixes: listOf(c.homePrefixes).map(normalisePrefix),
    heartbeatInterval: int(c.heartbeatInterval ?? DEFAULTS.heartbeatIntervalS, "heartbeat interval", 15, 240),
    decisionWaitMs: int(c.decisionWait ?? DEFAULTS.decisionWaitMs, "decision wait", 0, 60000),
    allowIndefiniteLifetime: c.allowIndefinite === true,
    maxLifetime: int(
      c.maxLifetime === "" || c.maxLifetime === undefined ? DEFAULTS.maxLifetimeS : c.maxLifetime,
      "max lifetime",
      LIMITS.maxLifetimeS[0],
      LIMITS.maxLifetimeS[1],
    ),
    // RFC 9132 4.4.3: after a withdrawal the home may keep mitigating for a while (status 5).
    tuning: { terminatingPeriodMs: int(c.terminatingPeriod ?? DEFAULTS.terminatingPeriodMs / 1000, "terminating period", 0, 3600) * 1000 },
  };
  if (domain) options.discover = dnsServers.length > 0 ? { domain, dnsServers } : { domain };
  // RFC 6125: the ISP certificate names the domain, unless the user vouches for DNSSEC-validated answers.
  if (domain && c.discoverDnssec === true) options.discover = { ...options.discover, domain, dnssecValidated: true };
  if (options.homePrefixes.length === 0) throw new Error(t("errors.no-prefixes"));
  if (c.psk) {
    const { home: _home, ...psk } = pskOf(RED, c.psk, t);
    options.psk = psk;
  }
  if (c.tlsConfig) {
    const tn = RED.nodes.getNode(c.tlsConfig) as TlsConfigNode | null;
    if (!tn) throw new Error(t("errors.tls-missing"));
    options.certificate = certificateFrom(tn);
  }
  if (!options.psk && !options.certificate) throw new Error(t("errors.no-credentials"));
  if (stateDir) options.stateDir = stateDir;
  return options;
}

function connected(engine: CallHomeDialer, memo: Record<string, unknown>): EndpointStatus {
  const active = engine.mitigations().length;
  const w = String(memo.where ?? "");
  return active > 0
    ? { fill: "green", shape: "ring", key: "mitigating", args: { where: w, count: active } }
    : { fill: "green", shape: "dot", key: "connected", args: { where: w } };
}

const STATUS_REASON_MAX = 80;

/** "PSK_MISMATCH: the PSK key ... does not match (hint)", clipped to fit a node status. */
export function disconnectReason(info: Record<string, unknown>): string {
  const reason = String(info.reason ?? "");
  let text = typeof info.code === "string" && info.code && !reason.startsWith(info.code) ? `${info.code}: ${reason}` : reason;
  if (typeof info.hint === "string" && info.hint) text += ` (${info.hint})`;
  return text.length > STATUS_REASON_MAX ? `${text.slice(0, STATUS_REASON_MAX - 3)}...` : text;
}

export const HOME_KIND: HubKind<CallHomeDialer> = {
  kind: "home",
  events: ["discovered", "connecting", "connected", "disconnected", "redirected", "mitigation", "ended", "error"],
  statusAfter(event, args, engine, memo) {
    const info = args[0] as Record<string, unknown>;
    switch (event) {
      case "discovered":
        memo.last = {
          fill: "yellow",
          shape: "ring",
          key: "discovered",
          args: { domain: info.domain, count: (info.candidates as unknown[]).length },
        };
        return memo.last as EndpointStatus;
      case "connecting":
        memo.last = {
          fill: "yellow",
          shape: "ring",
          key: "connecting",
          args: { where: `${String(info.host)}:${String(info.port)} ${String(info.transport)}` },
        };
        return memo.last as EndpointStatus;
      case "connected":
        memo.where = `${String(info.transport).toUpperCase()} ${String(info.remoteAddress)}:${String(info.remotePort)}`;
        memo.last = undefined;
        return connected(engine, memo);
      case "disconnected":
        memo.last = { fill: "red", shape: "ring", key: "disconnected", args: { reason: disconnectReason(info) } };
        return memo.last as EndpointStatus;
      case "mitigation":
      case "ended":
        return engine.connected ? connected(engine, memo) : undefined;
    }
    return undefined;
  },
  statusNow(engine, memo) {
    if (engine.connected && memo.where) return connected(engine, memo);
    return (memo.last as EndpointStatus | undefined) ?? { fill: "yellow", shape: "ring", key: "starting" };
  },
};

/** The hub of a home endpoint (key: the config node's id, or a v1 dialer's own id). */
export function homeHub(
  RED: NodeAPI,
  owner: Node,
  key: string,
  stateKey: string,
  settings: HomeEndpointSettings,
  t: Words,
): EndpointHub<CallHomeDialer> {
  return new EndpointHub<CallHomeDialer>(RED, owner, HOME_KIND, {
    key,
    settings: () => {
      const options = dialerOptions(RED, settings, t, stateDirFor(RED, stateKey));
      return { fingerprint: { options }, create: () => new CallHomeDialer(options) };
    },
  });
}
