// The CoAP resources the home side serves as Call Home DOTS server (RFC 9132 sections 4.4, 4.5,
// 4.7; RFC 9066 section 5): /mitigate, /config, /hb and /redirect, plus the decision hand-off
// to the outside world. It works on a small request seam (ResourceRequest) that the engine maps
// onto the CoAP endpoint, so every answer path is testable without sockets.
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import { diagnosticResponse } from "../coap/endpoint";
import { Code, CONTENT_FORMAT_DOTS_CBOR, CONTENT_FORMAT_TEXT, codeToString } from "../coap/message";
import type { Decision, DotsJson, DropMetricsSource, MitigationEnded, MitigationEvent } from "./api";
import { HEARTBEAT_KEY, parseHeartbeatJson } from "./heartbeat";
import { Mitigation, MitigationStore, RemovalReason, sameScope } from "./mitigation-store";
import { PrefixSyntaxError, parsePrefix } from "./prefixes";
import { SessionConfig } from "./session-config";
import { type MitigationScope, validateMitigationRequest } from "./validation";
import {
  CONFLICT_CAUSE_LABELS,
  DROPPED,
  MITIGATION_SCOPE_KEY,
  MitigationStatus,
  REDIRECT,
  REDIRECTED_SIGNAL_KEY,
  STATUS_LABELS,
  isFqdn,
} from "./vocabulary";

export { MITIGATION_SCOPE_KEY, REDIRECTED_SIGNAL_KEY };

/** What the engine's adapter hands in for one incoming CoAP request. */
export interface ResourceRequest {
  /** Method code byte (Code.GET, Code.PUT, ...). */
  method: number;
  /** Uri-Path segments. */
  path: string[];
  contentFormat?: number;
  payload: Buffer;
  /** Values of every If-Match option (an efficacy update carries one empty value). */
  ifMatch?: Buffer[];
  /** Observe option value, if present (0 register, 1 deregister). */
  observe?: number;
  respond(res: ResourceResponse): void;
  /** Ends the exchange with no response at all (silently ignored requests). */
  ignore?(): void;
  /** Present when the transport can keep an observation for this request. */
  acceptObserve?(): ResourceObserver;
  /** Who the authenticated peer is (a stable key of its PSK identity or certificate); cuids are bound to it. */
  peer?: string;
}

export interface ResourceResponse {
  code: number;
  payload?: Buffer;
  contentFormat?: number;
  maxAge?: number;
}

export interface ResourceObserver {
  notify(res: ResourceResponse): void;
  readonly active: boolean;
  onCancel(listener: () => void): void;
  cancel(): void;
}

export interface DotsCodec {
  encode(json: DotsJson): Buffer;
  /** Throws an Error whose message is a fit diagnostic (DotsCborError). */
  decode(bytes: Buffer): DotsJson;
}

/** One validation failure, naming the field and the rule it broke. */
export interface FieldError {
  field: string;
  rule: string;
  message: string;
}

/** Mitigation request validator (src/dots/validation.ts has the full one): the typed scope, or every bad field. */
export type MitigationValidator = (
  request: DotsJson,
) => { ok: true; scope: DotsJson; typed: MitigationScope } | { ok: false; errors: FieldError[] };

export interface RedirectTarget {
  altClient: string;
  records: string[];
  ttl?: number;
}

export interface HomeResourcesOptions {
  store: MitigationStore;
  config: SessionConfig;
  codec: DotsCodec;
  /** Home domain prefixes: every source-prefix must lie inside one (RFC 9066 section 5.3.1). */
  homePrefixes: string[];
  /**
   * Whether lifetime -1 is granted as indefinite (the store must allow it too). When false, a -1
   * request is still accepted but granted the store's finite fallback, returned in the answer
   * (RFC 9132 section 4.4.1: the server MAY refuse an indefinite lifetime; the granted lifetime
   * is returned, and clients must be prepared for that).
   */
  allowIndefiniteLifetime?: boolean;
  /** How long a new request waits for decide() before 2.01 with status 1, ms. Default 1000. */
  decisionWaitMs?: number;
  /** retry-timer of a 4.09 that rejects a request as legitimate traffic, seconds. Default 300. */
  legitimateRetryS?: number;
  /** Periodic status notifications to observers, ms; 0 turns them off. Default 60 000. */
  statusPeriodMs?: number;
  /**
   * Minimum spacing of notifications to one observer, ms, or a function asked each time (the
   * engine's transport-aware policy, notificationSpacingMs); changes in between are merged
   * (latest state of each mid). Default 0 (immediate).
   */
  notifyMinIntervalMs?: number | (() => number);
  /** Field-rule validation run before the home-side checks. Default: validateMitigationRequest (side "home"). */
  validate?: MitigationValidator;
  /**
   * Asked whether a redirect can be honoured; resolve undefined to accept (2.01, then the engine
   * closes and reconnects on 'redirect'), or a reason text for 4.00. Without it, redirects get 4.00.
   */
  canRedirect?: (target: RedirectTarget) => Promise<string | undefined>;
  /**
   * Makes the store's current state durable; every /mitigate answer that acknowledges state waits
   * for it. A rejection becomes 5.03 with its message (state that cannot be kept is not acknowledged).
   */
  persist?: () => Promise<void>;
  /** Counters of what each mitigation dropped (the enforcer); without it no *-dropped attributes. */
  metrics?: DropMetricsSource;
}

