// One Call Home session on the ISP side (Call Home DOTS client, RFC 9066): the CoAP client for
// /mitigate, /config and /redirect over a connection the home opened to us, and the CoAP server
// for the home's PUT /hb. Also the pure request builders and response readers used by it.
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import type { DotsJson, RequestOutcome, SessionInfo, StatusNotification } from "./api";
import { SparseMap, SparseSet } from "../transport/sparse-map";
import { encodedHeartbeat, HEARTBEAT_KEY, HeartbeatScheduler, parseHeartbeatJson } from "./heartbeat";
import { freshCuid, type MidAllocator } from "./ids";
import {
  CONFLICT_CAUSE_LABELS,
  MITIGATION_SCOPE_KEY,
  REDIRECT,
  REDIRECTED_SIGNAL_KEY,
  SCOPE,
  STATUS_LABELS,
  WELL_KNOWN_DOTS,
  isFqdn,
} from "./vocabulary";
import {
  type ConfigSet,
  type ConfigSetName,
  DEFAULT_CONFIG_SET,
  type TransmissionParameters,
  negotiatedSetsFromJson,
  toTransmissionParameters,
} from "./session-config";

// ------------------------------------------------------------------------------------ constants

export { MITIGATION_SCOPE_KEY, STATUS_LABELS, CONFLICT_CAUSE_LABELS, WELL_KNOWN_DOTS };

/** Status labels after which the home no longer mitigates: the ISP forgets the request. */
export const FINAL_STATUSES: ReadonlySet<string> = new Set([
  "attack-mitigation-terminated",
  "attack-mitigation-withdrawn",
  "attack-mitigation-signal-loss",
]);

export type AttackStatus = "under-attack" | "attack-successfully-mitigated";

// ------------------------------------------------------------------------------------ errors

export type IspErrorCode =
  | "SESSION_DOWN" // the named session is not connected
  | "UNKNOWN_SESSION" // no session by that id or home name
  | "INVALID_REQUEST" // the request failed validation before sending
  | "UNKNOWN_MITIGATION" // efficacy/withdraw for a mid we never sent on this identity
  | "TIMEOUT" // no answer within the request timeout
  | "RETRY_TIMER" // the home deactivated this request; its retry-timer has not run out (R39)
  | "COAP_ERROR" // the CoAP layer refused the request (limits, message too large)
  | "STOPPED"; // the listener was stopped

/** Every failure the ISP engine reports to callers carries a machine-readable code. */
export class IspRequestError extends Error {
  constructor(
    readonly code: IspErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "IspRequestError";
  }
}

// ------------------------------------------------------------------------------------ paths

export function mitigatePath(cuid: string, mid?: number): string[] {
  const p: string[] = [...WELL_KNOWN_DOTS, "mitigate", `cuid=${cuid}`];
  if (mid !== undefined) p.push(`mid=${mid}`);
  return p;
}

/** Configurations homes answered, by content: most homes answer the same one, so 50,000 sessions hold a few copies. */
const sharedConfigs = new Map<string, DotsJson>();
const MAX_SHARED_CONFIGS = 256;

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

/** The one frozen copy of this configuration (SessionInfo.config is read-only to its users). */
function sharedConfig(config: DotsJson): DotsJson {
  const key = JSON.stringify(config);
  const known = sharedConfigs.get(key);
  if (known) return known;
  const copy = deepFreeze(structuredClone(config));
  if (sharedConfigs.size >= MAX_SHARED_CONFIGS) sharedConfigs.delete(sharedConfigs.keys().next().value as string);
  sharedConfigs.set(key, copy);
  return copy;
}

export function configPath(sid?: number): string[] {
  const p: string[] = [...WELL_KNOWN_DOTS, "config"];
  if (sid !== undefined) p.push(`sid=${sid}`);
  return p;
}

/** One shared array: a heartbeat goes out every interval on every session, and nothing changes it. */
const HEARTBEAT_PATH: readonly string[] = Object.freeze([...WELL_KNOWN_DOTS, "hb"]);
/** For a heartbeat whose answer changes nothing (the immediate answer to the home's). */
const IGNORE_ANSWER = (): void => undefined;

/** RFC 9066 section 5.2.2 example: /redirect/cuid=.../mid=... */
export function redirectPath(cuid: string, mid: number): string[] {
  return [...WELL_KNOWN_DOTS, "redirect", `cuid=${cuid}`, `mid=${mid}`];
}

export function isHeartbeatPath(segments: readonly string[]): boolean {
  return segments.length === 3 && segments[0] === ".well-known" && segments[1] === "dots" && segments[2] === "hb";
}

// ------------------------------------------------------------------------------------ bodies

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Accepts either the full JSON view or a bare scope entry (convenient for the CLI) and returns the
 * full view with exactly the caller's scope. lifetime defaults to the RECOMMENDED 3600 when absent.
 */
export function normalizeMitigationRequest(input: unknown): DotsJson {
  if (!isRecord(input)) throw new IspRequestError("INVALID_REQUEST", "mitigation request must be a JSON object");
  let view: Record<string, unknown>;
  if (MITIGATION_SCOPE_KEY in input) view = structuredClone(input);
  else if (SCOPE.targetPrefix in input || SCOPE.sourcePrefix in input)
    view = { [MITIGATION_SCOPE_KEY]: { scope: [structuredClone(input)] } };
  else
    throw new IspRequestError("INVALID_REQUEST", `mitigation request needs "${MITIGATION_SCOPE_KEY}" (or a bare scope with target-prefix)`);
  const ms = view[MITIGATION_SCOPE_KEY];
  if (isRecord(ms) && Array.isArray(ms.scope)) {
    for (const s of ms.scope) if (isRecord(s) && s.lifetime === undefined) s.lifetime = 3600;
  }
  return view;
}

/** The single scope entry of a (normalized) request, or undefined. */
export function scopeOf(request: DotsJson): Record<string, unknown> | undefined {
  const ms = request[MITIGATION_SCOPE_KEY];
  if (!isRecord(ms) || !Array.isArray(ms.scope) || ms.scope.length !== 1 || !isRecord(ms.scope[0])) return undefined;
  return ms.scope[0];
}

