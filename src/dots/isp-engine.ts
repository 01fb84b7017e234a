// The ISP side of DOTS Signal Channel Call Home (RFC 9066): the Call Home DOTS client. It listens
// as the (D)TLS server, keeps a registry of authenticated home sessions, and sends mitigation
// requests, withdrawals, efficacy updates and redirects over the session a home opened to it.
import { EventEmitter } from "node:events";
import type { CallHomeListenerApi, CallHomeListenerEvents, DotsJson, ListenerOptions, RequestOutcome, SessionInfo } from "./api";
import { decodeDotsCbor, DotsCborError, encodeDotsCbor, DOTS_CONTENT_FORMAT } from "../cbor";
import { CoapEndpoint, diagnosticResponse, type CoapResponse, type IncomingRequest, type OutgoingRequest } from "../coap/endpoint";
import { Code, codeFromString, codeToString } from "../coap/message";
import { ifMatchOption } from "../coap/options";
import type { Connection, PeerMove } from "../transport/connection";
import { CallHomeTransportListener, type AuthFailure, type DropEndEvent, type DropEvent } from "../transport/listener";
import { isDtlsCertificateKey } from "../transport/dtls/certificate";
import { MIN_TICKET_SECRET_LENGTH } from "../transport/dtls/ticket";
import {
  authFailureEvent,
  dropBanEvent,
  dropEndEvent,
  LISTENER_AUTH_FAILURE_EVENT,
  LISTENER_DROP_END_EVENT,
  LISTENER_DROP_EVENT,
  type AuthFailureEvent,
  type DropBanEvent,
  type DropEndInfo,
} from "./auth-events";
import { DEFAULTS } from "./defaults";
import type { TransmissionParameters } from "./session-config";
import { MidAllocator, cuidForSession, sessionIdForPeer } from "./ids";
import { MidLedger, StateFileError } from "./isp-mid-ledger";
import { validateMitigationRequest } from "./validation";
import {
  credentialOf,
  describeCredential,
  HomeNameRegistry,
  LISTENER_IDENTITY_CONFLICT_EVENT,
  type IdentityConflictEvent,
} from "./home-names";
import {
  DEFAULT_TUNING,
  HomeState,
  IspRequestError,
  IspSession,
  type IspSessionEvents,
  type IspTuning,
  type MidReservations,
  type RedirectTarget,
  type ResyncEvent,
  type SessionEndpoint,
  type SessionIncoming,
  type SessionRequest,
  type SessionResponse,
} from "./isp-session";

export interface IspEngineTuning extends IspTuning {
  /** Derive our cuid from this PSK identity instead of the one the home authenticated with. */
  cuidIdentity?: string;
  /** Most sessions held at once; further connections are closed. Default 20000. */
  maxSessions: number;
  /**
   * Send requests to homes that have no configured prefixes, skipping the source-prefix domain
   * check (R24 wants it). Default false: such requests fail with INVALID_REQUEST.
   */
  allowUnscopedHomes: boolean;
  /**
   * Listen on 4646, the base DOTS signal channel port. Default false: RFC 9066 appendix B wants a
   * port of its own for Call Home so the two channels stay apart (R3).
   */
  allowBaseChannelPort: boolean;
  /** Simultaneous TCP connections from one source address (transport default 256). */
  maxTcpPerAddress?: number;
  /** DTLS peers held at once (transport default 10000). */
  maxDtlsPeers?: number;
  /** DTLS handshakes in progress per source address or IPv6 /64 (transport default DEFAULT_MAX_HANDSHAKING_PER_SOURCE, 16). */
  maxDtlsHandshakesPerSource?: number;
  /** A DTLS ticket answered without the cookie round (transport default true; `listen --dtls-cookie-always` sets false). */
  dtlsResumeWithoutCookie?: boolean;
}

/** The base (non-call-home) DOTS signal channel port, RFC 9132. */
export const BASE_DOTS_SIGNAL_PORT = 4646;