/** A GET waits at most this long for fresh counters, then answers with the last ones read. */
const METRICS_WAIT_MS = 500;

export interface HomeResourcesEvents {
  mitigation: [MitigationEvent];
  ended: [MitigationEnded];
  heartbeat: [{ peerHbStatus: boolean }];
  /** Emitted after the 2.01 to an accepted redirect was sent. */
  redirect: [RedirectTarget];
  /** A response or notification could not be built (never for peer input). */
  error: [Error];
}

interface PendingAnswer {
  requests: ResourceRequest[];
  timer?: NodeJS.Timeout;
}

interface ObserverEntry {
  cuid: string;
  mid?: number;
  handle: ResourceObserver;
  /** Mitigations changed since the last notification (latest state wins). */
  queued: Map<number, Mitigation>;
  lastSent: number;
  timer?: NodeJS.Timeout;
}

const MAX_OBSERVERS = 64;
/** Repeats of one unanswered PUT held for the decision; later ones are answered at once. */
const MAX_WAITING_REPEATS = 8;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function text(code: number, diagnostic: string): ResourceResponse {
  // Capped: a request listing many bad prefixes must not get an answer too big for one datagram.
  return diagnosticResponse(code, diagnostic);
}

class BadRequest extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Parses the Uri-Path segments after /mitigate: [cdid=...] cuid=... [mid=...]. */
export function parseMitigatePath(segments: readonly string[]): { cuid: string; mid?: number } {
  let i = 0;
  const take = (name: string): string | undefined => {
    const s = segments[i];
    if (s === undefined || !s.startsWith(`${name}=`)) return undefined;
    i++;
    const v = s.slice(name.length + 1);
    if (v.length === 0) throw new BadRequest(Code.BadRequest, `empty ${name} in Uri-Path`);
    return v;
  };
  take("cdid"); // inserted by server-domain gateways; a client's cdid is ignored (RFC 9132 4.4.1)
  const cuid = take("cuid");
  if (cuid === undefined) throw new BadRequest(Code.BadRequest, "missing cuid Uri-Path segment (cuid=...), it must come before mid");
  const midText = take("mid");
  if (i < segments.length)
    throw new BadRequest(Code.BadRequest, `unexpected Uri-Path segment "${segments[i]}" (expected [cdid=]/cuid=/mid= in that order)`);
  if (midText === undefined) return { cuid };
  if (!/^\d{1,10}$/.test(midText) || Number(midText) > 0xffffffff)
    throw new BadRequest(Code.BadRequest, `mid "${midText}" is not a uint32`);
  return { cuid, mid: Number(midText) };
}

export class HomeResources extends EventEmitter {
  private readonly store: MitigationStore;
  private readonly config: SessionConfig;
  private readonly codec: DotsCodec;
  private readonly allowIndefinite: boolean;
  private readonly decisionWaitMs: number;
  private readonly legitimateRetryS: number;
  /** mid -> when its 4.09 legitimate-traffic retry-timer ends (per cuid/mid, bounded). */
  private readonly rejectedUntil = new Map<string, { until: number; cause: number }>();
  private readonly validate: MitigationValidator;
  private readonly canRedirect?: (target: RedirectTarget) => Promise<string | undefined>;
  private readonly pending = new Map<string, PendingAnswer>();
  private readonly mitigateObservers = new Set<ObserverEntry>();
  private readonly configObservers = new Set<ResourceObserver>();
  private readonly statusPeriodMs: number;
  private readonly notifyMinIntervalMs: () => number;
  private periodicTimer: NodeJS.Timeout | undefined;
  private readonly persist?: () => Promise<void>;
  private metrics: DropMetricsSource | undefined;

