// The ISP endpoint: listener settings (from a dots-isp-endpoint config node, or inline in a v1
// dots-call-home-listener) -> a CallHomeListener held in the engine registry.
import type { Node, NodeAPI } from "node-red";
import type { ListenerOptions, SessionInfo } from "../../src/dots/api";
import { LISTENER_AUTH_FAILURE_EVENT, LISTENER_DROP_END_EVENT, LISTENER_DROP_EVENT } from "../../src/dots/auth-events";
import { LISTENER_IDENTITY_CONFLICT_EVENT } from "../../src/dots/home-names";
import { DEFAULTS, LIMITS } from "../../src/dots/defaults";
import { CallHomeListener, type IspEngineTuning } from "../../src/dots/isp-engine";
import { MIN_TICKET_SECRET_LENGTH } from "../../src/transport/dtls/ticket";
import { certificateFrom, parseHomePrefixes, type TlsConfigNode } from "./common";
import { EndpointHub, pskOf, stateDirFor, type EndpointStatus, type HubKind, type Words } from "./endpoint";

/** The listener's own settings, as the endpoint config node (and a v1 listener node) stores them. */
export interface IspEndpointSettings {
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
  /** Endpoint node only (v1 listeners never had it): DTLS handshakes in progress per source address or /64. */
  handshakesPerSource?: string | number;
  /** Endpoint node only: a DTLS ticket gets the cookie round too (`listen --dtls-cookie-always`). */
  cookieAlways?: boolean;
}

export const ISP_SETTING_NAMES: ReadonlyArray<keyof IspEndpointSettings> = [
  "port",
  "host",
  "dtls",
  "tls",
  "psk",
  "extraPsks",
  "tlsConfig",
  "homePrefixes",
  "allowUnscoped",
  "dropMaxFailures",
  "dropWindow",
  "dropBan",
];

export function int(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === "number" ? value : Number(String(value ?? "").trim());
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name} must be a whole number in ${min}..${max}, got "${String(value)}"`);
  return n;
}

/** The endpoint node's credentials (v1 listeners have none). */
export interface IspEndpointCredentials {
  /** DTLS session ticket secret, shared by the ISP's listener processes; empty: per-process keys. */
  ticketSecret?: string;
}

function listenerOptions(
  RED: NodeAPI,
  c: IspEndpointSettings,
  t: Words,
  stateDir: string | undefined,
  credentials: IspEndpointCredentials,
): ListenerOptions {
  const options: ListenerOptions = {
    port: int(c.port === "" || c.port === undefined ? DEFAULTS.port : c.port, "port", 0, 65535),
    host: (c.host || "").trim() || "::",
    transports: { dtls: c.dtls !== false, tls: c.tls === true },
    homePrefixes: parseHomePrefixes(c.homePrefixes),
    dropList: {
      maxFailures: int(c.dropMaxFailures ?? DEFAULTS.dropAfterFailures, "drop-list failures", 1, 1000),
      windowMs: int(c.dropWindow ?? DEFAULTS.dropWindowMs / 1000, "drop-list window", 1, 86400) * 1000,
      banMs: int(c.dropBan ?? DEFAULTS.dropBanMs / 1000, "drop-list ban", 1, 604800) * 1000,
    },
  };
  const psks: NonNullable<ListenerOptions["psk"]> = [];
  for (const id of [c.psk, ...(Array.isArray(c.extraPsks) ? c.extraPsks : [])].filter((x) => x)) psks.push(pskOf(RED, id, t));
  if (psks.length) options.psk = psks;
  if (c.tlsConfig) {
    const tn = RED.nodes.getNode(c.tlsConfig) as TlsConfigNode | null;
    if (!tn) throw new Error(t("errors.tls-missing"));
    options.certificate = certificateFrom(tn);
  }
  if (!options.psk && !options.certificate) throw new Error(t("errors.no-credentials"));
  if (!options.transports.dtls && !options.transports.tls) throw new Error(t("errors.no-transport"));
  if (stateDir) options.stateDir = stateDir;
  const secret = credentials.ticketSecret ?? "";
  if (secret !== "") {
    const bytes = Buffer.from(secret, "utf8");
    if (bytes.length < MIN_TICKET_SECRET_LENGTH)
      throw new Error(t("errors.ticket-secret-short", { length: bytes.length, min: MIN_TICKET_SECRET_LENGTH }));
    options.ticketSecret = bytes;
  }
  return options;
}

function where(info: { port: number; host: string; transports: string[] }): string {
  return `${info.host.includes(":") ? `[${info.host}]` : info.host}:${info.port} ${info.transports.join("+")}`;
}

function listening(engine: CallHomeListener, memo: Record<string, unknown>): EndpointStatus {
  const n = engine.sessionCount();
  return { fill: n > 0 ? "green" : "grey", shape: "dot", key: "listening", args: { where: String(memo.where ?? ""), count: n } };
}

export const ISP_KIND: HubKind<CallHomeListener> = {
  kind: "isp",
  events: [
    "listening",
    "session-up",
    "session-down",
    "resynced",
    "status",
    LISTENER_AUTH_FAILURE_EVENT,
    LISTENER_DROP_EVENT,
    LISTENER_DROP_END_EVENT,
    LISTENER_IDENTITY_CONFLICT_EVENT,
    "cuid-changed",
    "error",
  ],
  statusAfter(event, args, engine, memo) {
    if (event === "listening") {
      memo.where = where(args[0] as { port: number; host: string; transports: string[] });
      memo.listening = true;
    }
    if (event === "listening" || event === "session-up" || event === "session-down") return listening(engine, memo);
    return undefined;
  },
  statusNow(engine, memo) {
    return memo.listening ? listening(engine, memo) : { fill: "yellow", shape: "ring", key: "starting" };
  },
};

/** The listener's tuning from the node's settings; throws on a value out of range. */
export function ispTuning(settings: IspEndpointSettings): Partial<IspEngineTuning> {
  return {
    allowUnscopedHomes: settings.allowUnscoped === true,
    // Absent (flows saved before the setting) or empty: the default.
    maxDtlsHandshakesPerSource: int(
      settings.handshakesPerSource === undefined || settings.handshakesPerSource === ""
        ? DEFAULTS.maxHandshakesPerSource
        : settings.handshakesPerSource,
      "DTLS handshakes per source",
      ...LIMITS.maxHandshakesPerSource,
    ),
    // Absent (flows saved before the setting): a ticket is answered at once.
    ...(settings.cookieAlways === true ? { dtlsResumeWithoutCookie: false } : {}),
  };
}

/**
 * The hub of an ISP endpoint. `key` names the engine in the registry and the state directory:
 * the config node's id, or "node-<id>" for a v1 listener's inline settings.
 */
export function ispHub(
  RED: NodeAPI,
  owner: Node,
  key: string,
  stateKey: string,
  settings: IspEndpointSettings,
  t: Words,
  credentials: IspEndpointCredentials = {},
): EndpointHub<CallHomeListener> {
  return new EndpointHub<CallHomeListener>(RED, owner, ISP_KIND, {
    key,
    settings: () => {
      const options = listenerOptions(RED, settings, t, stateDirFor(RED, stateKey), credentials);
      const tuning = ispTuning(settings);
      return { fingerprint: { options, tuning }, port: options.port, create: () => new CallHomeListener(options, tuning) };
    },
  });
}

export type { SessionInfo };
