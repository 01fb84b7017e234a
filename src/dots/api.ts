// The public contract of the two call-home engines. The Node-RED nodes and the CLI are thin
// adapters over these shapes; the engines (home-engine.ts, isp-engine.ts) implement them.
// JSON views use the YANG names of the RFC figures (src/cbor does the CBOR mapping).

/** A DOTS JSON view, e.g. { "ietf-dots-signal-channel:mitigation-scope": { scope: [ ... ] } }. */
export type DotsJson = Record<string, unknown>;

export type TransportChoice = "auto" | "udp" | "tcp";

/** PSK credentials: identity and raw key bytes. */
export interface PskCredential {
  identity: string;
  key: Buffer;
}

/** Certificate credentials, PEM text (as a Node-RED tls-config node provides them). */
export interface CertificateCredential {
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer | Array<string | Buffer>;
  passphrase?: string;
  /** Name the peer certificate must carry (home side: the ISP client's FQDN). */
  servername?: string;
}

// ---------------------------------------------------------------- ISP side (listener)

export interface ListenerOptions {
  port: number; // default 4647
  host?: string; // bind address, default "::" (dual stack)
  transports: { dtls: boolean; tls: boolean };
  /** identity -> key (and a home name for routing). */
  psk?: Array<PskCredential & { home?: string }>;
  certificate?: CertificateCredential;
  dropList?: { maxFailures: number; windowMs: number; banMs: number };
  /** Home domain prefixes per home name, used to validate source-prefix before sending. */
  homePrefixes?: Record<string, string[]>;
  /** Directory for durable listener state (the last mid per home); absent: kept in memory only. */
  stateDir?: string;
  /**
   * DTLS session ticket secret, at least 32 bytes, the same in every listener process of one ISP:
   * a home whose listener restarted, or that moved to another process, resumes its session (an
   * abbreviated handshake) instead of a full one. Absent: each process has its own random ticket keys.
   */
  ticketSecret?: Buffer;
}

export interface SessionInfo {
  /** Stable per authenticated peer identity. */
  id: string;
  /** Friendly name from configuration (PSK entry or certificate subject). */
  home: string;
  transport: "dtls" | "tls";
  remoteAddress: string;
  remotePort: number;
  peer: { method: "psk" | "certificate"; identity: string };
  cipher: string;
  since: number; // epoch ms
  /** Negotiated session configuration in JSON view, once GET /config succeeded. */
  config?: DotsJson;
}

export interface RequestOutcome {
  /** CoAP response code, e.g. "2.01", "4.00", "4.09". */
  code: string;
  /** Decoded body (JSON view) or diagnostic text for 4.xx/5.xx. */
  body?: DotsJson | string;
  mid?: number;
  cuid: string;
  sessionId: string;
}

export interface StatusNotification {
  sessionId: string;
  cuid: string;
  mid: number;
  /** Status label, e.g. "attack-successfully-mitigated". */
  status?: string;
  conflictCause?: string;
  body: DotsJson;
}

export interface CallHomeListenerEvents {
  listening: [{ port: number; host: string; transports: Array<"dtls" | "tls"> }];
  "session-up": [SessionInfo];
  "session-down": [SessionInfo, string /* reason */];
  status: [StatusNotification];
  error: [Error];
}

export interface CallHomeListenerApi {
  start(): Promise<void>;
  stop(): Promise<void>;
  sessions(): SessionInfo[];
  /** How many sessions sessions() would list, without copying them (status displays at 50,000 sessions). */
  sessionCount(): number;
  /** Resolves a session by id or home name; undefined when not connected. */
  findSession(idOrHome: string): SessionInfo | undefined;
  mitigate(session: string, request: DotsJson, opts?: { mid?: number }): Promise<RequestOutcome>;
  withdraw(session: string, mid: number): Promise<RequestOutcome>;
  get(session: string, mid?: number): Promise<RequestOutcome>;
  efficacy(session: string, mid: number, attackStatus: "under-attack" | "attack-successfully-mitigated"): Promise<RequestOutcome>;
  redirect(session: string, target: { altClient: string; records?: string[]; ttl?: number }): Promise<RequestOutcome>;
}

// ---------------------------------------------------------------- home side (dialer)