  constructor(opts: HomeResourcesOptions) {
    super();
    this.store = opts.store;
    this.config = opts.config;
    this.codec = opts.codec;
    this.allowIndefinite = opts.allowIndefiniteLifetime ?? false;
    this.decisionWaitMs = opts.decisionWaitMs ?? 1000;
    this.legitimateRetryS = opts.legitimateRetryS ?? 300;
    this.statusPeriodMs = opts.statusPeriodMs ?? 60_000;
    const spacing = opts.notifyMinIntervalMs ?? 0;
    this.notifyMinIntervalMs = typeof spacing === "function" ? spacing : () => spacing;
    const homePrefixes = [...opts.homePrefixes];
    // -1 always passes validation here: whether it is granted as indefinite is the store's call.
    this.validate =
      opts.validate ?? ((json) => validateMitigationRequest(json, { side: "home", homePrefixes, allowIndefiniteLifetime: true }));
    this.canRedirect = opts.canRedirect;
    this.persist = opts.persist;
    this.metrics = opts.metrics;
    for (const p of opts.homePrefixes) {
      try {
        parsePrefix(p, { allowHostBits: true }); // an interface address "192.168.1.1/24" names its prefix
      } catch (e) {
        if (!(e instanceof PrefixSyntaxError)) throw e;
        throw new RangeError(`home prefix "${p}" is not an IP prefix (address/length): ${e.message}`);
      }
    }
    this.store.on("change", (m) => this.notifyMitigation(m));
    this.store.on("removed", (m, reason) => this.onRemoved(m, reason));
    this.config.on("change", () => this.notifyConfig());
  }

  /** Where bytes-/pkts-dropped come from (the enforcer, which may start after the engine). */
  setMetricsSource(source: DropMetricsSource | undefined): void {
    this.metrics = source;
  }