/** Efficacy update body (RFC 9132 section 4.4.3): the original parameters plus attack-status. */
export function efficacyBody(original: DotsJson, attackStatus: AttackStatus): DotsJson {
  const copy = structuredClone(original);
  const scope = scopeOf(copy);
  if (!scope) throw new IspRequestError("INVALID_REQUEST", "original request has no single scope entry");
  scope["attack-status"] = attackStatus;
  return copy;
}

export interface RedirectTarget {
  altClient: string;
  records?: string[];
  ttl?: number;
}

/** Call Home redirect body (RFC 9066 section 5.2.2); throws INVALID_REQUEST naming the field. */
export function redirectBody(target: RedirectTarget): DotsJson {
  if (!isFqdn(target?.altClient)) {
    throw new IspRequestError("INVALID_REQUEST", "alt-ch-client must be a domain name (it is also the name the home authenticates)");
  }
  const body: Record<string, unknown> = { [REDIRECT.altClient]: target.altClient };
  if (target.records !== undefined) {
    if (!Array.isArray(target.records) || target.records.some((r) => typeof r !== "string" || isIP(r) === 0)) {
      throw new IspRequestError("INVALID_REQUEST", "alt-ch-client-record must be a list of IP addresses");
    }
    if (target.records.length > 0) body[REDIRECT.altClientRecord] = [...target.records];
  }
  if (target.ttl !== undefined) {
    if (!Number.isInteger(target.ttl) || target.ttl < 0 || target.ttl > 0xffffffff)
      throw new IspRequestError("INVALID_REQUEST", "ttl must be a uint32 (seconds)");
    body[REDIRECT.ttl] = target.ttl;
  }
  return { [REDIRECTED_SIGNAL_KEY]: body };
}

/** Base RFC 9132 redirect (5.03 carrying redirected-signal with alt-server): discarded in Call Home. */
export function isBaseRedirect(code: string, body: unknown): boolean {
  if (code !== "5.03" || !isRecord(body)) return false;
  const r = body[REDIRECTED_SIGNAL_KEY];
  return isRecord(r) && ("alt-server" in r || "alt-server-record" in r);
}

function label(v: unknown, table: Readonly<Record<number, string>>): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number") return table[v] ?? String(v);
  return undefined;
}

export interface ScopeStatus {
  mid?: number;
  status?: string;
  conflictCause?: string;
  /** Seconds before a deactivated request may be sent again (RFC 9132 section 4.4.2.2). */
  retryTimer?: number;
  lifetime?: number;
}

/** Reads the per-mid status entries of a mitigate response or notification. */
export function readScopeStatuses(body: unknown): ScopeStatus[] {
  if (!isRecord(body)) return [];
  const ms = body[MITIGATION_SCOPE_KEY];
  if (!isRecord(ms) || !Array.isArray(ms.scope)) return [];
  const out: ScopeStatus[] = [];
  for (const s of ms.scope) {
    if (!isRecord(s)) continue;
    const entry: ScopeStatus = {};
    if (typeof s.mid === "number") entry.mid = s.mid;
    const st = label(s.status, STATUS_LABELS);
    if (st !== undefined) entry.status = st;
    if (typeof s.lifetime === "number") entry.lifetime = s.lifetime;
    const ci = s["conflict-information"];
    if (isRecord(ci)) {
      const cc = label(ci["conflict-cause"], CONFLICT_CAUSE_LABELS);
      if (cc !== undefined) entry.conflictCause = cc;
      const rt = ci["retry-timer"];
      const n = typeof rt === "number" ? rt : typeof rt === "string" && /^\d+$/.test(rt) ? Number(rt) : undefined;
      if (n !== undefined && n > 0) entry.retryTimer = n;
    }
    out.push(entry);
  }
  return out;
}

// ------------------------------------------------------------------------------------ state

/** What the ISP remembers about one mitigation it asked for, per home identity (survives reconnects). */
export interface MitigationRecord {
  mid: number;
  cuid: string;
  request: DotsJson;
  /** Granted lifetime (s) from the last 2.01/2.04, -1 indefinite. */
  lifetime: number;
  /** Epoch ms when the granted lifetime runs out (Infinity for -1). */
  expiresAt: number;
  status?: string;
  withdrawn: boolean;
}

/** The scope without lifetime and attack-status: what makes two requests "the same request". */
export function scopeKey(request: DotsJson): string {
  const scope = { ...(scopeOf(request) ?? {}) };
  delete scope.lifetime;
  delete scope["attack-status"];
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : isRecord(v)
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sort(v[k])]),
          )
        : v;
  return JSON.stringify(sort(scope));
}

/** Per-identity state that outlives a single connection (mitigations, mid counter is in MidAllocator). */
export class HomeState {
  readonly mitigations = new SparseMap<number, MitigationRecord>();
  /** Deactivated scopes (by scopeKey) and when they may be requested again (retry-timer, R39). */
  readonly retryAfter = new SparseMap<string, number>();

  /** Epoch ms until which this request must not be sent again, if it is held back. */
  heldUntil(request: DotsJson, now = Date.now()): number | undefined {
    const k = scopeKey(request);
    const until = this.retryAfter.get(k);
    if (until === undefined) return undefined;
    if (until <= now) {
      this.retryAfter.delete(k);
      return undefined;
    }
    return until;
  }

  holdBack(request: DotsJson, seconds: number, now = Date.now()): void {
    if (this.retryAfter.size >= 1024) this.retryAfter.delete(this.retryAfter.keys().next().value as string);
    this.retryAfter.set(scopeKey(request), now + seconds * 1000);
  }

  /** Our cuid towards this home after a cuid-collision made us replace the derived one (R19). */
  cuid: string | undefined;

  constructor(
    readonly sessionId: string,
    public home: string,
  ) {}

  activeMids(): Set<number> {
    return new Set(this.mitigations.keys());
  }

  /** R48: an attack was reported and the home has not ended it. */
  attackInProgress(now = Date.now()): boolean {
    for (const m of this.mitigations.values()) if (!m.withdrawn && m.expiresAt > now) return true;
    return false;
  }

  /** Drops records whose granted lifetime has run out. Returns the dropped mids. */
  sweepExpired(now = Date.now()): number[] {
    const gone: number[] = [];
    for (const [mid, m] of this.mitigations) if (m.expiresAt <= now) gone.push(mid);
    for (const mid of gone) this.mitigations.delete(mid);
    return gone;
  }
}

