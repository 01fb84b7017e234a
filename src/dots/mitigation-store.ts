// The home side's mitigation table (RFC 9132 section 4.4 as amended by RFC 9066 section 5.3.1):
// per cuid, mid-keyed mitigations with lifetimes that expire, refresh and efficacy updates,
// same-client overlap resolution (higher mid wins), the active-but-terminating period after a
// DELETE, and the server-side deactivation used for "legitimate traffic". It holds state only;
// CoAP answers and the decision hand-off live in home-resources.ts.
import { EventEmitter } from "node:events";
import type { DotsJson } from "./api";
import type { StoredMitigation } from "./home-state";
import { PrefixSyntaxError, prefixesOverlap as parsedPrefixesOverlap } from "./prefixes";
import { CONFLICT_CAUSE_LABELS, MitigationStatus, STATUS_LABELS, type MitigationStatusCode } from "./vocabulary";

export { ATTACK_STATUS_CODES, CONFLICT_CAUSE_LABELS, MitigationStatus, STATUS_LABELS, type MitigationStatusCode } from "./vocabulary";

export interface Mitigation {
  readonly cuid: string;
  readonly mid: number;
  /** The scope entry as requested, without lifetime, attack-status and other per-message members. */
  readonly scope: DotsJson;
  /** Granted lifetime, seconds; -1 indefinite. */
  lifetime: number;
  /** Epoch ms when it lapses (Infinity if indefinite). */
  expiresAt: number;
  status: MitigationStatusCode;
  /** Epoch seconds. */
  readonly mitigationStart: number;
  attackStatus?: number;
  /** Set when the server deactivated it (conflict-cause 4, legitimate traffic). */
  conflictCause?: number;
  /** False once withdrawn by the server; kept only so observers and GET can see why. */
  active: boolean;
  /** Set while in the active-but-terminating period (status 5): epoch ms when it ends. */
  terminatingUntil?: number;
  /** Length of this mitigation's terminating period, ms (doubles on re-request). */
  terminatingPeriodMs: number;
  /** The authenticated peer that created it (cuid is bound to it, RFC 9132 4.4.1.1 cuid-collision). */
  peer?: string;
  /** Epoch ms until which a server-deactivated request may not be resent (retry-timer). */
  retryUntil?: number;
  /** Operator text from the decision (what was blocked, why it failed). */
  detail?: string;
  /** What enforcement added (from the decision; kept in the state file so a restart can restore it). */
  enforcement?: DotsJson;
}

export interface MitigationStoreOptions {
  /** Max mitigations (any state) per cuid. Default 64. */
  maxPerClient?: number;
  /** Max distinct cuids. Default 64. */
  maxClients?: number;
  /** Grant at most this lifetime to a finite request, seconds. Default: as requested (the engine passes DEFAULTS.maxLifetimeS). */
  maxLifetime?: number;
  /** Accept lifetime -1. When false, -1 is granted as `fallbackLifetime`. Default false. */
  allowIndefiniteLifetime?: boolean;
  /** Granted instead of -1 when indefinite is not allowed. Default 3600 (RFC 9132 RECOMMENDED). */
  fallbackLifetime?: number;
  /** Active-but-terminating period, ms. Default 120 000 (RFC 9132 section 4.4.4). */
  terminatingPeriodMs?: number;
  /** Upper bound of the doubling, ms. Default 300 000. */
  terminatingMaxMs?: number;
  /** retry-timer of a server-deactivated mitigation, seconds; it stays visible that long + 45 s (RFC 9132 4.4.1). Default 300. */
  retryTimerS?: number;
  /** Milliseconds per lifetime second; 1000 unless a test compresses time. */
  msPerSecond?: number;
  now?: () => number;
}

export type PutOutcome =
  | { kind: "created"; mitigation: Mitigation; replaced: Mitigation[] }
  | { kind: "refreshed"; mitigation: Mitigation }
  | { kind: "efficacy"; mitigation: Mitigation }
  /** Efficacy update for an unknown mid: RFC 9132 section 4.4.3 says ignore it silently. */
  | { kind: "ignored" }
  | { kind: "conflict"; cause: 1; conflictScope: DotsJson; withMid: number }
  /** The cuid belongs to another authenticated peer (RFC 9132 4.4.1.1, conflict-cause 3). */
  | { kind: "cuid-collision" }
  /** Resent while the server's retry-timer of its deactivation still runs (conflict-cause 4). */
  | { kind: "held"; retryTimer: number; conflictCause: number }
  | { kind: "bad"; diagnostic: string }
  | { kind: "full"; diagnostic: string };