  /** Handles one request; never throws (a peer's bad input becomes a 4.xx). */
  handle(req: ResourceRequest): void {
    try {
      this.dispatch(req);
    } catch (e) {
      if (e instanceof BadRequest) this.safeRespond(req, text(e.code, e.message));
      else {
        this.safeRespond(req, text(Code.InternalServerError, "internal error while handling the request"));
        this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
    }
  }

  /** Answers once the state the answer acknowledges is durable; 5.03 when it cannot be kept. */
  private durable(reqs: ResourceRequest[], res: () => ResourceResponse, onFail?: () => void): void {
    if (!this.persist) {
      const r = res();
      for (const q of reqs) this.safeRespond(q, r);
      return;
    }
    this.persist().then(
      () => {
        const r = res();
        for (const q of reqs) this.safeRespond(q, r);
      },
      (e: Error) => {
        onFail?.();
        const r = text(Code.ServiceUnavailable, `mitigation state cannot be kept durably, not acknowledged: ${e.message}`);
        for (const q of reqs) this.safeRespond(q, r);
      },
    );
  }

  private safeRespond(req: ResourceRequest, res: ResourceResponse): void {
    try {
      req.respond(res);
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
    }
  }

  private dispatch(req: ResourceRequest): void {
    const p = req.path;
    if (p[0] !== ".well-known" || p[1] !== "dots" || p.length < 3) {
      throw new BadRequest(Code.NotFound, `no resource /${p.join("/")}; DOTS resources live under /.well-known/dots`);
    }
    const rest = p.slice(3);
    switch (p[2]) {
      case "mitigate":
        return this.mitigate(req, rest);
      case "config":
        return this.configResource(req, rest);
      case "hb":
        return this.heartbeat(req, rest);
      case "redirect":
        return this.redirect(req);
      default:
        throw new BadRequest(Code.NotFound, `no resource /.well-known/dots/${p[2]} on the Call Home DOTS server`);
    }
  }

  private decodeBody(req: ResourceRequest): DotsJson {
    if (req.contentFormat !== CONTENT_FORMAT_DOTS_CBOR) {
      throw new BadRequest(
        Code.UnsupportedContentFormat,
        `Content-Format must be ${CONTENT_FORMAT_DOTS_CBOR} (application/dots+cbor), got ${req.contentFormat ?? "none"}`,
      );
    }
    try {
      return this.codec.decode(req.payload);
    } catch (e) {
      throw new BadRequest(Code.BadRequest, `CBOR body: ${(e as Error).message}`);
    }
  }

  private cbor(code: number, json: DotsJson, maxAge?: number): ResourceResponse {
    const res: ResourceResponse = { code, payload: this.codec.encode(json), contentFormat: CONTENT_FORMAT_DOTS_CBOR };
    if (maxAge !== undefined) res.maxAge = maxAge;
    return res;
  }

  // ------------------------------------------------------------------------------ /mitigate

  private mitigate(req: ResourceRequest, rest: string[]): void {
    const { cuid, mid } = parseMitigatePath(rest);
    switch (req.method) {
      case Code.PUT:
        if (mid === undefined) throw new BadRequest(Code.BadRequest, "PUT /mitigate needs a mid Uri-Path segment (mid=...)");
        return this.putMitigation(req, cuid, mid);
      case Code.GET:
        return this.getMitigations(req, cuid, mid);
      case Code.DELETE:
        if (mid === undefined) throw new BadRequest(Code.BadRequest, "DELETE /mitigate needs a mid Uri-Path segment (mid=...)");
        this.flushPending(cuid, mid);
        this.store.withdraw(cuid, mid);
        // 2.02 even when the mid is unknown (RFC 9132 section 4.4.4), once the withdrawal is durable.
        return this.durable([req], () => ({ code: Code.Deleted }));
      default:
        throw new BadRequest(Code.MethodNotAllowed, `${codeToString(req.method)} is not allowed on /mitigate (GET, PUT, DELETE)`);
    }
  }

  /** The single scope entry, validated once (src/dots/validation.ts); else 4.00 naming every bad field. */
  private checkRequest(body: DotsJson, efficacy = false): { scope: DotsJson; lifetime?: number; attackStatus?: number } {
    // An efficacy update may leave lifetime out (RFC 9132 Figure 16): validate the rest, keep the current lifetime.
    const noLifetime = efficacy && lifetimeMissing(body);
    const v = this.validate(noLifetime ? withLifetime(body) : body);
    if (!v.ok) {
      const all = v.errors.map((e) => `${e.field}: ${e.message} (${e.rule})`).join("; ");
      throw new BadRequest(Code.BadRequest, all || "invalid mitigation request");
    }
    const { lifetime, attackStatus } = v.typed;
    // v.scope has canonical prefix spelling, so a refresh compares equal however the peer wrote addresses.
    if (noLifetime) return { scope: v.scope, attackStatus };
    // Indefinite refused by this home: grant the finite fallback instead (returned in the answer).
    const granted = lifetime === -1 && !this.allowIndefinite ? this.store.finiteLifetime() : lifetime;
    return { scope: v.scope, lifetime: granted, attackStatus };
  }

  private putMitigation(req: ResourceRequest, cuid: string, mid: number): void {
    const body = this.decodeBody(req);
    const efficacy = req.ifMatch !== undefined && req.ifMatch.length === 1 && req.ifMatch[0].length === 0;
    const key = `${cuid}/${mid}`;
    const waiting = this.pending.get(key);
    if (waiting && !efficacy) {
      // A repeat of a NON PUT still waiting for its decision: answer it together with the first.
      const repeat = this.checkRequest(body);
      const m = this.store.get(cuid, mid);
      if (m && !sameScope(m.scope, repeat.scope))
        throw new BadRequest(Code.BadRequest, `refresh of mid ${mid} must repeat every parameter unchanged except lifetime`);
      if (waiting.requests.length >= MAX_WAITING_REPEATS) {
        if (m) this.safeRespond(req, this.cbor(Code.Created, this.answerBody(m)));
        return;
      }
      waiting.requests.push(req);
      return;
    }
    const { scope, lifetime, attackStatus } = this.checkRequest(body, efficacy);
    if (efficacy && attackStatus === undefined)
      throw new BadRequest(Code.BadRequest, "attack-status: mandatory in an efficacy update (mandatory)");
    const held = this.rejectedUntil.get(key);
    if (held && !efficacy) {
      const left = Math.ceil((held.until - Date.now()) / 1000);
      if (left > 0) return this.safeRespond(req, this.conflict(mid, "request-rejected-legitimate-traffic", { "retry-timer": left }));
      this.rejectedUntil.delete(key);
    }
    const r = this.store.put(cuid, mid, scope, lifetime, { efficacy, attackStatus, peer: req.peer });
    switch (r.kind) {
      case "cuid-collision":
        // RFC 9132 4.4.1.1: conflict-cause 3 only; the client picks a new cuid.
        return this.safeRespond(
          req,
          this.cbor(Code.Conflict, {
            [MITIGATION_SCOPE_KEY]: { scope: [{ "conflict-information": { "conflict-cause": "cuid-collision" } }] },
          }),
        );
      case "held":
        return this.safeRespond(
          req,
          this.conflict(mid, CONFLICT_CAUSE_LABELS[r.conflictCause] ?? "request-rejected-legitimate-traffic", {
            "retry-timer": r.retryTimer,
          }),
        );
      case "ignored":
        req.ignore?.(); // RFC 9132 section 4.4.3: efficacy update for an unknown mid is silently ignored
        return;
      case "bad":
        throw new BadRequest(Code.BadRequest, r.diagnostic);
      case "full":
        throw new BadRequest(Code.TooManyRequests, r.diagnostic);
      case "conflict":
        // RFC 9132 4.4.1.3: conflict-cause and conflict-scope; nothing is deactivated, so no retry-timer.
        return this.safeRespond(req, this.conflict(mid, "overlapping-targets", { "conflict-scope": r.conflictScope }));
      case "refreshed":
      case "efficacy": {
        const m = r.mitigation;
        this.durable([req], () => this.cbor(Code.Changed, this.answerBody(m)));
        this.emit("mitigation", this.event(m, r.kind === "refreshed" ? "refresh" : "efficacy"));
        return;
      }
      case "created": {
        const entry: PendingAnswer = { requests: [req] };
        this.pending.set(key, entry);
        const hand = () => {
          if (this.pending.get(key) !== entry) return;
          if (this.decisionWaitMs > 0) {
            entry.timer = setTimeout(() => this.flushPending(cuid, mid), this.decisionWaitMs);
            entry.timer.unref();
          }
          this.emit("mitigation", this.event(r.mitigation, "new"));
          if (this.decisionWaitMs <= 0) this.flushPending(cuid, mid);
        };
        if (!this.persist) return hand();
        // Nothing is handed on (enforced) before the request itself is durable.
        this.persist().then(hand, (e: Error) => {
          if (this.pending.get(key) !== entry) return;
          this.pending.delete(key);
          this.store.discard(cuid, mid);
          const res = text(Code.ServiceUnavailable, `mitigation state cannot be kept durably, not acknowledged: ${e.message}`);
          for (const q of entry.requests) this.safeRespond(q, res);
          this.emit("error", e);
        });
        return;
      }
    }
  }

  /** A 4.09 whose conflict-information carries the cause and the given members only. */
  private conflict(mid: number, cause: string, extra: DotsJson): ResourceResponse {
    return this.cbor(Code.Conflict, {
      [MITIGATION_SCOPE_KEY]: { scope: [{ mid, "conflict-information": { "conflict-cause": cause, ...extra } }] },
    });
  }

  private event(m: Mitigation, kind: MitigationEvent["kind"]): MitigationEvent {
    return { cuid: m.cuid, mid: m.mid, scope: { ...m.scope }, lifetime: m.lifetime, kind };
  }

  /** mid, granted lifetime and status: the body of 2.01/2.04 (RFC 9132 4.4.1, RFC 9066 5.3.1). */
  private answerBody(m: Mitigation): DotsJson {
    return { [MITIGATION_SCOPE_KEY]: { scope: [{ mid: m.mid, lifetime: m.lifetime, status: STATUS_LABELS[m.status] }] } };
  }

  /** Answers a new request that is still waiting, with whatever status it has now. */
  private flushPending(cuid: string, mid: number, gone?: Mitigation): void {
    const key = `${cuid}/${mid}`;
    const entry = this.pending.get(key);
    if (!entry) return;
    this.pending.delete(key);
    if (entry.timer) clearTimeout(entry.timer);
    // A request that left the table before its answer (expired, replaced) is still answered 2.01:
    // it was created; its final status follows as a notification.
    const m = this.store.get(cuid, mid) ?? gone;
    if (!m) return;
    this.durable(entry.requests, () => this.cbor(Code.Created, this.answerBody(m)));
  }

  private getMitigations(req: ResourceRequest, cuid: string, mid?: number): void {
    const list = mid === undefined ? this.store.list(cuid) : [this.store.get(cuid, mid)].filter((m): m is Mitigation => m !== undefined);
    if (list.length === 0) {
      throw new BadRequest(
        Code.NotFound,
        mid === undefined ? `no mitigations for cuid ${cuid}` : `no mitigation with mid ${mid} for cuid ${cuid}`,
      );
    }
    if (req.observe === 1) this.cancelObserver(req, cuid, mid);
    if (req.observe === 0 && req.acceptObserve && this.mitigateObservers.size < MAX_OBSERVERS) {
      const handle = req.acceptObserve();
      if (handle.active) {
        const entry: ObserverEntry = { cuid, mid, handle, queued: new Map(), lastSent: Date.now() };
        this.mitigateObservers.add(entry);
        handle.onCancel(() => this.dropObserver(entry));
        if (this.statusPeriodMs > 0 && !this.periodicTimer) {
          this.periodicTimer = setInterval(() => this.periodicStatus(), this.statusPeriodMs);
          this.periodicTimer.unref();
        }
      }
    }
    // the counters are read again (shared, at most once a second) so a GET sees what was just dropped
    this.withFreshMetrics(() =>
      this.safeRespond(req, this.cbor(Code.Content, { [MITIGATION_SCOPE_KEY]: { scope: list.map((m) => this.scopeJson(m)) } })),
    );
  }

  /** Runs fn once the metrics source has read its counters, or after METRICS_WAIT_MS, whichever is first. */
  private withFreshMetrics(fn: () => void): void {
    if (!this.metrics) return fn();
    let done = false;
    const run = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        fn();
      } catch (e) {
        this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
    };
    const timer = setTimeout(run, METRICS_WAIT_MS);
    this.metrics.refresh().then(run, (e: unknown) => {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      run();
    });
  }