export function outcome(code: string, body: DotsJson | string | undefined, cuid: string, sessionId: string, mid?: number): RequestOutcome {
  const o: RequestOutcome = { code, cuid, sessionId };
  if (body !== undefined) o.body = body;
  if (mid !== undefined) o.mid = mid;
  return o;
}

// ------------------------------------------------------------------------------------ endpoint seam

/** A request as the session asks for it; the engine's adapter maps it onto the CoAP endpoint. */
export interface SessionRequest {
  method: "GET" | "PUT" | "DELETE";
  path: readonly string[];
  confirmable: boolean;
  /** JSON view (the adapter encodes it as application/dots+cbor), or raw CBOR bytes sent as they are. */
  body?: DotsJson | Buffer;
  /** Empty If-Match (efficacy update). */
  ifMatchEmpty?: boolean;
  /** NON repeat interval until answered (RFC 9132: at most one per 3 s without RTT estimate). */
  repeatMs?: number;
  timeoutMs: number;
}

/** A response with its body already decoded (JSON view for CBOR, text for diagnostics). */
export interface SessionResponse {
  code: string;
  body?: DotsJson | string;
  maxAge?: number;
}

export interface SessionIncoming {
  method: string;
  path: string[];
  /** Decoded JSON view, or undefined when the payload was empty. */
  body?: unknown;
  /** Set when the payload could not be decoded; the text says why. */
  bodyError?: string;
  respond(code: string, body?: DotsJson | string): void;
}

export interface SessionEndpoint {
  request(req: SessionRequest): Promise<SessionResponse>;
  /** request() answered through a callback (runs once, never inside the call): the heartbeat path. */
  requestWithCallback(req: SessionRequest, done: (err: Error | undefined, res?: SessionResponse) => void): void;
  observe(req: SessionRequest, onNotification: (res: SessionResponse) => void): { first: Promise<SessionResponse>; cancel(): void };
  onRequest(handler: (req: SessionIncoming) => void): void;
  setTransmissionParameters(p: TransmissionParameters): void;
  /** Called for every message from the peer (liveness). */
  onActivity(listener: () => void): void;
  onClose(listener: (reason: string) => void): void;
  /** CoAP ping (empty CON over DTLS, 7.02 over TLS); resolves with the round trip in ms. */
  ping(): Promise<number>;
  /** True over DTLS: datagrams must be paced by the client (RFC 9132 section 4.4.1). */
  readonly datagram: boolean;
  /** Smoothed round-trip estimate in ms, or undefined before the first sample. */
  rttEstimateMs(): number | undefined;
  close(): void;
}

// ------------------------------------------------------------------------------------ session

export interface IspTuning {
  /** NON repeat interval for mitigation requests, ms. Default 3000 (RFC 9132 section 4.4.1). */
  nonRepeatMs: number;
  /** How long a mitigation request keeps being repeated before failing, ms. Default 60000. */
  requestTimeoutMs: number;
  /** GET /config wait, ms. Default 30000 (CON retransmissions cover loss). */
  configTimeoutMs: number;
  /** Milliseconds per heartbeat second (labs compress time). Default 1000. */
  msPerSecond: number;
  /** R47: send our heartbeat right after each one from the home. Default false. */
  answerHeartbeatsImmediately: boolean;
  /** Re-GET /config before Max-Age runs out while idle (RFC 9132 section 4.5). Default true. */
  refreshConfig: boolean;
}

export const DEFAULT_TUNING: Readonly<IspTuning> = Object.freeze({
  nonRepeatMs: 3000,
  requestTimeoutMs: 60000,
  configTimeoutMs: 30000,
  msPerSecond: 1000,
  answerHeartbeatsImmediately: false,
  refreshConfig: true,
});

export type Validator = (request: DotsJson, homePrefixes: string[] | undefined) => { ok: true } | { ok: false; errors: string[] };

/** Durable mid marks for one home (the engine binds it to the home's identity); absent: memory only. */
export interface MidReservations {
  /** Resolves once `mid` is covered by the stored mark; never rejects (failures are reported). */
  reserve(cuid: string, mid: number, rolledOver: boolean): Promise<void>;
  /** A cuid-collision replaced our cuid: keep the new one across restarts. */
  cuidReplaced(cuid: string): void;
}

/** A mitigation the home reported at session set-up (RFC 9132 GET /mitigate/cuid=...). */
export interface ResyncedMitigation {
  cuid: string;
  mid: number;
  status?: string;
  /** Remaining lifetime the home reported, s (-1 indefinite). */
  lifetime?: number;
  /** The scope entry as the home reported it. */
  scope: DotsJson;
}

export interface ResyncEvent {
  sessionId: string;
  home: string;
  /** Mitigations the home holds for our cuid(s), in mid order; each is observed again. */
  mitigations: ResyncedMitigation[];
  /** False when a GET failed or timed out (error says why); what was learnt still counts. */
  complete: boolean;
  error?: string;
}

/** Most mitigations one resync takes over per home; beyond it only their mids are noted. */
export const MAX_RESYNCED = 1024;

/** Keys a GET /mitigate answer adds to a scope entry that are not part of the request itself. */
const STATUS_ONLY_KEYS = [
  "mid",
  "status",
  "lifetime",
  "conflict-information",
  "mitigation-start",
  "attack-status",
  "bytes-dropped",
  "bps-dropped",
  "pkts-dropped",
  "pps-dropped",
  "total-traffic",
  "total-attack-traffic",
  "total-attack-connection",
  "attack-detail",
];

/** The request (JSON view) that would create this scope entry again: what efficacy updates repeat. */
export function requestFromScopeEntry(entry: Record<string, unknown>): DotsJson {
  const scope = structuredClone(entry);
  for (const k of STATUS_ONLY_KEYS) delete scope[k];
  const lifetime = entry.lifetime;
  scope.lifetime = typeof lifetime === "number" && lifetime !== 0 ? lifetime : 3600;
  return { [MITIGATION_SCOPE_KEY]: { scope: [scope] } };
}

export interface IspSessionOptions {
  info: SessionInfo;
  cuid: string;
  state: HomeState;
  mids: MidAllocator;
  reservations?: MidReservations;
  /** The home's domain prefixes (undefined when none are configured for it). */
  homePrefixes: string[] | undefined;
  validate: Validator;
  tuning: IspTuning;
  /**
   * These events are emitted as they are on `to` (the engine) as well: one reference per
   * session instead of a forwarding listener per event and session.
   */
  relay?: { to: EventEmitter; events: ReadonlySet<keyof IspSessionEvents> };
}