export type RemovalReason = "withdrawn" | "expired" | "replaced" | "rejected" | "cleared";

export interface MitigationStoreEvents {
  /** A mitigation was created or its status/lifetime changed; observers want a notification. */
  change: [Mitigation];
  /** A mitigation left the table. */
  removed: [Mitigation, RemovalReason];
  /** The number of active mitigations went from 0 to >0 or back (idle/mitigating switch). */
  activity: [boolean];
}

// Members that may legitimately differ between the original request and a refresh.
const PER_MESSAGE = new Set([
  "lifetime",
  "attack-status",
  "mid",
  "cuid",
  "cdid",
  "mitigation-start",
  "status",
  "conflict-information",
  "bytes-dropped",
  "bps-dropped",
  "pkts-dropped",
  "pps-dropped",
]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The request's stable identity: everything but per-message members and telemetry hints. */
export function normalizeScope(scope: DotsJson): DotsJson {
  const out: DotsJson = {};
  for (const [k, v] of Object.entries(scope)) {
    if (PER_MESSAGE.has(k)) continue;
    if (k.startsWith("ietf-dots-telemetry:")) continue;
    if (k === "trigger-mitigation" && v === true) continue;
    out[k] = v;
  }
  return out;
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isRecord(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

export function sameScope(a: DotsJson, b: DotsJson): boolean {
  return canonical(normalizeScope(a)) === canonical(normalizeScope(b));
}

// ------------------------------------------------------------------ overlap

function prefixesOverlap(a: string, b: string): boolean {
  try {
    return parsedPrefixesOverlap(a, b);
  } catch (e) {
    if (!(e instanceof PrefixSyntaxError)) throw e;
    return a === b;
  }
}

/**
 * Whether two scopes of one client overlap: RFC 9132 section 4.4.1 "if there is a common IP
 * address, IP prefix, FQDN, URI, or alias-name". Ports, protocols and the call-home source members
 * do not enter (RFC 9066 section 5.3.1 adds no rule of its own), so a scope re-issued under a
 * higher mid replaces the old one instead of leaving it enforced beside the new one.
 */
export function scopesOverlap(a: DotsJson, b: DotsJson): boolean {
  const str = (x: unknown, y: unknown): boolean => typeof x === "string" && typeof y === "string" && prefixesOverlap(x, y);
  const eq = (x: unknown, y: unknown): boolean => x === y;
  const shared = (k: string, pair: (x: unknown, y: unknown) => boolean): boolean => {
    const x = a[k];
    const y = b[k];
    return Array.isArray(x) && Array.isArray(y) && x.some((p) => y.some((q) => pair(p, q)));
  };
  return shared("target-prefix", str) || shared("target-fqdn", eq) || shared("target-uri", eq) || shared("alias-name", eq);
}

/** conflict-scope of a 4.09: the target members of the winning request (RFC 9132 section 4.4.1.3). */
export function conflictScopeOf(m: Mitigation): DotsJson {
  const out: DotsJson = {};
  for (const k of ["target-prefix", "target-port-range", "target-protocol", "target-fqdn", "target-uri", "alias-name"]) {
    if (m.scope[k] !== undefined) out[k] = m.scope[k];
  }
  return out;
}

// ------------------------------------------------------------------ store

export class MitigationStore extends EventEmitter {
  private readonly clients = new Map<string, Map<number, Mitigation>>();
  private readonly timers = new Map<Mitigation, NodeJS.Timeout>();
  private readonly opts: Required<Omit<MitigationStoreOptions, "maxLifetime" | "now">> & { maxLifetime?: number };
  private readonly now: () => number;
  private activeBefore = false;

  constructor(opts: MitigationStoreOptions = {}) {
    super();
    this.now = opts.now ?? Date.now;
    this.opts = {
      maxPerClient: opts.maxPerClient ?? 64,
      maxClients: opts.maxClients ?? 64,
      maxLifetime: opts.maxLifetime,
      allowIndefiniteLifetime: opts.allowIndefiniteLifetime ?? false,
      fallbackLifetime: opts.fallbackLifetime ?? 3600,
      terminatingPeriodMs: opts.terminatingPeriodMs ?? 120_000,
      terminatingMaxMs: opts.terminatingMaxMs ?? 300_000,
      retryTimerS: opts.retryTimerS ?? 300,
      msPerSecond: opts.msPerSecond ?? 1000,
    };
  }

  /** Lifetime the server grants for a requested value (the caller already rejected 0 and junk). */
  grantLifetime(requested: number): number {
    if (requested === -1) {
      // The operator's explicit opt-in: indefinite stays indefinite; the maximum bounds finite requests.
      if (this.opts.allowIndefiniteLifetime) return -1;
      return this.opts.maxLifetime === undefined ? this.opts.fallbackLifetime : Math.min(this.opts.fallbackLifetime, this.opts.maxLifetime);
    }
    return this.opts.maxLifetime === undefined ? requested : Math.min(requested, this.opts.maxLifetime);
  }

  /** The finite lifetime granted instead of -1 when indefinite is refused (fallback, capped). */
  finiteLifetime(): number {
    return this.opts.maxLifetime === undefined ? this.opts.fallbackLifetime : Math.min(this.opts.fallbackLifetime, this.opts.maxLifetime);
  }

  /**
   * Remaining lifetime in seconds as reported in status (RFC 9132 4.4.1: "the remaining lifetime
   * in status messages"): 0 once it is over (status 6, 7 or deactivated), the rest of the
   * active-but-terminating period during status 5, -1 indefinite, never below 0.
   */
  remainingLifetime(m: Mitigation): number {
    if (!m.active) return 0;
    const now = this.now();
    if (m.terminatingUntil !== undefined) return Math.max(0, Math.ceil((m.terminatingUntil - now) / this.opts.msPerSecond));
    if (m.expiresAt === Infinity) return -1;
    return Math.max(0, Math.ceil((m.expiresAt - now) / this.opts.msPerSecond));
  }

  /** Seconds left of a deactivated request's retry-timer (0 when it may be resent). */
  retryRemaining(m: Mitigation): number {
    if (m.retryUntil === undefined) return 0;
    return Math.max(0, Math.ceil((m.retryUntil - this.now()) / this.opts.msPerSecond));
  }

  /**
   * PUT /mitigate/cuid/mid with an already validated scope entry. `efficacy` marks a PUT with an
   * empty If-Match (RFC 9132 section 4.4.3); its attack-status comes in `attackStatus`, and its
   * lifetime may be absent (Figure 16), which keeps the current one. `peer` names the authenticated
   * peer: a cuid held by another peer is a cuid-collision.
   */
  put(
    cuid: string,
    mid: number,
    scope: DotsJson,
    lifetime: number | undefined,
    opts: { efficacy?: boolean; attackStatus?: number; peer?: string } = {},
  ): PutOutcome {
    const own = this.clients.get(cuid);
    if (opts.peer !== undefined && own && [...own.values()].some((m) => m.peer !== undefined && m.peer !== opts.peer))
      return { kind: "cuid-collision" };
    const existing = own?.get(mid);
    if (opts.efficacy) {
      if (!existing || !existing.active) return { kind: "ignored" };
      if (!sameScope(existing.scope, scope))
        return { kind: "bad", diagnostic: `efficacy update for mid ${mid} changes parameters other than lifetime and attack-status` };
      if (opts.attackStatus === undefined) return { kind: "bad", diagnostic: "efficacy update without attack-status" };
      existing.attackStatus = opts.attackStatus;
      this.renew(existing, lifetime);
      this.emit("change", existing);
      return { kind: "efficacy", mitigation: existing };
    }
    if (lifetime === undefined) return { kind: "bad", diagnostic: "lifetime is mandatory (scope[0].lifetime)" };
    if (existing && existing.active) {
      if (!sameScope(existing.scope, scope))
        return { kind: "bad", diagnostic: `refresh of mid ${mid} must repeat every parameter unchanged except lifetime` };
      if (existing.terminatingUntil !== undefined) {
        // Re-requested while terminating: keep mitigating; a later DELETE gets a doubled period.
        existing.terminatingUntil = undefined;
        // Only enforced mitigations enter the terminating period, so enforcement is still in place.
        existing.status = MitigationStatus.Mitigated;
        existing.terminatingPeriodMs = Math.min(existing.terminatingPeriodMs * 2, this.opts.terminatingMaxMs);
      }
      if (opts.attackStatus !== undefined) existing.attackStatus = opts.attackStatus;
      this.renew(existing, lifetime);
      this.emit("change", existing);
      return { kind: "refreshed", mitigation: existing };
    }
    if (existing && !existing.active) {
      const left = this.retryRemaining(existing);
      if (left > 0) return { kind: "held", retryTimer: left, conflictCause: existing.conflictCause ?? 4 };
      // A server-deactivated request resent after its retry-timer: start afresh under the same mid.
      this.drop(existing, "rejected", false);
    }
    // Same-client overlap: the higher mid wins (RFC 9132 section 4.4.1.3).
    const overlapping = [...(own?.values() ?? [])].filter((m) => m.active && m.mid !== mid && scopesOverlap(m.scope, scope));
    const higher = overlapping.find((m) => m.mid > mid && m.terminatingUntil === undefined);
    if (higher) return { kind: "conflict", cause: 1, conflictScope: conflictScopeOf(higher), withMid: higher.mid };
    const freedHere = overlapping.length;
    if (!own && this.clients.size >= this.opts.maxClients)
      return { kind: "full", diagnostic: `too many DOTS clients (limit ${this.opts.maxClients})` };
    if (own && own.size - freedHere >= this.opts.maxPerClient) {
      return { kind: "full", diagnostic: `too many mitigations for this client (limit ${this.opts.maxPerClient})` };
    }
    // A terminating predecessor passes on its doubled period (re-request during status 5).
    let period = this.opts.terminatingPeriodMs;
    for (const m of overlapping) {
      if (m.terminatingUntil !== undefined) period = Math.max(period, Math.min(m.terminatingPeriodMs * 2, this.opts.terminatingMaxMs));
    }
    for (const m of overlapping) this.drop(m, "replaced", true);
    const map = this.clients.get(cuid) ?? new Map<number, Mitigation>();
    this.clients.set(cuid, map);
    const granted = this.grantLifetime(lifetime);
    const m: Mitigation = {
      cuid,
      mid,
      scope: normalizeScope(scope),
      lifetime: granted,
      expiresAt: 0,
      status: MitigationStatus.InProgress,
      mitigationStart: Math.floor(this.now() / 1000),
      attackStatus: opts.attackStatus,
      active: true,
      terminatingPeriodMs: period,
    };
    if (opts.peer !== undefined) m.peer = opts.peer;
    map.set(mid, m);
    this.schedule(m, granted);
    this.emit("change", m);
    this.checkActivity();
    return { kind: "created", mitigation: m, replaced: overlapping };
  }

  private renew(m: Mitigation, lifetime: number | undefined): void {
    if (lifetime === undefined) return;
    const granted = this.grantLifetime(lifetime);
    m.lifetime = granted;
    if (m.terminatingUntil === undefined) this.schedule(m, granted);
  }

  private schedule(m: Mitigation, seconds: number): void {
    const old = this.timers.get(m);
    if (old) clearTimeout(old);
    this.timers.delete(m);
    if (seconds === -1) {
      m.expiresAt = Infinity;
      return;
    }
    const ms = seconds * this.opts.msPerSecond;
    m.expiresAt = this.now() + ms;
    this.arm(m, ms, () => this.drop(m, "expired", true));
  }

  // setTimeout caps at 2^31-1 ms; longer lifetimes re-arm in steps.
  private arm(m: Mitigation, ms: number, fire: () => void): void {
    const step = Math.min(ms, 0x7fffffff);
    const t = setTimeout(() => {
      this.timers.delete(m);
      if (step < ms) this.arm(m, ms - step, fire);
      else fire();
    }, step);
    t.unref();
    this.timers.set(m, t);
  }

  get(cuid: string, mid: number): Mitigation | undefined {
    return this.clients.get(cuid)?.get(mid);
  }

  list(cuid?: string): Mitigation[] {
    if (cuid !== undefined) return [...(this.clients.get(cuid)?.values() ?? [])].sort((a, b) => a.mid - b.mid);
    return [...this.clients.values()].flatMap((m) => [...m.values()]);
  }

  /** Active (not server-deactivated) mitigations, terminating ones included. */
  activeCount(): number {
    return this.list().filter((m) => m.active).length;
  }

  /**
   * DELETE: the mitigation enters the active-but-terminating period (status 5) and is removed when
   * it ends. Returns undefined for an unknown mid (the caller still answers 2.02).
   */
  withdraw(cuid: string, mid: number): Mitigation | undefined {
    const m = this.get(cuid, mid);
    if (!m) return undefined;
    if (!m.active) {
      this.drop(m, "withdrawn", false);
      return m;
    }
    if (m.terminatingUntil !== undefined) return m;
    if (m.status !== MitigationStatus.Mitigated || this.opts.terminatingPeriodMs === 0) {
      // Nothing is enforced yet (pending, failed): there is nothing to keep running.
      this.drop(m, "withdrawn", true);
      return m;
    }
    m.status = MitigationStatus.ClientWithdrawn;
    m.terminatingUntil = this.now() + m.terminatingPeriodMs;
    const old = this.timers.get(m);
    if (old) clearTimeout(old);
    this.arm(m, m.terminatingPeriodMs, () => this.drop(m, "withdrawn", true));
    this.emit("change", m);
    return m;
  }

  /** The outside world's verdict: status 1, 2 or 4 for an active mitigation. */
  setStatus(cuid: string, mid: number, status: MitigationStatusCode, detail?: string, enforcement?: DotsJson): Mitigation | undefined {
    const m = this.get(cuid, mid);
    if (!m || !m.active) return undefined;
    if (detail !== undefined) m.detail = detail;
    if (enforcement !== undefined) m.enforcement = enforcement;
    if (m.terminatingUntil !== undefined) return m; // stays 5 until it ends
    if (m.status === status) return m;
    m.status = status;
    this.emit("change", m);
    return m;
  }

  /**
   * Server-side deactivation (RFC 9066: traffic judged legitimate). The entry stays visible with
   * conflict-cause for a while so GET and observers can learn why, then disappears.
   */
  deactivate(cuid: string, mid: number, conflictCause: number, detail?: string): Mitigation | undefined {
    const m = this.get(cuid, mid);
    if (!m || !m.active) return undefined;
    m.active = false;
    m.conflictCause = conflictCause;
    // RFC 9066 names no status for this notification; 7 (withdrawn by the server) fits best.
    m.status = MitigationStatus.ServerWithdrawn;
    m.terminatingUntil = undefined;
    if (detail !== undefined) m.detail = detail;
    m.retryUntil = this.now() + this.opts.retryTimerS * this.opts.msPerSecond;
    const old = this.timers.get(m);
    if (old) clearTimeout(old);
    // Kept for retry-timer + 45 s, so a resend inside the timer is still recognised (RFC 9132 4.4.1).
    this.arm(m, (this.opts.retryTimerS + 45) * this.opts.msPerSecond, () => this.drop(m, "rejected", false));
    this.emit("change", m);
    this.emit("removed", m, "rejected");
    this.checkActivity();
    return m;
  }

  /** Removes an entry right away without the terminating period (request answered 4.09 cause 4). */
  discard(cuid: string, mid: number): void {
    const m = this.get(cuid, mid);
    if (m) this.drop(m, "rejected", m.active);
  }

  private drop(m: Mitigation, reason: RemovalReason, announce: boolean): void {
    const t = this.timers.get(m);
    if (t) clearTimeout(t);
    this.timers.delete(m);
    const map = this.clients.get(m.cuid);
    if (!map || map.get(m.mid) !== m) return;
    map.delete(m.mid);
    if (map.size === 0) this.clients.delete(m.cuid);
    const wasActive = m.active;
    m.active = false;
    if (reason === "withdrawn" || reason === "expired" || reason === "replaced") {
      if (wasActive) m.status = MitigationStatus.Terminated;
    }
    if (announce && wasActive) this.emit("removed", m, reason);
    this.checkActivity();
  }

  /** The active mitigations as the state file keeps them (deactivated ones are only visible briefly). */
  snapshot(): StoredMitigation[] {
    return this.list()
      .filter((m) => m.active)
      .map((m) => {
        const e: StoredMitigation = {
          cuid: m.cuid,
          mid: m.mid,
          scope: m.scope,
          lifetime: m.lifetime,
          expiresAt: m.expiresAt === Infinity ? null : m.expiresAt,
          status: m.status,
          mitigationStart: m.mitigationStart,
          terminatingPeriodMs: m.terminatingPeriodMs,
        };
        if (m.attackStatus !== undefined) e.attackStatus = m.attackStatus;
        if (m.peer !== undefined) e.peer = m.peer;
        if (m.terminatingUntil !== undefined) e.terminatingUntil = m.terminatingUntil;
        if (m.detail !== undefined) e.detail = m.detail;
        if (m.enforcement !== undefined) e.enforcement = m.enforcement;
        return e;
      });
  }

  /**
   * Takes back mitigations from the state file after a restart: what has lapsed (lifetime or
   * terminating period) is dropped, the rest keeps its status and gets its timers re-armed.
   * Entries over the limits or clashing with one already held are dropped and counted.
   */
  restore(entries: readonly StoredMitigation[]): { restored: Mitigation[]; expired: number; refused: number } {
    const now = this.now();
    const restored: Mitigation[] = [];
    let expired = 0;
    let refused = 0;
    for (const e of entries) {
      if ((e.expiresAt !== null && e.expiresAt <= now) || (e.terminatingUntil !== undefined && e.terminatingUntil <= now)) {
        expired++;
        continue;
      }
      const own = this.clients.get(e.cuid);
      if (own?.has(e.mid) || (!own && this.clients.size >= this.opts.maxClients) || (own && own.size >= this.opts.maxPerClient)) {
        refused++;
        continue;
      }
      const m: Mitigation = {
        cuid: e.cuid,
        mid: e.mid,
        scope: e.scope,
        lifetime: e.lifetime,
        expiresAt: e.expiresAt === null ? Infinity : e.expiresAt,
        status: e.status as MitigationStatusCode,
        mitigationStart: e.mitigationStart,
        active: true,
        terminatingPeriodMs: e.terminatingPeriodMs,
      };
      if (e.attackStatus !== undefined) m.attackStatus = e.attackStatus;
      if (e.peer !== undefined) m.peer = e.peer;
      if (e.detail !== undefined) m.detail = e.detail;
      if (e.enforcement !== undefined) m.enforcement = e.enforcement;
      const map = own ?? new Map<number, Mitigation>();
      this.clients.set(e.cuid, map);
      map.set(e.mid, m);
      if (e.terminatingUntil !== undefined) {
        m.terminatingUntil = e.terminatingUntil;
        this.arm(m, e.terminatingUntil - now, () => this.drop(m, "withdrawn", true));
      } else if (m.expiresAt !== Infinity) {
        this.arm(m, m.expiresAt - now, () => this.drop(m, "expired", true));
      }
      restored.push(m);
    }
    this.checkActivity();
    return { restored, expired, refused };
  }

  /** Frees every timer and entry (stop()). Emits nothing. */
  clear(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.clients.clear();
    this.activeBefore = false;
  }

  private checkActivity(): void {
    const now = this.activeCount() > 0;
    if (now !== this.activeBefore) {
      this.activeBefore = now;
      this.emit("activity", now);
    }
  }

  /** JSON view of one scope entry for GET and notifications (RFC 9132 Figure 12 shape). */
  toScopeJson(m: Mitigation): DotsJson {
    const out: DotsJson = { mid: m.mid, ...m.scope };
    if (m.conflictCause !== undefined) {
      const ci: DotsJson = { "conflict-cause": CONFLICT_CAUSE_LABELS[m.conflictCause] ?? String(m.conflictCause) };
      // RFC 9132 4.4.1: retry-timer goes to clients whose request is deactivated.
      const retry = this.retryRemaining(m);
      if (retry > 0) ci["retry-timer"] = retry;
      out["conflict-information"] = ci;
    }
    out["mitigation-start"] = String(m.mitigationStart);
    out.lifetime = this.remainingLifetime(m);
    out.status = STATUS_LABELS[m.status];
    if (m.attackStatus !== undefined) out["attack-status"] = m.attackStatus === 1 ? "under-attack" : "attack-successfully-mitigated";
    return out;
  }

  override on<E extends keyof MitigationStoreEvents>(event: E, listener: (...args: MitigationStoreEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }
}