  /** A mitigation's status entry, with what its filter dropped when the metrics source knows it. */
  private scopeJson(m: Mitigation): DotsJson {
    const out = this.store.toScopeJson(m);
    const d = m.active ? this.metrics?.dropped(m.cuid, m.mid) : undefined;
    if (d) {
      out[DROPPED.bytes] = String(d.bytes);
      out[DROPPED.packets] = String(d.packets);
      if (d.bps !== undefined) out[DROPPED.bps] = String(d.bps);
      if (d.pps !== undefined) out[DROPPED.pps] = String(d.pps);
    }
    return out;
  }

  private cancelObserver(_req: ResourceRequest, cuid: string, mid?: number): void {
    for (const o of [...this.mitigateObservers]) {
      if (o.cuid === cuid && o.mid === mid) {
        this.dropObserver(o);
        o.handle.cancel();
      }
    }
  }

  private notifyMitigation(m: Mitigation): void {
    if (this.pending.has(`${m.cuid}/${m.mid}`)) return; // the pending answer will carry it
    for (const o of [...this.mitigateObservers]) {
      if (!o.handle.active) {
        this.dropObserver(o);
        continue;
      }
      if (o.cuid !== m.cuid || (o.mid !== undefined && o.mid !== m.mid)) continue;
      o.queued.set(m.mid, m);
      this.flushObserver(o);
    }
  }