export interface IspSessionEvents {
  up: [SessionInfo];
  down: [string];
  status: [StatusNotification];
  heartbeat: [{ sessionId: string; direction: "in" | "out"; peerHbStatus: boolean }];
  config: [{ sessionId: string; config: DotsJson }];
  discarded: [{ sessionId: string; reason: string }];
  "cuid-changed": [{ sessionId: string; previous: string; cuid: string }];
  resynced: [ResyncEvent];
  error: [Error];
}

/** One live connection from a home. Per-identity state (mitigations, mids) lives in HomeState. */
export class IspSession extends EventEmitter {
  readonly id: string;
  private currentCuid: string;
  readonly info: SessionInfo;
  private readonly state: HomeState;
  private readonly mids: MidAllocator;
  private readonly reservations: MidReservations | undefined;
  private readonly homePrefixes: string[] | undefined;
  private readonly validate: Validator;
  private readonly tuning: IspTuning;
  private readonly relay: IspSessionOptions["relay"];
  private sets: Record<ConfigSetName, ConfigSet> = { idle: { ...DEFAULT_CONFIG_SET }, mitigating: { ...DEFAULT_CONFIG_SET } };
  private heartbeat: HeartbeatScheduler;
  /** When we last answered a heartbeat at once (one immediate answer per interval at most). */
  private lastHeartbeatAnswerAt = -Infinity;
  private readonly observations = new SparseMap<number, () => void>();
  private readonly timers = new SparseSet<NodeJS.Timeout>();
  private readonly pending = new SparseSet<(err: Error) => void>();
  private closedReason: string | undefined;
  private upEmitted = false;
  /** Any valid CoAP message from the home since the handshake. */
  private heardFromHome = false;
  /** Earliest time (epoch ms) the next new mitigation-family request may go out over DTLS. */
  private nextRequestSlot = 0;
  /** The configuration set whose values are in force now. */
  private activeSetName: ConfigSetName = "idle";

  constructor(
    private readonly endpoint: SessionEndpoint,
    opts: IspSessionOptions,
  ) {
    super();
    this.id = opts.info.id;
    this.currentCuid = opts.cuid;
    this.info = opts.info;
    this.state = opts.state;
    this.mids = opts.mids;
    this.reservations = opts.reservations;
    this.homePrefixes = opts.homePrefixes;
    this.validate = opts.validate;
    this.tuning = opts.tuning;
    this.relay = opts.relay;
    this.activeSetName = this.state.attackInProgress() ? "mitigating" : "idle";
    this.heartbeat = this.makeHeartbeat(this.activeSet());
    endpoint.onActivity(() => {
      this.heardFromHome = true;
      this.heartbeat.traffic();
    });
    endpoint.onClose((reason) => this.down(reason));
    endpoint.onRequest((req) => this.handleIncoming(req));
  }

  /** The cuid new requests use; existing mitigations keep the cuid they were created with. */
  get cuid(): string {
    return this.currentCuid;
  }

  get isUp(): boolean {
    return this.closedReason === undefined;
  }

  get negotiated(): Record<ConfigSetName, ConfigSet> {
    return { idle: { ...this.sets.idle }, mitigating: { ...this.sets.mitigating } };
  }

  /** The set in force: mitigating-config while an attack is in progress (R46). */
  private activeSet(): ConfigSet {
    return this.sets[this.state.attackInProgress() ? "mitigating" : "idle"];
  }

  private makeHeartbeat(set: ConfigSet): HeartbeatScheduler {
    const hb = new HeartbeatScheduler({
      intervalSeconds: set.heartbeatInterval,
      missingHbAllowed: Math.max(1, set.missingHbAllowed),
      msPerSecond: this.tuning.msPerSecond,
      send: (body, answered) => this.sendHeartbeat(body, answered),
    });
    hb.on("lost", ({ silentMs }) => {
      // R48: after reporting an attack the ISP keeps using the session even if nothing arrives.
      if (this.state.attackInProgress()) {
        hb.start();
        return;
      }
      this.close(`heartbeat loss: nothing from the home for ${silentMs} ms`);
    });
    return hb;
  }

  /** Session set-up: GET /config (CON), use the negotiated values, start heartbeats (R42, R45). */
  async start(): Promise<void> {
    await this.fetchConfig(true);
    if (!this.isUp) return;
    this.heartbeat.start();
    // No RTT sample yet (the GET /config needed a retransmission): one CoAP ping gives one, so new
    // requests are paced per RTT rather than one per 3 s (R21).
    if (this.endpoint.datagram && this.endpoint.rttEstimateMs() === undefined) void this.endpoint.ping().catch(() => undefined);
    // Learn what the home still holds before anyone can send: a listener that restarted or took
    // over this home continues above its mids instead of colliding with them.
    const resync = await this.resync();
    if (!this.isUp) return;
    this.upEmitted = true;
    this.emit("up", this.info);
    this.emit("resynced", resync);
    // Observe every mitigation again (learnt now or held from before a reconnect): each first
    // answer is a 'status' event; one the home no longer has answers 4.04 and is forgotten.
    for (const rec of [...this.state.mitigations.values()].sort((a, b) => a.mid - b.mid)) this.startObserve(rec.mid);
  }