/** Extra events beyond the shared contract (the CLI prints them; nodes may ignore them). */
export interface IspExtraEvents {
  heartbeat: [{ sessionId: string; direction: "in" | "out"; peerHbStatus: boolean }];
  discarded: [{ sessionId: string; reason: string }];
  "auth-failure": [AuthFailureEvent];
  drop: [DropBanEvent];
  "drop-end": [DropEndInfo];
  /** A session was refused: its home name belongs to another credential (a PSK identity or certificates). */
  "identity-conflict": [IdentityConflictEvent];
  config: [{ sessionId: string; config: DotsJson }];
  "cuid-changed": [{ sessionId: string; previous: string; cuid: string }];
  /** After every session-up: what the home still holds for us (RFC 9132 GET /mitigate). */
  resynced: [ResyncEvent];
  /** A DTLS home's NAT gave it a new public address or port (RFC 9146 Connection ID); the session goes on. */
  "session-moved": [{ sessionId: string; home: string } & PeerMove];
}

type AllEvents = CallHomeListenerEvents & IspExtraEvents;

/** Common name of an RFC 2253-ish subject such as "CN=home-1.example,O=x", else the whole subject. */
function commonName(subject: string | undefined): string | undefined {
  if (!subject) return undefined;
  const m = /(?:^|[,/\n]\s*)CN=([^,/\n]+)/.exec(subject);
  return m ? m[1].trim() : subject;
}

/** Sessions an UNKNOWN_SESSION error names. */
const KNOWN_SESSIONS_SHOWN = 10;

/** Session events the listener emits unchanged (the rest it handles itself). */
const RELAYED_SESSION_EVENTS: ReadonlySet<keyof IspSessionEvents> = new Set([
  "status",
  "heartbeat",
  "discarded",
  "config",
  "cuid-changed",
  "resynced",
  "error",
] as const);