export interface DialerOptions {
  /** ISP Call Home DOTS client address(es): hostnames or IP literals (may be empty with discover). */
  hosts: string[];
  /**
   * RFC 8973 discovery: look up SRV _dots-call-home._udp.<domain> and _dots-call-home._tcp.<domain>
   * (optionally on the given DNS servers, "address[:port]") and dial what they name; `hosts` and
   * `port` are the fallback when discovery finds nothing. The ISP certificate must name `domain`
   * (the source domain, RFC 6125 section 6.2.1), not the SRV target, unless `dnssecValidated`
   * says the DNS answers are DNSSEC-validated (a validating resolver the home trusts, on a path it
   * trusts): then the SRV target is the name checked. A `certificate.servername` overrides both.
   */
  discover?: { domain: string; dnsServers?: string[]; dnssecValidated?: boolean };
  port: number; // default 4647
  transport: TransportChoice;
  psk?: PskCredential;
  certificate?: CertificateCredential;
  /** DTLS client: "ours" (default; ECDHE_PSK with forward secrecy first) or "node-dtls-client" (plain PSK only). */
  dtlsImplementation?: "ours" | "node-dtls-client";
  /** Prefixes of the home domain; source-prefix must lie inside (RFC 9066 section 5.3.1). */
  homePrefixes: string[];
  /** heartbeat-interval offered in /config, seconds. */
  heartbeatInterval?: number;
  /** How long a PUT waits for the outside decision before answering 2.01 status 1, ms. */
  decisionWaitMs?: number;
  /** Reconnect back-off bounds, ms (defaults honour RFC 9132: >= 60 s). */
  reconnect?: { minMs: number; maxMs: number };
  allowIndefiniteLifetime?: boolean;
  /** Longest lifetime granted, seconds (min(requested, this) is granted and returned). Default DEFAULTS.maxLifetimeS (1 day). */
  maxLifetime?: number;
  /** Directory for the durable mitigation state file; absent: kept in memory only. */
  stateDir?: string;
}

/** One accepted mitigation handed to the outside world for a decision. */
export interface MitigationEvent {
  cuid: string;
  mid: number;
  /** The validated scope entry (JSON view). */
  scope: DotsJson;
  lifetime: number; // seconds, -1 indefinite
  /** "new" | "refresh" | "efficacy". */
  kind: "new" | "refresh" | "efficacy";
}

export interface MitigationEnded {
  cuid: string;
  mid: number;
  reason: "withdrawn" | "expired" | "replaced" | "session-reset";
  scope: DotsJson;
}

import type { DecisionOutcome } from "./vocabulary";
export type { DecisionOutcome } from "./vocabulary";

export interface Decision {
  cuid?: string;
  mid: number;
  outcome: DecisionOutcome;
  /** Free text shown to operators (what was blocked, why it failed). */
  detail?: string;
  /** What enforcement added (e.g. filter elements), kept with the mitigation in the state file. */
  enforcement?: DotsJson;
}

/** What a mitigation's filter dropped (RFC 9132 section 4.4.2); rates only once they are defined. */
export interface DroppedTraffic {
  bytes: number;
  packets: number;
  /** Average dropped bytes / packets per second since the first reading, once it spans five minutes. */
  bps?: number;
  pps?: number;
}

/** Where the home's status (GET, notifications) takes dropped-traffic numbers from: the enforcer. */
export interface DropMetricsSource {
  /** Latest numbers for one mitigation from the source's cache; undefined when it has none. */
  dropped(cuid: string, mid: number): DroppedTraffic | undefined;
  /** Reads the counters again; concurrent and too-frequent calls share one read. */
  refresh(): Promise<void>;
}

export interface CallHomeDialerEvents {
  /** The state file was read at start: mitigations served again, lapsed ones dropped (DialerOptions.stateDir). */
  restored: [{ file: string; mitigations: number; expired: number; refused: number }];
  /** RFC 8973 discovery found these candidates (only with DialerOptions.discover). */
  discovered: [{ domain: string; candidates: Array<{ host: string; address: string; port: number; transport: "dtls" | "tls" }> }];
  connecting: [{ host: string; port: number; transport: "dtls" | "tls" }];
  connected: [{ remoteAddress: string; remotePort: number; transport: "dtls" | "tls"; cipher: string }];
  /** code: PSK_MISMATCH, CERT_EXPIRED, HANDSHAKE_TIMEOUT, ...; hint: a likely cause the home cannot confirm (the ISP's drop-list). */
  disconnected: [{ reason: string; retryInMs?: number; code?: string; hint?: string; detail?: string }];
  mitigation: [MitigationEvent];
  ended: [MitigationEnded];
  /** ttl: the one in force, seconds (60 when the ISP sent none, RFC 7252 Max-Age; 4294967295: no end). */
  redirected: [{ altClient: string; records: string[]; ttl?: number }];
  error: [Error];
}

export interface CallHomeDialerApi {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Hand back the outcome for a mitigation; throws if the mid is unknown. */
  decide(decision: Decision): void;
  /** Active mitigations with their status labels and remaining lifetimes. */
  mitigations(): Array<{ cuid: string; mid: number; status: string; lifetime: number; scope: DotsJson; enforcement?: DotsJson }>;
}