  /**
   * RFC 9132 section 4.4.2: GET /mitigate/cuid=X (no mid) answers every mitigation of the cuid
   * (Block2 when large; the CoAP layer reassembles). Each one becomes a record, and the mid
   * allocator and the durable mark move above the highest mid seen.
   */
  private async resync(): Promise<ResyncEvent> {
    const out: ResyncEvent = { sessionId: this.id, home: this.info.home, mitigations: [], complete: true };
    const cuids = new Set<string>([this.cuid]);
    for (const rec of this.state.mitigations.values()) cuids.add(rec.cuid);
    const failures: string[] = [];
    for (const cuid of cuids) {
      let res: SessionResponse;
      try {
        res = await this.exchange(
          { method: "GET", path: mitigatePath(cuid), confirmable: false, repeatMs: this.tuning.nonRepeatMs },
          this.tuning.configTimeoutMs,
        );
      } catch (e) {
        if (!this.isUp) return out;
        failures.push(`GET /mitigate/cuid=${cuid}: ${(e as Error).message}`);
        continue;
      }
      if (res.code === "4.04") continue; // nothing active for this cuid
      if (res.code !== "2.05") {
        failures.push(`GET /mitigate/cuid=${cuid} answered ${res.code}${typeof res.body === "string" ? ` (${res.body})` : ""}`);
        continue;
      }
      const ms = isRecord(res.body) ? res.body[MITIGATION_SCOPE_KEY] : undefined;
      const entries = isRecord(ms) && Array.isArray(ms.scope) ? ms.scope : [];
      let highest: number | undefined;
      for (const raw of entries) {
        if (!isRecord(raw) || typeof raw.mid !== "number" || !Number.isInteger(raw.mid) || raw.mid < 0 || raw.mid > 0xffffffff) continue;
        const mid = raw.mid;
        const [st] = readScopeStatuses({ [MITIGATION_SCOPE_KEY]: { scope: [raw] } });
        highest = highest === undefined ? mid : Math.max(highest, mid);
        this.mids.note(this.id, cuid, mid);
        const found: ResyncedMitigation = { cuid, mid, scope: structuredClone(raw) };
        if (st?.status !== undefined) found.status = st.status;
        if (st?.lifetime !== undefined) found.lifetime = st.lifetime;
        if (out.mitigations.length >= MAX_RESYNCED) {
          // A home reporting more than any home keeps: its mids still count, the rest is not held.
          if (!failures.some((f) => f.startsWith("more than")))
            failures.push(`more than ${MAX_RESYNCED} mitigations reported; only the first ${MAX_RESYNCED} are observed`);
          continue;
        }
        out.mitigations.push(found);
        if (st?.status !== undefined && FINAL_STATUSES.has(st.status)) continue;
        this.adopt(cuid, mid, raw, st);
      }
      if (highest !== undefined && this.reservations) await this.reservations.reserve(cuid, highest, false);
    }
    out.mitigations.sort((a, b) => a.mid - b.mid);
    if (failures.length > 0) {
      out.complete = false;
      out.error = failures.join("; ");
      this.emit("error", new Error(`resync with ${this.info.home}: ${out.error}`));
    }
    if (this.state.attackInProgress() !== (this.activeSetName === "mitigating")) this.reapply();
    return out;
  }

  /** Takes a mitigation the home reported as ours; a record held from before keeps its request. */
  private adopt(cuid: string, mid: number, raw: Record<string, unknown>, st: ScopeStatus | undefined): void {
    const lifetime = st?.lifetime ?? 3600;
    const prev = this.state.mitigations.get(mid);
    const rec: MitigationRecord = {
      mid,
      cuid,
      request: prev && prev.cuid === cuid ? prev.request : requestFromScopeEntry(raw),
      lifetime,
      expiresAt: lifetime < 0 ? Infinity : Date.now() + lifetime * 1000,
      // Status 5: we withdrew it and the home is still terminating it.
      withdrawn: st?.status === "dots-client-withdrawn-mitigation" || (prev?.withdrawn ?? false),
    };
    const status = st?.status ?? prev?.status;
    if (status !== undefined) rec.status = status;
    this.state.mitigations.set(mid, rec);
    this.armExpiry(mid);
  }

  /** Next mid for `cuid`, stored durably (when there is a state directory) before it is used. */
  private async allocateMid(cuid: string): Promise<number> {
    const prev = this.mids.current(this.id, cuid);
    const mid = this.mids.next(this.id, cuid, this.state.activeMids());
    if (this.reservations) await this.track(this.reservations.reserve(cuid, mid, prev !== undefined && mid < prev));
    this.ensureUp();
    return mid;
  }

  /**
   * GET /config. The first time, a failure falls back to the RFC 9132 defaults; a failed refresh
   * keeps the values in force and tries again later.
   */
  private async fetchConfig(initial: boolean): Promise<void> {
    const fallback = (why: string): void => {
      if (initial) {
        this.emit("error", new Error(`${why}; using RFC 9132 defaults`));
        this.applySets({ idle: { ...DEFAULT_CONFIG_SET }, mitigating: { ...DEFAULT_CONFIG_SET } });
      } else {
        this.emit("error", new Error(`${why}; keeping the negotiated values`));
        this.scheduleConfigRefresh(undefined);
      }
    };
    try {
      const res = await this.track(
        this.endpoint.request({ method: "GET", path: configPath(), confirmable: true, timeoutMs: this.tuning.configTimeoutMs }),
      );
      if (res.code !== "2.05" || typeof res.body !== "object") return fallback(`GET /config answered ${res.code}`);
      let sets: Record<ConfigSetName, ConfigSet>;
      try {
        sets = negotiatedSetsFromJson(res.body);
      } catch (e) {
        return fallback(`GET /config body unusable (${(e as Error).message})`);
      }
      this.applySets(sets);
      this.info.config = sharedConfig(res.body);
      this.emit("config", { sessionId: this.id, config: res.body });
      this.scheduleConfigRefresh(res.maxAge);
    } catch (e) {
      if (!this.isUp) return;
      // Not one message since the handshake: the home gave up on this session (a handshake that
      // completed here after it timed out there, say) and may already hold another one.
      if (initial && !this.heardFromHome) {
        this.close(`the home sent nothing after the handshake (GET /config: ${(e as Error).message})`);
        return;
      }
      fallback(`GET /config failed (${(e as Error).message})`);
    }
  }

  private scheduleConfigRefresh(maxAge: number | undefined): void {
    if (!this.tuning.refreshConfig) return;
    // Refresh before Max-Age runs out, or every 60 s without one; 2^32-1 means never (RFC 9132 4.5).
    if (maxAge === 0xffffffff) return;
    const seconds = maxAge === undefined ? 60 : Math.max(1, maxAge - Math.min(5, maxAge / 10));
    this.later(seconds * this.tuning.msPerSecond, () => {
      // No config refresh during an attack (R46); try again later.
      if (this.state.attackInProgress()) return this.scheduleConfigRefresh(maxAge);
      void this.fetchConfig(false);
    });
  }

  /** Takes a new configuration; values the endpoint or scheduler refuse leave the old one in force. */
  private applySets(sets: Record<ConfigSetName, ConfigSet>): void {
    const before = this.sets;
    this.sets = sets;
    try {
      this.reapply();
    } catch (e) {
      this.sets = before;
      this.reapply();
      throw e;
    }
  }