export class CallHomeListener extends EventEmitter implements CallHomeListenerApi {
  private readonly options: ListenerOptions;
  private readonly tuning: IspEngineTuning;
  private transport: CallHomeTransportListener | undefined;
  private readonly live = new Map<string, IspSession>();
  /** The live session of each home name (one per name: claimName refuses a second credential). */
  private readonly liveByHome = new Map<string, IspSession>();
  /** Sessions that came up and have not gone down (what sessions() lists). */
  private upSessions = 0;
  private readonly homes = new Map<string, HomeState>();
  private readonly mids = new MidAllocator();
  /** Durable mid marks per home (ListenerOptions.stateDir); undefined: memory only. */
  private ledger: MidLedger | undefined;
  private readonly pskByIdentity = new Map<string, { key: Buffer; home?: string }>();
  /** Which credential owns which home name (durable with stateDir). */
  private readonly names: HomeNameRegistry;
  /** Last identity-conflict event per refused (session id, name), and the refusals since. */
  private readonly conflictsReported = new Map<string, { at: number; repeats: number }>();
  /** Session ids and home names seen since start (bounded), to tell "down" from "unknown". */
  private readonly seen = new Set<string>();
  private stopped = false;
  private boundPort: number | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(options: ListenerOptions, tuning: Partial<IspEngineTuning> = {}) {
    super();
    if (!options || typeof options !== "object") throw new TypeError("CallHomeListener: options are required");
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535)
      throw new RangeError(`port must be 0..65535, got ${options.port}`);
    if (!options.transports?.dtls && !options.transports?.tls) throw new TypeError("CallHomeListener: enable DTLS, TLS or both");
    this.options = options;
    this.tuning = {
      ...DEFAULT_TUNING,
      maxSessions: 20000,
      allowUnscopedHomes: false,
      allowBaseChannelPort: false,
      ...stripUndefined(tuning),
    };
    if (options.port === BASE_DOTS_SIGNAL_PORT && !this.tuning.allowBaseChannelPort) {
      throw new RangeError(
        `port ${BASE_DOTS_SIGNAL_PORT} is the base DOTS signal channel's; Call Home needs a port of its own (RFC 9066 appendix B), e.g. 4647`,
      );
    }
    if (options.ticketSecret !== undefined && options.ticketSecret.length < MIN_TICKET_SECRET_LENGTH)
      throw new RangeError(`ticketSecret needs at least ${MIN_TICKET_SECRET_LENGTH} bytes, got ${options.ticketSecret.length}`);
    for (const p of options.psk ?? []) {
      if (this.pskByIdentity.has(p.identity)) throw new TypeError(`PSK identity "${p.identity}" configured twice`);
      this.pskByIdentity.set(p.identity, { key: Buffer.from(p.key), home: p.home });
    }
    this.names = new HomeNameRegistry(options.psk ?? [], options.stateDir, (e: StateFileError) => this.emit("error", e));
  }

  /** The bound port (useful with port 0). */
  get port(): number | undefined {
    return this.boundPort;
  }

  async start(): Promise<void> {
    if (this.transport) return;
    this.stopped = false;
    if (this.options.stateDir !== undefined && !this.ledger) {
      const ledger = new MidLedger(this.options.stateDir, (e: StateFileError) => this.emit("error", e));
      if (await ledger.open()) this.ledger = ledger;
      this.names.open();
    }
    const t = this.makeTransport();
    t.on("connection", (conn: Connection) => this.accept(conn));
    const homeOf = (identity: string): string | undefined => {
      const entry = this.pskByIdentity.get(identity);
      return entry ? (entry.home ?? identity) : undefined;
    };
    t.on("auth-failure", (f: AuthFailure) => this.emit(LISTENER_AUTH_FAILURE_EVENT, authFailureEvent(f, homeOf)));
    t.on("drop", (d: DropEvent) => this.emit(LISTENER_DROP_EVENT, dropBanEvent(d, homeOf)));
    t.on("drop-end", (d: DropEndEvent) => this.emit(LISTENER_DROP_END_EVENT, dropEndEvent(d)));
    t.on("error", (e: Error) => this.emit("error", e));
    this.transport = t;
    let bound: { port: number };
    try {
      bound = await t.listen();
    } catch (e) {
      this.transport = undefined;
      await t.close();
      throw e;
    }
    this.boundPort = bound.port;
    // Forget what homes that never came back asked for once its lifetime has run out.
    this.sweepTimer = setInterval(() => this.sweepHomes(), 60_000);
    this.sweepTimer.unref();
    const transports: Array<"dtls" | "tls"> = [];
    if (this.options.transports.dtls) transports.push("dtls");
    if (this.options.transports.tls) transports.push("tls");
    this.emit("listening", { port: bound.port, host: this.options.host ?? "::", transports });
  }

  /** DTLS and/or TLS (certificates and/or PSK) on one port, with the RFC 9066 drop-list. */
  private makeTransport(): CallHomeTransportListener {
    const o = this.options;
    const hasPsk = this.pskByIdentity.size > 0;
    const lookup = (identity: string): Buffer | undefined => this.pskByIdentity.get(identity)?.key;
    const cert = o.certificate;
    // DTLS certificates are ECDHE_ECDSA or ECDHE_RSA (RFC 8422): P-256 or RSA >= 2048 bits; another key still serves TLS.
    const dtlsCert = o.transports.dtls && cert !== undefined && isDtlsCertificateKey(cert.key, cert.passphrase) ? cert : undefined;
    if (o.transports.dtls && !hasPsk && !dtlsCert)
      throw new TypeError(
        cert
          ? "DTLS needs PSK entries or a certificate with an EC P-256 or RSA (>= 2048 bits) key; this certificate's key is neither"
          : "DTLS needs PSK entries or a certificate",
      );
    if (o.transports.tls && !hasPsk && !o.certificate) throw new TypeError("TLS needs a certificate or PSK entries");
    if (cert && !cert.ca)
      throw new TypeError("certificate.ca is required: homes must present certificates we can verify (mutual authentication)");
    return new CallHomeTransportListener({
      port: o.port,
      host: o.host ?? "::",
      dtls: o.transports.dtls
        ? {
            pskLookup: hasPsk ? lookup : undefined,
            certificate: dtlsCert
              ? {
                  cert: dtlsCert.cert,
                  key: dtlsCert.key,
                  passphrase: dtlsCert.passphrase,
                  ca: dtlsCert.ca as string | Buffer | Array<string | Buffer>,
                }
              : undefined,
            ...(o.ticketSecret !== undefined ? { sessionTicketSecret: o.ticketSecret } : {}),
            ...(this.tuning.maxDtlsPeers !== undefined ? { maxPeers: this.tuning.maxDtlsPeers } : {}),
            ...(this.tuning.maxDtlsHandshakesPerSource !== undefined
              ? { maxHandshakingPerSource: this.tuning.maxDtlsHandshakesPerSource }
              : {}),
            ...(this.tuning.dtlsResumeWithoutCookie !== undefined ? { resumeWithoutCookie: this.tuning.dtlsResumeWithoutCookie } : {}),
          }
        : undefined,
      tls: o.transports.tls
        ? {
            certificate: cert
              ? { cert: cert.cert, key: cert.key, ca: cert.ca as string | Buffer | Array<string | Buffer>, passphrase: cert.passphrase }
              : undefined,
            pskLookup: hasPsk ? lookup : undefined,
          }
        : undefined,
      dropList: o.dropList ?? { maxFailures: DEFAULTS.dropAfterFailures, windowMs: DEFAULTS.dropWindowMs, banMs: DEFAULTS.dropBanMs },
      maxTcpPerAddress: this.tuning.maxTcpPerAddress,
    });
  }

  private sweepHomes(): void {
    for (const [id, st] of this.homes) {
      if (this.live.has(id)) continue;
      st.sweepExpired();
      if (st.mitigations.size === 0) this.homes.delete(id);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const s of [...this.live.values()]) s.close("listener stopped");
    this.live.clear();
    this.liveByHome.clear();
    const t = this.transport;
    this.transport = undefined;
    if (t) await t.close();
    await this.ledger?.flush();
    this.homes.clear();
  }

  sessions(): SessionInfo[] {
    return [...this.live.values()].filter((s) => s.wasUp).map((s) => ({ ...s.info }));
  }

  sessionCount(): number {
    return this.upSessions;
  }

  /** What the listener holds of each home's mitigations (connected or not), for views; a copy. */
  homeMitigations(): Array<{
    sessionId: string;
    home: string;
    connected: boolean;
    mid: number;
    cuid: string;
    status?: string;
    lifetime: number;
    expiresAt: number;
    withdrawn: boolean;
  }> {
    const out = [];
    for (const st of this.homes.values()) {
      const connected = this.live.get(st.sessionId)?.isUp === true;
      for (const m of st.mitigations.values())
        out.push({
          sessionId: st.sessionId,
          home: st.home,
          connected,
          mid: m.mid,
          cuid: m.cuid,
          status: m.status,
          lifetime: m.lifetime,
          expiresAt: m.expiresAt,
          withdrawn: m.withdrawn,
        });
    }
    return out;
  }

  findSession(idOrHome: string): SessionInfo | undefined {
    const s = this.lookup(idOrHome);
    return s && s.wasUp ? { ...s.info } : undefined;
  }

  /** Closes the live session with this id (up or still setting up); false when there is none. */
  closeSession(id: string, reason: string): boolean {
    const s = this.live.get(id);
    if (!s) return false;
    s.close(reason);
    return true;
  }

  /** The live session object (tests and tools send raw requests through it). */
  session(idOrHome: string): IspSession {
    return this.require(idOrHome);
  }

  private lookup(idOrHome: string): IspSession | undefined {
    return this.live.get(idOrHome) ?? this.liveByHome.get(idOrHome);
  }

  /** Live session or a clear SESSION_DOWN / UNKNOWN_SESSION error. */
  private require(idOrHome: string): IspSession {
    if (this.stopped) throw new IspRequestError("STOPPED", "the listener is stopped");
    if (typeof idOrHome !== "string" || idOrHome.length === 0) throw new IspRequestError("UNKNOWN_SESSION", "no session named");
    const s = this.lookup(idOrHome);
    if (s && s.isUp && s.wasUp) return s;
    if (s || this.seen.has(idOrHome) || this.pskByIdentity.has(idOrHome) || this.isConfiguredHome(idOrHome))
      throw new IspRequestError("SESSION_DOWN", `session "${idOrHome}" is not connected`);
    // Named, not listed in full: a listener may hold 50,000 sessions.
    const shown: string[] = [];
    for (const x of this.live.values()) {
      if (shown.length === KNOWN_SESSIONS_SHOWN) break;
      shown.push(`${x.id} (${x.info.home})`);
    }
    const more = this.live.size > shown.length ? `, and ${this.live.size - shown.length} more` : "";
    throw new IspRequestError("UNKNOWN_SESSION", `no session "${idOrHome}" (known: ${shown.join(", ") || "none"}${more})`);
  }

  private isConfiguredHome(home: string): boolean {
    for (const p of this.pskByIdentity.values()) if (p.home === home) return true;
    return false;
  }

  private async call<T>(idOrHome: string, fn: (s: IspSession) => Promise<T>): Promise<T> {
    return fn(this.require(idOrHome));
  }

  /** opts.observe (default true): register an Observe on the new mitigation's status. */
  mitigate(session: string, request: DotsJson, opts?: { mid?: number; observe?: boolean }): Promise<RequestOutcome> {
    return this.call(session, (s) => s.mitigate(request, opts ?? {}));
  }

  withdraw(session: string, mid: number): Promise<RequestOutcome> {
    return this.call(session, (s) => s.withdraw(mid));
  }

  get(session: string, mid?: number): Promise<RequestOutcome> {
    return this.call(session, (s) => s.get(mid));
  }

  efficacy(session: string, mid: number, attackStatus: "under-attack" | "attack-successfully-mitigated"): Promise<RequestOutcome> {
    return this.call(session, (s) => s.efficacy(mid, attackStatus));
  }

  redirect(session: string, target: RedirectTarget): Promise<RequestOutcome> {
    return this.call(session, (s) => s.redirect(target));
  }

  // ---------------------------------------------------------------------------- connections

  private homeName(conn: Connection): string {
    if (conn.peer.method === "psk" && conn.peer.pskIdentity !== undefined)
      return this.pskByIdentity.get(conn.peer.pskIdentity)?.home ?? conn.peer.pskIdentity;
    return commonName(conn.peer.subject) ?? "unknown";
  }

  private accept(conn: Connection): void {
    try {
      if (this.stopped) {
        conn.close();
        return;
      }
      const id = sessionIdForPeer(conn.peer);
      const home = this.homeName(conn);
      if (!this.claimName(conn, id, home)) {
        conn.close();
        return;
      }
      const old = this.live.get(id);
      if (old) old.close("replaced by a new connection from the same identity");
      if (this.live.size >= this.tuning.maxSessions) {
        this.emit("error", new Error(`session limit ${this.tuning.maxSessions} reached; closing connection from ${conn.remoteAddress}`));
        conn.close();
        return;
      }
      if (this.seen.size > 100_000) this.seen.clear();
      this.seen.add(id);
      this.seen.add(home);
      let state = this.homes.get(id);
      if (!state) {
        state = new HomeState(id, home);
        this.homes.set(id, state);
      }
      state.home = home;
      let reservations: MidReservations | undefined;
      const ledger = this.ledger;
      if (ledger) {
        // What an earlier run (or another process sharing the directory) stored for this home:
        // mids continue above it even when the home holds nothing any more (RFC 9132 4.4.1.1).
        const saved = ledger.load(id, home);
        for (const [c, m] of saved.mids) this.mids.note(id, c, m);
        if (state.cuid === undefined && saved.cuid !== undefined) state.cuid = saved.cuid;
        reservations = {
          reserve: (c, mid, rolledOver) => ledger.reserve(id, home, c, mid, rolledOver),
          cuidReplaced: (c) => void ledger.setCuid(id, home, c),
        };
      }
      // A cuid replaced after a collision stays in use for this identity (R19).
      const cuid = state.cuid ?? cuidForSession(conn.local, conn.peer, this.tuning.cuidIdentity);
      const info: SessionInfo = {
        id,
        home,
        transport: conn.transport,
        remoteAddress: conn.remoteAddress,
        remotePort: conn.remotePort,
        peer: {
          method: conn.peer.method,
          identity: conn.peer.method === "psk" ? (conn.peer.pskIdentity ?? "") : (conn.peer.subject ?? ""),
        },
        cipher: conn.cipher,
        since: Date.now(),
      };
      // The ISP side serves only /hb (idempotent): no NON answers kept for replay.
      const coap = new CoapEndpoint(conn, { transmission: undefined, replayNonAnswers: false });
      coap.on("protocol-error", (e: Error) => this.emit("error", new Error(`${id}: CoAP protocol error: ${e.message}`)));
      const endpoint = adaptEndpoint(coap);
      const session = new IspSession(endpoint, {
        info,
        cuid,
        state,
        mids: this.mids,
        ...(reservations ? { reservations } : {}),
        homePrefixes: this.options.homePrefixes?.[home],
        validate: (request, prefixes) => this.validate(home, request, prefixes),
        tuning: this.tuning,
        relay: { to: this, events: RELAYED_SESSION_EVENTS },
      });
      this.live.set(id, session);
      this.liveByHome.set(home, session);
      // RFC 9146: the home's NAT gave it a new public address or port; the session goes on there.
      conn.on("moved", (m: PeerMove) => {
        session.info.remoteAddress = m.to.address;
        session.info.remotePort = m.to.port;
        this.emit("session-moved", { sessionId: id, home, from: m.from, to: m.to });
      });
      session.on("up", (i) => {
        this.upSessions++;
        this.emit("session-up", { ...i });
      });
      session.on("down", (reason) => {
        if (session.wasUp) this.upSessions--;
        if (this.live.get(id) === session) this.live.delete(id);
        if (this.liveByHome.get(home) === session) this.liveByHome.delete(home);
        const st = this.homes.get(id);
        if (st && st.mitigations.size === 0 && !this.live.has(id)) this.homes.delete(id);
        if (session.wasUp) this.emit("session-down", { ...session.info }, reason);
      });
      session.start().catch((e: Error) => this.emit("error", e));
    } catch (e) {
      this.emit("error", e as Error);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /**
   * One home name, one credential: false (with an identity-conflict event) when the name is owned
   * by another credential, or is in use by a live session of another key (two certificates with
   * one common name). The first session keeps the name; commands for it reach that session only.
   */
  private claimName(conn: Connection, id: string, home: string): boolean {
    const credential = credentialOf(conn.peer);
    const presented = conn.peer.method === "psk" ? (conn.peer.pskIdentity ?? "") : (conn.peer.subject ?? "");
    let owner: IdentityConflictEvent["owner"] | undefined;
    const claim = this.names.claim(home, credential);
    if (!claim.ok) owner = claim.owner;
    else {
      const s = this.liveByHome.get(home);
      if (s !== undefined && s.id !== id && s.isUp) {
        owner = {
          credential: s.info.peer.method === "psk" ? `psk:${s.info.peer.identity}` : "certificate",
          source: "session",
          since: new Date(s.info.since).toISOString(),
          sessionId: s.id,
          remoteAddress: s.info.remoteAddress,
        };
      }
    }
    if (!owner) return true;
    const key = `${id} ${home}`;
    const now = Date.now();
    const last = this.conflictsReported.get(key);
    if (last && now - last.at < 60_000) {
      last.repeats++;
      return false;
    }
    if (this.conflictsReported.size > 10_000) this.conflictsReported.clear();
    this.conflictsReported.set(key, { at: now, repeats: 0 });
    const ownerText =
      owner.source === "session"
        ? `the live session ${owner.sessionId} from ${owner.remoteAddress} (${describeCredential(owner.credential)})`
        : owner.source === "configuration"
          ? `${describeCredential(owner.credential)} (configured)`
          : `${describeCredential(owner.credential)} since ${owner.since ?? "an earlier run"} (${owner.file}; delete that file to release the name)`;
    this.emit(LISTENER_IDENTITY_CONFLICT_EVENT, {
      home,
      transport: conn.transport,
      remoteAddress: conn.remoteAddress,
      remotePort: conn.remotePort,
      refused: { sessionId: id, credential, identity: presented },
      owner,
      repeats: last?.repeats ?? 0,
      message: `refused ${describeCredential(credential, conn.peer.subject)} from ${conn.remoteAddress}: home name ${JSON.stringify(home)} belongs to ${ownerText}`,
    });
    return false;
  }

  /** R24/R25 before sending: the shared validation with the home's prefixes. */
  private validate(home: string, request: DotsJson, prefixes: string[] | undefined): { ok: true } | { ok: false; errors: string[] } {
    if (prefixes === undefined && !this.tuning.allowUnscopedHomes) {
      return {
        ok: false,
        errors: [
          `no home prefixes configured for "${home}": cannot check that source-prefix lies in the home's domain (RFC 9066 section 5.3.1)`,
        ],
      };
    }
    const r = validateMitigationRequest(request, { side: "isp", homePrefixes: prefixes, allowIndefiniteLifetime: true });
    if (r.ok) return { ok: true };
    return { ok: false, errors: r.errors.map((e) => `${e.field}: ${e.message}`) };
  }

  // Typed events ------------------------------------------------------------------------------
  override on<E extends keyof AllEvents>(event: E, listener: (...args: AllEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<E extends keyof AllEvents>(event: E, listener: (...args: AllEvents[E]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  override emit<E extends keyof AllEvents>(event: E, ...args: AllEvents[E]): boolean {
    // An 'error' without listeners must not crash the process (a malformed peer is not our bug).
    if (event === "error" && this.listenerCount("error") === 0) return false;
    return super.emit(event, ...args);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export { IspRequestError };

// ------------------------------------------------------------------------------ CoAP adapter

/** Decodes a response payload: CBOR for 2.xx/4.09/5.03 with Content-Format 271, text otherwise. */
function decodeBody(code: number, contentFormat: number | undefined, payload: Buffer): DotsJson | string | undefined {
  if (payload.length === 0) return undefined;
  if (contentFormat === DOTS_CONTENT_FORMAT) {
    try {
      return decodeDotsCbor(payload);
    } catch (e) {
      return `undecodable application/dots+cbor body (${(e as Error).message})`;
    }
  }
  return payload.toString("utf8");
}

function toSessionResponse(res: CoapResponse): SessionResponse {
  const out: SessionResponse = { code: codeToString(res.code) };
  const body = decodeBody(res.code, res.contentFormat, res.payload);
  if (body !== undefined) out.body = body;
  if (res.maxAge !== undefined) out.maxAge = res.maxAge;
  return out;
}

function encodeRequestBody(body: DotsJson | Buffer): Buffer {
  if (Buffer.isBuffer(body)) return body;
  try {
    return Buffer.from(encodeDotsCbor(body));
  } catch (e) {
    if (e instanceof DotsCborError)
      throw new IspRequestError("INVALID_REQUEST", `cannot encode the request: ${e.message}`, { path: e.path, code: e.code });
    throw e;
  }
}

/**
 * Largest CoAP message we send over DTLS: it must fit one record in a 1280-byte path (RFC 9132
 * section 7.3): 1280 - 40 (IPv6) - 8 (UDP) - 13 (DTLS header) - 16 (nonce + CCM_8 tag) = 1203,
 * rounded down to the 1152 CoAP's own default uses.
 */
export const MAX_DTLS_COAP_MESSAGE = 1152;

function estimatedSize(req: SessionRequest, payload: Buffer | undefined): number {
  // 4 header + 8 token + options (each segment: up to 3 bytes of delta/length + value) + marker.
  let n = 4 + 8 + 3 + 3 + 4;
  for (const seg of req.path) n += 3 + Buffer.byteLength(seg);
  if (payload) n += 1 + payload.length;
  return n;
}

function toOutgoing(req: SessionRequest, datagram: boolean): OutgoingRequest {
  const out: OutgoingRequest = { method: req.method, path: req.path, confirmable: req.confirmable, timeoutMs: req.timeoutMs };
  if (req.body !== undefined) {
    out.payload = encodeRequestBody(req.body);
    out.contentFormat = DOTS_CONTENT_FORMAT;
  }
  if (datagram && estimatedSize(req, out.payload) > MAX_DTLS_COAP_MESSAGE) {
    // R13: the client must split such a request; which split makes sense is the caller's choice.
    throw new IspRequestError(
      "INVALID_REQUEST",
      `request of about ${estimatedSize(req, out.payload)} bytes does not fit one DTLS datagram (${MAX_DTLS_COAP_MESSAGE} bytes, RFC 9132 section 7.3): split it into several requests, e.g. shorter target-prefix lists`,
    );
  }
  if (req.ifMatchEmpty) out.options = [ifMatchOption()];
  if (req.repeatMs !== undefined && !req.confirmable) out.repeatMs = req.repeatMs;
  return out;
}

/** Maps the CoAP endpoint onto the narrow seam the session uses (CBOR in, CBOR out). */
export function adaptEndpoint(ep: CoapEndpoint): SessionEndpoint {
  return new CoapSessionEndpoint(ep);
}

/** A class rather than an object of closures: its methods are shared by every session. */
class CoapSessionEndpoint implements SessionEndpoint {
  readonly datagram: boolean;

  constructor(private readonly ep: CoapEndpoint) {
    this.datagram = !ep.isTcp;
  }

  request(req: SessionRequest): Promise<SessionResponse> {
    return new Promise((resolve, reject) =>
      this.requestWithCallback(req, (err, res) => (err === undefined ? resolve(res as SessionResponse) : reject(err))),
    );
  }

  requestWithCallback(req: SessionRequest, done: (err: Error | undefined, res?: SessionResponse) => void): void {
    let out: OutgoingRequest;
    try {
      out = toOutgoing(req, this.datagram);
    } catch (e) {
      queueMicrotask(() => done(e as Error));
      return;
    }
    this.ep.requestWithCallback(out, (err, res) => {
      if (err !== undefined || res === undefined) {
        done(err ?? new Error("no response"));
        return;
      }
      let mapped: SessionResponse;
      try {
        mapped = toSessionResponse(res);
      } catch (e) {
        done(e as Error);
        return;
      }
      done(undefined, mapped);
    });
  }

  observe(req: SessionRequest, onNotification: (res: SessionResponse) => void): { first: Promise<SessionResponse>; cancel(): void } {
    let cancelled = false;
    let cancelNow: (() => Promise<void>) | undefined;
    const first = this.ep
      .observe(toOutgoing(req, this.datagram), (res) => onNotification(toSessionResponse(res)))
      .then((h) => {
        cancelNow = h.cancel;
        if (cancelled) void h.cancel();
        return toSessionResponse(h.first);
      });
    return {
      first,
      cancel() {
        cancelled = true;
        if (cancelNow) void cancelNow().catch(() => undefined);
      },
    };
  }

  onRequest(handler: (req: SessionIncoming) => void): void {
    this.ep.onRequest((req: IncomingRequest) => {
      const incoming: SessionIncoming = {
        method: req.method,
        path: req.path,
        respond(code, body) {
          const c = codeFromString(code);
          if (body === undefined) req.respond({ code: c });
          else if (typeof body === "string") req.respond(diagnosticResponse(c, body));
          else req.respond({ code: c, payload: Buffer.from(encodeDotsCbor(body)), contentFormat: DOTS_CONTENT_FORMAT });
        },
      };
      if (req.payload.length > 0) {
        if (req.contentFormat !== DOTS_CONTENT_FORMAT) {
          req.respond(diagnosticResponse(Code.UnsupportedContentFormat, `payload must be application/dots+cbor (${DOTS_CONTENT_FORMAT})`));
          return;
        }
        try {
          incoming.body = decodeDotsCbor(req.payload);
        } catch (e) {
          incoming.bodyError = (e as Error).message;
        }
      }
      handler(incoming);
    });
  }

  setTransmissionParameters(p: TransmissionParameters): void {
    this.ep.setTransmissionParameters(p);
  }

  onActivity(l: () => void): void {
    this.ep.on("activity", l);
  }

  onClose(l: (reason: string) => void): void {
    this.ep.once("close", (err?: Error) => l(err?.message ?? "closed"));
  }

  ping(): Promise<number> {
    return this.ep.ping();
  }

  rttEstimateMs(): number | undefined {
    return this.ep.rttEstimateMs;
  }

  close(): void {
    this.ep.close();
  }
}