  /** Sends what is queued for one observer, no sooner than notifyMinIntervalMs after the last. */
  private flushObserver(o: ObserverEntry): void {
    if (o.queued.size === 0 || o.timer) return;
    const wait = o.lastSent + this.notifyMinIntervalMs() - Date.now();
    if (wait > 0) {
      o.timer = setTimeout(() => {
        o.timer = undefined;
        this.flushObserver(o);
      }, wait);
      o.timer.unref();
      return;
    }
    const list = [...o.queued.values()].sort((a, b) => a.mid - b.mid);
    o.queued.clear();
    if (!o.handle.active) return this.dropObserver(o);
    try {
      o.handle.notify(this.cbor(Code.Content, { [MITIGATION_SCOPE_KEY]: { scope: list.map((m) => this.scopeJson(m)) } }));
      o.lastSent = Date.now();
    } catch (e) {
      this.emit("error", e as Error);
    }
  }

  private dropObserver(o: ObserverEntry): void {
    if (o.timer) clearTimeout(o.timer);
    o.timer = undefined;
    o.queued.clear();
    this.mitigateObservers.delete(o);
    if (this.mitigateObservers.size === 0 && this.periodicTimer) {
      clearInterval(this.periodicTimer);
      this.periodicTimer = undefined;
    }
  }

  /** RFC 9132 section 4.4.2.1: status is also sent periodically, not only on change. */
  private periodicStatus(): void {
    // fresh counters for the periodic report (RFC 9132 4.4.2.1 status carries the dropped traffic)
    this.withFreshMetrics(() => this.queuePeriodic());
  }

  private queuePeriodic(): void {
    for (const o of [...this.mitigateObservers]) {
      if (!o.handle.active) {
        this.dropObserver(o);
        continue;
      }
      const list = this.store.list(o.cuid).filter((m) => o.mid === undefined || m.mid === o.mid);
      for (const m of list) if (!this.pending.has(`${m.cuid}/${m.mid}`)) o.queued.set(m.mid, m);
      this.flushObserver(o);
    }
  }

  private onRemoved(m: Mitigation, reason: RemovalReason): void {
    this.flushPending(m.cuid, m.mid, m);
    if (reason !== "rejected") {
      // Observers learn that it is over (status 6, lifetime 0).
      this.notifyMitigation(m);
      const mapped: MitigationEnded["reason"] = reason === "cleared" ? "session-reset" : reason;
      this.emit("ended", { cuid: m.cuid, mid: m.mid, reason: mapped, scope: { ...m.scope } });
    }
  }