  /** Switches transmission parameters and heartbeat timing to the set now in force (R46). */
  private reapply(): void {
    this.activeSetName = this.state.attackInProgress() ? "mitigating" : "idle";
    const set = this.sets[this.activeSetName];
    this.endpoint.setTransmissionParameters(toTransmissionParameters(set));
    this.heartbeat.reconfigure(set.heartbeatInterval, Math.max(1, set.missingHbAllowed));
  }

  /** NON PUT /hb; `answered` learns whether a 2.04 came back in time (never inside this call). */
  private sendHeartbeat(body: DotsJson, answered: (ok: boolean) => void): void {
    if (!this.isUp) {
      queueMicrotask(() => answered(false));
      return;
    }
    const peer = (body as Record<string, Record<string, unknown>>)[HEARTBEAT_KEY]?.["peer-hb-status"] === true;
    this.emit("heartbeat", { sessionId: this.id, direction: "out", peerHbStatus: peer });
    this.endpoint.requestWithCallback(
      {
        method: "PUT",
        path: HEARTBEAT_PATH,
        confirmable: false,
        body: encodedHeartbeat(peer),
        timeoutMs: Math.max(1000, this.heartbeat.intervalMs),
      },
      (err, res) => answered(err === undefined && res?.code === "2.04"),
    );
  }

  private handleIncoming(req: SessionIncoming): void {
    try {
      if (!isHeartbeatPath(req.path)) {
        // The ISP side serves only /hb (R14); everything else is for the home side.
        req.respond("4.04", `no resource /${req.path.join("/")} on the Call Home DOTS client`);
        return;
      }
      if (req.method !== "PUT") {
        req.respond("4.05", "only PUT is allowed on /.well-known/dots/hb");
        return;
      }
      if (req.bodyError !== undefined) {
        req.respond("4.00", `heartbeat body: ${req.bodyError}`);
        return;
      }
      let parsed: { peerHbStatus: boolean };
      try {
        parsed = parseHeartbeatJson(req.body);
      } catch (e) {
        req.respond("4.00", (e as Error).message);
        return;
      }
      this.heartbeat.peerHeartbeat();
      req.respond("2.04");
      this.emit("heartbeat", { sessionId: this.id, direction: "in", peerHbStatus: parsed.peerHbStatus });
      // R47: MAY answer with our own heartbeat; do so when asked, or when the home says ours are not arriving.
      // At most one immediate answer per heartbeat interval: a burst of queued stale heartbeats
      // must not become a burst of ours (issue #12 finding 10).
      if (this.tuning.answerHeartbeatsImmediately || !parsed.peerHbStatus) {
        const now = Date.now();
        if (now - this.lastHeartbeatAnswerAt >= this.heartbeat.intervalMs) {
          this.lastHeartbeatAnswerAt = now;
          this.sendHeartbeat({ [HEARTBEAT_KEY]: { "peer-hb-status": true } }, IGNORE_ANSWER);
        }
      }
    } catch (e) {
      this.emit("error", e as Error);
    }
  }

  // -------------------------------------------------------------------------------- requests

  private ensureUp(): void {
    if (!this.isUp) throw new IspRequestError("SESSION_DOWN", `session ${this.id} (${this.info.home}) is down: ${this.closedReason}`);
  }

  /** Rejects with SESSION_DOWN if the session goes away while the promise is pending. */
  private track<T>(p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = (err: Error): void => reject(err);
      this.pending.add(fail);
      p.then(
        (v) => {
          this.pending.delete(fail);
          resolve(v);
        },
        (e) => {
          this.pending.delete(fail);
          reject(this.isUp ? e : new IspRequestError("SESSION_DOWN", `session ${this.id} went down: ${this.closedReason}`));
        },
      );
    });
  }

  /**
   * Sends a mitigation-family request; base 5.03 redirects are discarded silently and the request
   * keeps being repeated until the deadline (R51).
   */
  private async exchange(req: Omit<SessionRequest, "timeoutMs">, timeoutMs = this.tuning.requestTimeoutMs): Promise<SessionResponse> {
    const deadline = Date.now() + timeoutMs;
    let sentAt: number | undefined;
    await this.paceNewRequest();
    for (;;) {
      // A discarded answer counts as no answer: the next copy waits for the NON repeat slot, so a
      // home that keeps sending 5.03 cannot make us send faster than one per repeat interval (R21).
      if (sentAt !== undefined) {
        const wait = Math.min(sentAt + (req.repeatMs ?? this.tuning.nonRepeatMs), deadline) - Date.now();
        if (wait > 0) await this.track(new Promise<void>((resolve) => this.later(wait, resolve, resolve)));
        this.ensureUp();
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new IspRequestError("TIMEOUT", `no answer to ${req.method} /${req.path.join("/")} within ${timeoutMs} ms`);
      let res: SessionResponse;
      sentAt = Date.now();
      try {
        res = await this.track(this.endpoint.request({ ...req, timeoutMs: left }));
      } catch (e) {
        if (e instanceof IspRequestError) throw e;
        const c = (e as { code?: string }).code;
        if (c !== "TIMEOUT" && !this.isUp) throw new IspRequestError("SESSION_DOWN", `session ${this.id} went down: ${this.closedReason}`);
        const mapped: IspErrorCode =
          c === "TIMEOUT" ? "TIMEOUT" : c === "CLOSED" || c === "RELEASED" || c === "ABORTED" ? "SESSION_DOWN" : "COAP_ERROR";
        throw new IspRequestError(mapped, `${req.method} /${req.path.join("/")}: ${(e as Error).message}`);
      }
      if (isBaseRedirect(res.code, res.body)) {
        this.emit("discarded", { sessionId: this.id, reason: "base 5.03 redirect (RFC 9066 section 5.2.2)" });
        continue;
      }
      return res;
    }
  }

  /**
   * R21: over DTLS, new requests leave at most one per RTT (one per repeat interval, 3 s by
   * default, without an estimate), however many the caller starts at once. Slots are taken in
   * call order, so concurrent requests keep their order.
   */
  private async paceNewRequest(): Promise<void> {
    if (!this.endpoint.datagram) return;
    const now = Date.now();
    const gap = this.endpoint.rttEstimateMs() ?? this.tuning.nonRepeatMs;
    const at = Math.max(now, this.nextRequestSlot);
    this.nextRequestSlot = at + gap;
    const wait = Math.ceil(at - now);
    if (wait > 0) {
      await this.track(new Promise<void>((resolve) => this.later(wait, resolve, resolve)));
      this.ensureUp();
    }
  }

  async mitigate(input: unknown, opts: { mid?: number; observe?: boolean } = {}): Promise<RequestOutcome> {
    this.ensureUp();
    const request = normalizeMitigationRequest(input);
    const check = this.validate(request, this.homePrefixes);
    if (!check.ok) throw new IspRequestError("INVALID_REQUEST", `invalid mitigation request: ${check.errors.join("; ")}`, check.errors);
    const held = this.state.heldUntil(request);
    if (held !== undefined) {
      throw new IspRequestError(
        "RETRY_TIMER",
        `the home deactivated this request; it may be sent again in ${Math.ceil((held - Date.now()) / 1000)} s (retry-timer, RFC 9132 section 4.4.2.2)`,
      );
    }
    let mid: number;
    if (opts.mid !== undefined) {
      if (!Number.isInteger(opts.mid) || opts.mid < 0 || opts.mid > 0xffffffff)
        throw new IspRequestError("INVALID_REQUEST", "mid must be a uint32");
      mid = opts.mid;
      this.mids.note(this.id, this.cuid, mid);
      if (this.reservations) await this.track(this.reservations.reserve(this.cuid, mid, false));
    } else mid = await this.allocateMid(this.cuid);
    return this.putMitigation(mid, request, opts.observe ?? true);
  }

  /**
   * Sends a PUT without client-side validation (tests and interop probes use it to check how the
   * home rejects bad fields). The body is sent as given.
   */
  async mitigateRaw(mid: number, body: DotsJson | Buffer, opts: { ifMatchEmpty?: boolean; path?: string[] } = {}): Promise<RequestOutcome> {
    this.ensureUp();
    const res = await this.exchange({
      method: "PUT",
      path: opts.path ?? mitigatePath(this.cuid, mid),
      confirmable: false,
      body,
      ifMatchEmpty: opts.ifMatchEmpty,
      repeatMs: this.tuning.nonRepeatMs,
    });
    return outcome(res.code, res.body, this.cuid, this.id, mid);
  }

  private async putMitigation(mid: number, request: DotsJson, observe: boolean, afterCollision = false): Promise<RequestOutcome> {
    const cuid = this.cuid;
    const res = await this.exchange({
      method: "PUT",
      path: mitigatePath(cuid, mid),
      confirmable: false,
      body: request,
      repeatMs: this.tuning.nonRepeatMs,
    });
    if (res.code === "4.09" && !afterCollision && readScopeStatuses(res.body).some((e) => e.conflictCause === "cuid-collision")) {
      // R19: another client uses our cuid at this home. Take a new one (kept for this identity
      // across reconnects) and send the request once more under it; a second collision is returned.
      this.replaceCuid(cuid);
      return this.putMitigation(await this.allocateMid(this.cuid), request, observe, true);
    }
    const conflict = readScopeStatuses(res.body).find((e) => e.retryTimer !== undefined);
    if (conflict?.retryTimer !== undefined) this.state.holdBack(request, conflict.retryTimer);
    if (res.code === "2.01" || res.code === "2.04") {
      const granted = readScopeStatuses(res.body).find((s) => s.mid === mid || s.mid === undefined);
      const lifetime = granted?.lifetime ?? (scopeOf(request)?.lifetime as number) ?? 3600;
      const wasIdle = !this.state.attackInProgress();
      const prev = this.state.mitigations.get(mid);
      this.state.mitigations.set(mid, {
        mid,
        cuid,
        request,
        lifetime,
        expiresAt: lifetime < 0 ? Infinity : Date.now() + lifetime * 1000,
        status: granted?.status ?? prev?.status,
        withdrawn: false,
      });
      this.armExpiry(mid);
      if (wasIdle) this.reapply();
      if (observe && !this.observations.has(mid)) this.startObserve(mid);
    }
    return outcome(res.code, res.body, cuid, this.id, mid);
  }

  private replaceCuid(previous: string): void {
    if (this.currentCuid !== previous) return;
    this.currentCuid = freshCuid();
    this.state.cuid = this.currentCuid;
    this.reservations?.cuidReplaced(this.currentCuid);
    this.emit("cuid-changed", { sessionId: this.id, previous, cuid: this.currentCuid });
  }

  /** The cuid a mitigation was created under (the current one for mids we do not hold). */
  private cuidOf(mid: number | undefined): string {
    return (mid !== undefined ? this.state.mitigations.get(mid)?.cuid : undefined) ?? this.cuid;
  }

  /** Forgets a record once its granted lifetime has passed without refresh (R31 mirror). */
  private armExpiry(mid: number): void {
    const rec = this.state.mitigations.get(mid);
    if (!rec || rec.expiresAt === Infinity) return;
    const wait = Math.max(0, rec.expiresAt - Date.now()) + 50;
    if (wait > 0x7fffffff) return;
    this.later(wait, () => {
      const now = this.state.mitigations.get(mid);
      if (now && now.expiresAt <= Date.now()) this.forget(mid);
    });
  }

  private forget(mid: number): void {
    // Not attackInProgress() before the delete: an expired record no longer counts, yet the
    // mitigating set is still in force and must be switched back (R46).
    const wasActive = this.activeSetName === "mitigating";
    this.state.mitigations.delete(mid);
    const cancel = this.observations.get(mid);
    if (cancel) {
      this.observations.delete(mid);
      cancel();
    }
    if (wasActive && !this.state.attackInProgress()) this.reapply();
  }

  /** Observe one mitigation's status (GET with Observe 0); every notification becomes a 'status' event. */
  private startObserve(mid: number): void {
    if (!this.isUp || this.observations.has(mid)) return;
    const req: SessionRequest = {
      method: "GET",
      path: mitigatePath(this.cuidOf(mid), mid),
      confirmable: false,
      repeatMs: this.tuning.nonRepeatMs,
      timeoutMs: this.tuning.requestTimeoutMs,
    };
    let handle: { first: Promise<SessionResponse>; cancel(): void };
    try {
      handle = this.endpoint.observe(req, (res) => this.notification(mid, res));
    } catch (e) {
      this.emit("error", e as Error);
      return;
    }
    this.observations.set(mid, () => handle.cancel());
    handle.first.then(
      (res) => this.notification(mid, res),
      (e) => {
        this.observations.delete(mid);
        if (this.isUp) this.emit("error", new Error(`observe mid ${mid}: ${(e as Error).message}`));
      },
    );
  }

  private notification(mid: number, res: SessionResponse): void {
    try {
      if (isBaseRedirect(res.code, res.body)) {
        this.emit("discarded", { sessionId: this.id, reason: "base 5.03 redirect in a notification (RFC 9066 section 5.2.2)" });
        return;
      }
      const body: DotsJson = typeof res.body === "object" && res.body !== null ? res.body : { code: res.code, diagnostic: res.body ?? "" };
      const entries = res.code === "2.05" ? readScopeStatuses(res.body) : [];
      const entry = entries.find((e) => e.mid === mid) ?? entries[0];
      const n: StatusNotification = { sessionId: this.id, cuid: this.cuidOf(mid), mid, body };
      if (entry?.status !== undefined) n.status = entry.status;
      if (entry?.conflictCause !== undefined) n.conflictCause = entry.conflictCause;
      const rec = this.state.mitigations.get(mid);
      if (rec && entry?.retryTimer !== undefined) this.state.holdBack(rec.request, entry.retryTimer);
      if (rec && entry) {
        if (entry.status !== undefined) rec.status = entry.status;
        if (typeof entry.lifetime === "number") rec.expiresAt = entry.lifetime < 0 ? Infinity : Date.now() + entry.lifetime * 1000;
      }
      this.emit("status", n);
      // The home ended it (4.04 once gone, or a final status): stop observing and forget it.
      if (res.code !== "2.05" || (entry?.status !== undefined && FINAL_STATUSES.has(entry.status))) this.forget(mid);
    } catch (e) {
      this.emit("error", e as Error);
    }
  }

  async withdraw(mid: number): Promise<RequestOutcome> {
    this.ensureUp();
    const cuid = this.cuidOf(mid);
    const res = await this.exchange({
      method: "DELETE",
      path: mitigatePath(cuid, mid),
      confirmable: false,
      repeatMs: this.tuning.nonRepeatMs,
    });
    const rec = this.state.mitigations.get(mid);
    if (res.code === "2.02" && rec) {
      // Keep observing: the home may report status 5 (active-but-terminating) before it is gone.
      rec.withdrawn = true;
      if (!this.observations.has(mid)) this.forget(mid);
      else if (!this.state.attackInProgress()) this.reapply();
    }
    return outcome(res.code, res.body, cuid, this.id, mid);
  }

  async get(mid?: number): Promise<RequestOutcome> {
    this.ensureUp();
    const cuid = this.cuidOf(mid);
    const res = await this.exchange({
      method: "GET",
      path: mitigatePath(cuid, mid),
      confirmable: false,
      repeatMs: this.tuning.nonRepeatMs,
    });
    if (mid !== undefined && res.code === "4.04" && this.state.mitigations.has(mid)) this.forget(mid);
    return outcome(res.code, res.body, cuid, this.id, mid);
  }

  async efficacy(mid: number, attackStatus: AttackStatus): Promise<RequestOutcome> {
    this.ensureUp();
    if (attackStatus !== "under-attack" && attackStatus !== "attack-successfully-mitigated") {
      throw new IspRequestError("INVALID_REQUEST", `attack-status must be "under-attack" or "attack-successfully-mitigated"`);
    }
    const rec = this.state.mitigations.get(mid);
    if (!rec) throw new IspRequestError("UNKNOWN_MITIGATION", `no active mitigation mid ${mid} on session ${this.id}`);
    const res = await this.exchange({
      method: "PUT",
      path: mitigatePath(rec.cuid, mid),
      confirmable: false,
      body: efficacyBody(rec.request, attackStatus),
      ifMatchEmpty: true,
      repeatMs: this.tuning.nonRepeatMs,
    });
    return outcome(res.code, res.body, rec.cuid, this.id, mid);
  }

  /** CoAP-level round trip over this session's connection, ms (a transport reference for benches). */
  async ping(): Promise<number> {
    this.ensureUp();
    return this.track(this.endpoint.ping());
  }

  async redirect(target: RedirectTarget): Promise<RequestOutcome> {
    this.ensureUp();
    const body = redirectBody(target);
    const mid = await this.allocateMid(this.cuid);
    const res = await this.exchange({
      method: "PUT",
      path: redirectPath(this.cuid, mid),
      confirmable: false,
      body,
      repeatMs: this.tuning.nonRepeatMs,
    });
    return outcome(res.code, res.body, this.cuid, this.id, mid);
  }

  // -------------------------------------------------------------------------------- lifecycle

  /** Runs fn after ms while the session is up; onDown instead when it went down meanwhile. */
  private later(ms: number, fn: () => void, onDown?: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.isUp) fn();
      else onDown?.();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  /** Ends the session: stops timers and observations, closes the connection, emits 'down' once. */
  close(reason = "closed"): void {
    if (!this.isUp) return;
    this.closedReason = reason;
    this.teardown();
    try {
      this.endpoint.close();
    } catch {
      // closing an already-dead connection is fine
    }
    this.finish(reason);
  }

  private down(reason: string): void {
    if (!this.isUp) return;
    this.closedReason = reason;
    this.teardown();
    this.finish(reason);
  }

  private teardown(): void {
    this.heartbeat.stop();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const cancel of this.observations.values()) {
      try {
        cancel();
      } catch {
        // the connection is going away anyway
      }
    }
    this.observations.clear();
    const err = new IspRequestError("SESSION_DOWN", `session ${this.id} went down: ${this.closedReason}`);
    for (const fail of this.pending) fail(err);
    this.pending.clear();
  }

  private finish(reason: string): void {
    this.emit("down", reason);
  }

  get wasUp(): boolean {
    return this.upEmitted;
  }

  override on<E extends keyof IspSessionEvents>(event: E, listener: (...args: IspSessionEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override emit<E extends keyof IspSessionEvents>(event: E, ...args: IspSessionEvents[E]): boolean {
    const relay = this.relay;
    if (relay !== undefined && relay.events.has(event)) {
      relay.to.emit(event, ...args);
      // An 'error' relayed is handled: without a listener of its own the session must not throw.
      if (this.listenerCount(event) === 0) return true;
    }
    return super.emit(event, ...args);
  }
}