  /**
   * The outside world's verdict for a mitigation (RFC 9066 section 5.3.1):
   * enforced -> status 2; pending -> status 1; failed -> status 4 (attack-exceeded-capability);
   * legitimate -> 4.09 conflict-cause 4 while the PUT is unanswered, else a notification with
   * conflict-cause 4 and the mitigation deactivated. Throws if the mid is unknown.
   */
  decide(d: Decision): void {
    const candidates = this.store.list().filter((m) => m.mid === d.mid && (d.cuid === undefined || m.cuid === d.cuid) && m.active);
    if (candidates.length === 0) throw new Error(`no active mitigation with mid ${d.mid}${d.cuid ? ` for cuid ${d.cuid}` : ""}`);
    if (candidates.length > 1) throw new Error(`mid ${d.mid} exists for several clients; name the cuid`);
    const m = candidates[0];
    const key = `${m.cuid}/${m.mid}`;
    switch (d.outcome) {
      case "enforced":
        this.store.setStatus(m.cuid, m.mid, MitigationStatus.Mitigated, d.detail, d.enforcement);
        break;
      case "pending":
        this.store.setStatus(m.cuid, m.mid, MitigationStatus.InProgress, d.detail, d.enforcement);
        break;
      case "failed":
        this.store.setStatus(m.cuid, m.mid, MitigationStatus.ExceededCapability, d.detail);
        break;
      case "legitimate": {
        const waiting = this.pending.get(key);
        if (waiting) {
          this.pending.delete(key);
          if (waiting.timer) clearTimeout(waiting.timer);
          // The request is not granted: retry-timer says when it may be sent again (RFC 9132 4.4.1).
          const res = this.conflict(m.mid, "request-rejected-legitimate-traffic", { "retry-timer": this.legitimateRetryS });
          if (this.rejectedUntil.size >= 1024) this.rejectedUntil.delete(this.rejectedUntil.keys().next().value as string);
          this.rejectedUntil.set(key, { until: Date.now() + this.legitimateRetryS * 1000, cause: 4 });
          this.store.discard(m.cuid, m.mid);
          this.durable(waiting.requests, () => res);
        } else {
          this.store.deactivate(m.cuid, m.mid, 4, d.detail);
        }
        return;
      }
      default:
        throw new Error(`unknown decision outcome ${String(d.outcome)}`);
    }
    this.flushPending(m.cuid, m.mid);
  }

  // ------------------------------------------------------------------------------ /config

  private configResource(req: ResourceRequest, rest: string[]): void {
    let sid: number | undefined;
    if (rest.length > 1) throw new BadRequest(Code.BadRequest, "/config takes at most one Uri-Path segment (sid=...)");
    if (rest.length === 1) {
      const m = /^sid=(.*)$/.exec(rest[0]);
      if (!m)
        throw new BadRequest(Code.BadRequest, `unexpected Uri-Path segment "${rest[0]}" on /config (only sid=... is allowed; no cuid)`);
      if (!/^\d{1,10}$/.test(m[1]) || Number(m[1]) > 0xffffffff) throw new BadRequest(Code.BadRequest, `sid "${m[1]}" is not a uint32`);
      sid = Number(m[1]);
    }
    switch (req.method) {
      case Code.GET: {
        if (req.observe === 1) {
          for (const o of this.configObservers) o.cancel();
          this.configObservers.clear();
        }
        if (req.observe === 0 && req.acceptObserve && this.configObservers.size < MAX_OBSERVERS) {
          const h = req.acceptObserve();
          this.configObservers.add(h);
          h.onCancel(() => this.configObservers.delete(h));
        }
        return this.safeRespond(req, this.cbor(Code.Content, this.config.toJson(), this.config.maxAgeSeconds));
      }
      case Code.PUT: {
        if (sid === undefined) throw new BadRequest(Code.BadRequest, "PUT /config needs a sid Uri-Path segment (sid=...)");
        const body = this.decodeBody(req);
        const r = this.config.put(sid, body);
        if (r.code === Code.Created || r.code === Code.Changed) return this.safeRespond(req, { code: r.code });
        throw new BadRequest(r.code, r.diagnostic ?? "invalid configuration");
      }
      case Code.DELETE:
        this.config.reset();
        return this.safeRespond(req, { code: Code.Deleted });
      default:
        throw new BadRequest(Code.MethodNotAllowed, `${codeToString(req.method)} is not allowed on /config (GET, PUT, DELETE)`);
    }
  }

  private notifyConfig(): void {
    if (this.configObservers.size === 0) return;
    const res = this.cbor(Code.Content, this.config.toJson(), this.config.maxAgeSeconds);
    for (const h of [...this.configObservers]) {
      if (!h.active) this.configObservers.delete(h);
      else h.notify(res);
    }
  }

  // ------------------------------------------------------------------------------ /hb

  private heartbeat(req: ResourceRequest, rest: string[]): void {
    if (req.method !== Code.PUT)
      throw new BadRequest(Code.MethodNotAllowed, `${codeToString(req.method)} is not allowed on /hb (PUT only)`);
    if (rest.length > 0) throw new BadRequest(Code.BadRequest, "a heartbeat must not carry cuid, cdid, mid or any other Uri-Path segment");
    const body = this.decodeBody(req);
    let parsed: { peerHbStatus: boolean };
    try {
      parsed = parseHeartbeatJson(body);
    } catch (e) {
      throw new BadRequest(Code.BadRequest, `${HEARTBEAT_KEY}: ${(e as Error).message}`);
    }
    this.safeRespond(req, { code: Code.Changed });
    this.emit("heartbeat", parsed);
  }

  // ------------------------------------------------------------------------------ /redirect

  private redirect(req: ResourceRequest): void {
    if (req.method !== Code.PUT)
      throw new BadRequest(Code.MethodNotAllowed, `${codeToString(req.method)} is not allowed on /redirect (PUT only)`);
    const body = this.decodeBody(req);
    const rs = body[REDIRECTED_SIGNAL_KEY];
    if (!isRecord(rs)) throw new BadRequest(Code.BadRequest, `${REDIRECTED_SIGNAL_KEY}: mandatory`);
    if ("alt-server" in rs || "alt-server-record" in rs)
      throw new BadRequest(Code.BadRequest, "alt-server/alt-server-record are base-channel redirect attributes, not Call Home ones");
    const alt = rs[REDIRECT.altClient];
    if (!isFqdn(alt)) throw new BadRequest(Code.BadRequest, "ietf-dots-call-home:alt-ch-client: mandatory domain name");
    const recordsRaw = rs[REDIRECT.altClientRecord];
    let records: string[] = [];
    if (recordsRaw !== undefined) {
      if (!Array.isArray(recordsRaw) || recordsRaw.some((r) => typeof r !== "string" || isIP(r) === 0)) {
        throw new BadRequest(Code.BadRequest, "ietf-dots-call-home:alt-ch-client-record: must be a list of IP addresses");
      }
      records = recordsRaw as string[];
    }
    const ttlRaw = rs[REDIRECT.ttl];
    if (ttlRaw !== undefined && (typeof ttlRaw !== "number" || !Number.isInteger(ttlRaw) || ttlRaw < 0 || ttlRaw > 0xffffffff)) {
      throw new BadRequest(Code.BadRequest, "ietf-dots-call-home:ttl: must be a uint32");
    }
    const target: RedirectTarget = { altClient: alt, records, ...(ttlRaw !== undefined ? { ttl: ttlRaw as number } : {}) };
    if (!this.canRedirect) throw new BadRequest(Code.BadRequest, "this home cannot follow redirects");
    this.canRedirect(target).then(
      (reason) => {
        if (reason !== undefined) return this.safeRespond(req, text(Code.BadRequest, `redirect cannot be honoured: ${reason}`));
        this.safeRespond(req, { code: Code.Created });
        this.emit("redirect", target);
      },
      (e) => this.safeRespond(req, text(Code.BadRequest, `redirect cannot be honoured: ${(e as Error).message}`)),
    );
  }

  // ------------------------------------------------------------------------------ lifecycle

  /** The connection went away: observers and unanswered requests belong to it. */
  dropConnectionState(): void {
    for (const o of [...this.mitigateObservers]) {
      this.dropObserver(o);
      if (o.handle.active) o.handle.cancel();
    }
    for (const h of this.configObservers) if (h.active) h.cancel();
    this.configObservers.clear();
    for (const e of this.pending.values()) if (e.timer) clearTimeout(e.timer);
    this.pending.clear();
  }

  observerCount(): number {
    return this.mitigateObservers.size + this.configObservers.size;
  }

  override on<E extends keyof HomeResourcesEvents>(event: E, listener: (...args: HomeResourcesEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<E extends keyof HomeResourcesEvents>(event: E, listener: (...args: HomeResourcesEvents[E]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }
}

function lifetimeMissing(body: DotsJson): boolean {
  const ms = body[MITIGATION_SCOPE_KEY];
  const entry = isRecord(ms) && Array.isArray(ms.scope) && ms.scope.length === 1 ? ms.scope[0] : undefined;
  return isRecord(entry) && entry.lifetime === undefined;
}

/** The body with a placeholder lifetime, so the shared validator checks every other member. */
function withLifetime(body: DotsJson): DotsJson {
  const ms = body[MITIGATION_SCOPE_KEY] as { scope: DotsJson[] };
  return { ...body, [MITIGATION_SCOPE_KEY]: { ...ms, scope: [{ ...ms.scope[0], lifetime: 1 }] } };
}

/** A short label for logs: "4.00 lifetime: ...". */
export function describeResponse(res: ResourceResponse): string {
  const diag = res.contentFormat === CONTENT_FORMAT_TEXT && res.payload ? ` ${res.payload.toString("utf8")}` : "";
  return `${codeToString(res.code)}${diag}`;
}
