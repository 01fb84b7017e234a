// The home side's answer to a mitigation request (RFC 9066 sections 5.3.1 and 5.3.2): find the
// device behind the NAT, ask for consent if configured, block it (or quarantine it) with kernel
// timeouts equal to the lifetime, and remove exactly what a mitigation added when it ends.
// Outcomes use the dialer's DecisionOutcome names (src/dots/api.ts).
import { EventEmitter } from "node:events";
import type { DecisionOutcome, DropMetricsSource, DroppedTraffic } from "../dots/api";
import { ConsentGate, type ConsentPolicy } from "./consent";
import { HomeError, TooManyElementsError, NftError, InvalidScopeError } from "./errors";
import { canonicalAddress, canonicalMac } from "./address";
import { DryRunBackend, NftablesBackend, type ElementAdd, type ElementOp, type FilterBackend } from "./filter-backend";
import { NatLookup, type Device } from "./nat-lookup";
import type { NatSource } from "./nat-source";
import {
  blockElements,
  elementId,
  mitigationTag,
  parseMitigationTag,
  safeOwner,
  quarantineElements,
  DEFAULT_TABLE,
  MAX_NFT_TIMEOUT_SEC,
  SET_NAMES,
  type ElementRef,
  type SetName,
  type TableElement,
} from "./nft-script";
import { CommandRunner } from "./runner";
import { checkLifetime, scopeToQuery, type NatQuery } from "./scope";

export type EnforcementAction = "block" | "quarantine";

export interface HomeEnforcerOptions {
  /** A NAT source, or a ready NatLookup (to share neighbour tables or set local addresses). */
  nat: NatSource | NatLookup;
  backend: "nftables" | "dry-run" | FilterBackend;
  action: EnforcementAction;
  /** Default { mode: "auto" }. */
  consent?: ConsentPolicy;
  /** Runs nft and ip (e.g. netnsRunner("router")); default: this host. */
  runner?: CommandRunner;
  /** nft table (family inet); default "dots_call_home". */
  table?: string;
  maxElementsPerMitigation?: number;
  /** Mitigations held (active + pending) at most. */
  maxMitigations?: number;
  /** Consent requests waiting at most (default 1024). */
  maxPendingConsent?: number;
  /**
   * Names the upstream ISP this enforcer serves when several dialers share one nft table (RFC 9066:
   * one session per upstream domain). It gets its own sets and chain in the table (kernelSetName),
   * its elements are tagged with it, and reconcile and withdrawal only touch its own.
   */
  owner?: string;
  /** Counter reads (nft -j list) happen at most this often, ms; callers in between get the cache. Default 1000. */
  counterMinAgeMs?: number;
  /** Rates (bps/pps-dropped) need two readings at least this far apart, ms. Default 300 000 (RFC 9132: five minutes). */
  rateMinSpanMs?: number;
}

/** What the dialer hands over (MitigationEvent in src/dots/api.ts). */
export interface MitigationInput {
  cuid: string;
  mid: number;
  /** One scope entry in the DOTS JSON view (or a mitigation-scope body with one entry). */
  scope: unknown;
  /** Seconds; -1 = indefinite. */
  lifetime: number;
  kind?: "new" | "refresh" | "efficacy";
  /**
   * Devices already found (e.g. by a separate NAT lookup step, as NatLookup returns them); the
   * enforcer then skips its own lookup. Addresses and MACs are checked again here.
   */
  devices?: Array<{ address: string; mac?: string; otherAddresses?: string[] }>;
}

export type FailureReason =
  | "no-device"
  | "invalid-scope"
  | "lookup-failed"
  | "backend-error"
  | "nft-error"
  | "too-many-elements"
  | "unknown-mitigation"
  | "limit"
  | "closed";

export interface HandleResult {
  cuid: string;
  mid: number;
  outcome: DecisionOutcome;
  /** Operator text: what was blocked, or why not. */
  detail: string;
  devices: Device[];
  action: EnforcementAction;
  /** The nft script applied (nftables) or that would be applied (dry-run / pending consent). */
  script?: string;
  /** Set when outcome is "failed" or "legitimate". */
  reason?: FailureReason | "consent-rejected" | "consent-timeout";
  /** Seconds the block lasts; -1 indefinite. */
  lifetime?: number;
  /** With "enforced": every element this mitigation holds (kept in the dialer's state file). */
  elements?: ElementRef[];
}

/** What the dialer's state file keeps of an enforced mitigation (Decision.enforcement). */
export interface StoredEnforcement {
  action: EnforcementAction;
  elements: ElementRef[];
}

const ELEMENT_KEY = /^[0-9A-Fa-f:./ -]{1,200}$/;

/** Reads Decision.enforcement back from a state file; undefined when it is not one of ours. */
export function parseStoredEnforcement(v: unknown): StoredEnforcement | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as { action?: unknown; elements?: unknown };
  if (o.action !== "block" && o.action !== "quarantine") return undefined;
  if (!Array.isArray(o.elements) || o.elements.length === 0) return undefined;
  const elements: ElementRef[] = [];
  for (const e of o.elements as Array<{ set?: unknown; key?: unknown }>) {
    // the key goes into a filter command: only address/number/range characters
    if (
      typeof e !== "object" ||
      e === null ||
      !SET_NAMES.includes(e.set as SetName) ||
      typeof e.key !== "string" ||
      !ELEMENT_KEY.test(e.key)
    )
      return undefined;
    elements.push({ set: e.set as SetName, key: e.key });
  }
  return { action: o.action, elements };
}

export interface ConsentRequest {
  cuid: string;
  mid: number;
  action: EnforcementAction;
  devices: Device[];
  scope: unknown;
  lifetime: number;
  /** The nft script an approval would apply. */
  script: string;
  /** Epoch ms when the timeout answers for the admin. */
  deadline: number;
  onTimeout: "reject" | "approve";
}

export interface EnforcementChange {
  change: "added" | "refreshed" | "removed" | "expired" | "reconciled";
  cuid: string;
  mid: number;
  elements: number;
  script?: string;
}

export interface ReconcileReport {
  /** Mitigations whose elements are in the table and are believed active. */
  kept: Array<{ cuid: string; mid: number }>;
  /** Believed active but nothing of them is in the table (expired or flushed): handle them again. */
  missing: Array<{ cuid: string; mid: number }>;
  /** Elements found that no believed mitigation owns, deleted (or adopted with adoptUnknown). */
  removed: TableElement[];
  adopted: string[];
  script?: string;
}

/** The NAT lookup's answer for one mitigation, before consent or enforcement. */
export interface LookupReport {
  cuid: string;
  mid: number;
  found: boolean;
  devices: Device[];
  detail: string;
}

export interface HomeEnforcerEvents {
  /** Each lookup a new mitigation causes (found or not); refreshes do not report. */
  lookup: [LookupReport];
  "consent-request": [ConsentRequest];
  /** Exactly one per handle() that resolved "pending": the final outcome after consent. */
  decision: [HandleResult];
  enforcement: [EnforcementChange];
  error: [Error];
}

interface ActiveMitigation {
  cuid: string;
  mid: number;
  tag: string;
  action: EnforcementAction;
  devices: Device[];
  elements: ElementRef[];
  lifetime: number;
  /** Epoch ms; undefined = indefinite. */
  expiresAt?: number;
  timer?: NodeJS.Timeout;
  /** First counter reading of this mitigation's elements: the base of its rates. */
  base?: { at: number; bytes: number; packets: number };
}

/** One element's counter as last read, plus what earlier incarnations of it counted. */
interface ElementCount {
  packets: number;
  bytes: number;
  /** Counted before the kernel's counter restarted (the element was deleted and re-added). */
  carriedPackets: number;
  carriedBytes: number;
}

interface PendingMitigation {
  input: MitigationInput;
  lifetime: number;
  devices: Device[];
  elements: ElementRef[];
}

const MAX_TIMER_MS = 2 ** 31 - 1;
const REJECTED_MEMORY = 1024;

function keyOf(cuid: string, mid: number): string {
  return `${cuid}\u0000${mid}`;
}

export class HomeEnforcer extends EventEmitter<HomeEnforcerEvents> {
  readonly action: EnforcementAction;
  readonly backend: FilterBackend;
  readonly lookup: NatLookup;
  readonly consent: ConsentGate;
  private readonly table: string;
  private readonly owner: string | undefined;
  private readonly maxElements: number;
  private readonly maxMitigations: number;
  private readonly active = new Map<string, ActiveMitigation>();
  private readonly pendingMap = new Map<string, PendingMitigation>();
  /** Mitigations judged legitimate, so a refresh gets the same answer without asking again. */
  private readonly rejected = new Map<string, number>();
  /** elementId -> keys of the mitigations holding it. */
  private readonly holders = new Map<string, Set<string>>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly inflight = new Map<string, Promise<HandleResult>>();
  private setupDone = false;
  private closed = false;
  /** elementId -> its counter; only elements some mitigation holds. */
  private readonly counts = new Map<string, ElementCount>();
  private countsReadAt = 0;
  private countsTriedAt = 0;
  private countsReading: Promise<void> | undefined;
  private readonly counterMinAgeMs: number;
  private readonly rateMinSpanMs: number;

  constructor(opts: HomeEnforcerOptions) {
    super();
    const runner = opts.runner ?? new CommandRunner();
    this.table = opts.table ?? DEFAULT_TABLE;
    this.owner = opts.owner === undefined || opts.owner === "" ? undefined : safeOwner(opts.owner);
    this.action = opts.action;
    if (opts.action !== "block" && opts.action !== "quarantine")
      throw new HomeError("INVALID_SCOPE", `action must be "block" or "quarantine"`);
    this.backend =
      opts.backend === "nftables"
        ? new NftablesBackend(runner, this.table, this.owner)
        : opts.backend === "dry-run"
          ? new DryRunBackend(this.table, undefined, this.owner)
          : opts.backend;
    this.table = this.backend.table;
    this.lookup = opts.nat instanceof NatLookup ? opts.nat : new NatLookup({ source: opts.nat, runner });
    this.consent = new ConsentGate(opts.consent ?? { mode: "auto" }, opts.maxPendingConsent ?? 1024);
    this.maxElements = opts.maxElementsPerMitigation ?? 4096;
    this.maxMitigations = opts.maxMitigations ?? 4096;
    this.counterMinAgeMs = opts.counterMinAgeMs ?? 1000;
    this.rateMinSpanMs = opts.rateMinSpanMs ?? 300_000;
  }

  /**
   * Dropped traffic of one mitigation, from its own set elements' counters (cache of the last
   * refreshCounters). An element two mitigations share counts in full for each of them.
   * Undefined when the backend has no counters (dry run) or nothing was read yet.
   */
  dropped(cuid: string, mid: number): DroppedTraffic | undefined {
    const act = this.active.get(keyOf(cuid, mid));
    if (!act) return undefined;
    const total = this.sumCounts(act);
    if (!total) return undefined;
    const out: DroppedTraffic = { ...total };
    const span = this.countsReadAt - (act.base?.at ?? this.countsReadAt);
    if (act.base && span >= this.rateMinSpanMs) {
      out.bps = Math.floor(((total.bytes - act.base.bytes) * 1000) / span);
      out.pps = Math.floor(((total.packets - act.base.packets) * 1000) / span);
    }
    return out;
  }

  /**
   * Reads every element's counter with one `nft -j list table`. Calls while a read runs share it,
   * and a read younger than counterMinAgeMs is reused: a GET storm forks nft at most once a second.
   */
  refreshCounters(): Promise<void> {
    if (this.countsReading) return this.countsReading;
    // a failed read counts too: a broken nft is not forked again on every GET
    if (this.closed || Date.now() - this.countsTriedAt < this.counterMinAgeMs) return Promise.resolve();
    this.countsTriedAt = Date.now();
    const read = (async () => {
      const table = await this.backend.list();
      const at = Date.now();
      if (!table) return;
      for (const t of table) {
        if (t.packets === undefined || t.bytes === undefined) continue;
        const id = elementId(t);
        if (!this.holders.has(id)) continue;
        const c = this.counts.get(id);
        if (!c) {
          this.counts.set(id, { packets: t.packets, bytes: t.bytes, carriedPackets: 0, carriedBytes: 0 });
        } else {
          if (t.packets < c.packets || t.bytes < c.bytes) {
            // re-added (refresh on an old kernel, migration): keep what the earlier element counted
            c.carriedPackets += c.packets;
            c.carriedBytes += c.bytes;
          }
          c.packets = t.packets;
          c.bytes = t.bytes;
        }
      }
      this.countsReadAt = at;
      for (const act of this.active.values()) {
        if (act.base) continue;
        const total = this.sumCounts(act);
        if (total) act.base = { at, ...total };
      }
    })();
    this.countsReading = read;
    const done = () => {
      if (this.countsReading === read) this.countsReading = undefined;
    };
    read.then(done, done);
    return read;
  }

  /** The enforcer as the dialer's source of bytes-/pkts-dropped (RFC 9132 section 4.4.2). */
  metricsSource(): DropMetricsSource {
    return { dropped: (cuid, mid) => this.dropped(cuid, mid), refresh: () => this.refreshCounters() };
  }

  private sumCounts(act: ActiveMitigation): { bytes: number; packets: number } | undefined {
    let bytes = 0;
    let packets = 0;
    let seen = false;
    for (const e of act.elements) {
      const c = this.counts.get(elementId(e));
      if (!c) continue;
      seen = true;
      bytes += c.carriedBytes + c.bytes;
      packets += c.carriedPackets + c.packets;
    }
    return seen ? { bytes, packets } : undefined;
  }

  /** Creates the table if absent (idempotent). Called on first use; call early to fail fast. */
  async start(): Promise<void> {
    await this.serial(() => this.ensureSetup());
  }

  /**
   * Decides one mitigation. Resolves with the outcome now; when that is "pending" (manual
   * consent), exactly one "decision" event follows with the final outcome.
   */
  handle(m: MitigationInput): Promise<HandleResult> {
    return this.trackInflight(keyOf(String(m.cuid), m.mid), this.handleNow(m));
  }

  private async handleNow(m: MitigationInput): Promise<HandleResult> {
    if (this.closed) return this.result(m, "failed", "the enforcer is closed", [], { reason: "closed" });
    const key = keyOf(m.cuid, m.mid);
    let query: NatQuery;
    let lifetime: number;
    try {
      if (typeof m.cuid !== "string" || m.cuid.length === 0 || m.cuid.length > 256)
        throw new InvalidScopeError("cuid", "must be a non-empty string");
      if (!Number.isInteger(m.mid) || m.mid < 0 || m.mid > 0xffffffff)
        throw new InvalidScopeError("mid", "must be an integer 0..4294967295");
      lifetime = checkLifetime(m.lifetime);
      query = scopeToQuery(m.scope);
    } catch (err) {
      return this.result(m, "failed", (err as Error).message, [], { reason: "invalid-scope" });
    }
    const kind = m.kind ?? "new";
    const act = this.active.get(key);
    const pend = this.pendingMap.get(key);
    if (kind === "efficacy") {
      if (act) return this.result(m, "enforced", this.describe(act), act.devices, { lifetime: act.lifetime });
      if (pend) return this.result(m, "pending", "waiting for the administrator's consent", pend.devices);
      return this.result(m, "failed", `no active mitigation ${m.cuid}/${m.mid}`, [], { reason: "unknown-mitigation" });
    }
    const rejectedUntil = this.rejected.get(key);
    if (rejectedUntil !== undefined && rejectedUntil > Date.now()) {
      return this.result(m, "legitimate", "judged legitimate traffic earlier", [], { reason: "consent-rejected" });
    }
    if (pend) {
      pend.lifetime = lifetime;
      pend.input = m;
      return this.result(m, "pending", "waiting for the administrator's consent", pend.devices);
    }
    if (act) return this.refresh(m, act, query, lifetime);
    if (this.active.size + this.pendingMap.size >= this.maxMitigations) {
      return this.result(m, "failed", `more than ${this.maxMitigations} mitigations held`, [], { reason: "limit" });
    }

    let devices: Device[];
    if (m.devices !== undefined) {
      // found earlier (the Node-RED nat-lookup node): enforce on exactly these
      try {
        devices = givenDevices(m.devices);
      } catch (err) {
        return this.result(m, "failed", (err as Error).message, [], { reason: "invalid-scope" });
      }
      if (devices.length === 0) return this.result(m, "failed", "no device given", [], { reason: "no-device" });
    } else {
      try {
        const found = await this.lookup.lookup(query);
        this.emit("lookup", { cuid: m.cuid, mid: m.mid, found: found.found, devices: found.devices, detail: found.detail });
        if (!found.found) return this.result(m, "failed", found.detail, [], { reason: "no-device" });
        devices = found.devices;
      } catch (err) {
        return this.result(m, "failed", `NAT lookup failed: ${(err as Error).message}`, [], { reason: "lookup-failed" });
      }
    }
    let elements: ElementRef[];
    try {
      elements = this.elementsFor(devices, query);
    } catch (err) {
      return this.result(m, "failed", (err as Error).message, devices, { reason: "too-many-elements" });
    }

    if (this.consent.policy.mode === "auto") return this.enforce(m, lifetime, devices, elements);

    const policy = this.consent.policy;
    const script = this.backend.render([
      { add: elements.map((e) => ({ element: e, timeoutSec: lifetime, comment: mitigationTag(m.cuid, m.mid, this.owner) })) },
    ]);
    const pending: PendingMitigation = { input: m, lifetime, devices, elements };
    this.pendingMap.set(key, pending);
    let answer;
    try {
      answer = this.consent.request(key);
    } catch (err) {
      this.pendingMap.delete(key);
      return this.result(m, "failed", (err as Error).message, devices, { reason: "limit" });
    }
    answer.then(
      async (a) => {
        if (this.pendingMap.get(key) !== pending) return;
        this.pendingMap.delete(key);
        if (a.answer === "cancelled") return;
        let final: HandleResult;
        if (a.answer === "approved") {
          final = await this.trackInflight(key, this.enforce(pending.input, pending.lifetime, pending.devices, pending.elements));
        } else {
          this.remember(key, pending.lifetime);
          final = this.result(
            pending.input,
            "legitimate",
            a.by === "timeout" ? "consent timed out; treated as legitimate traffic" : "the administrator judged the traffic legitimate",
            pending.devices,
            {
              reason: a.by === "timeout" ? "consent-timeout" : "consent-rejected",
            },
          );
        }
        this.emit("decision", final);
      },
      (err) => {
        if (this.listenerCount("error") > 0) this.emit("error", err instanceof Error ? err : new Error(String(err)));
      },
    );
    const request: ConsentRequest = {
      cuid: m.cuid,
      mid: m.mid,
      action: this.action,
      devices,
      scope: m.scope,
      lifetime,
      script,
      deadline: this.consent.deadline(key) ?? Date.now() + policy.timeoutMs,
      onTimeout: policy.onTimeout,
    };
    this.emit("consent-request", request);
    return this.result(
      m,
      "pending",
      `waiting for the administrator's consent to ${this.action} ${devices.map((d) => d.address).join(", ")}`,
      devices,
      { script },
    );
  }

  /** The administrator approves a pending mitigation; false when nothing is pending. */
  approve(mid: number, cuid?: string): boolean {
    return this.answer(mid, cuid, true);
  }

  /** The administrator judges the traffic legitimate (the dialer reports conflict-cause 4). */
  reject(mid: number, cuid?: string): boolean {
    return this.answer(mid, cuid, false);
  }

  private answer(mid: number, cuid: string | undefined, approve: boolean): boolean {
    const keys = [...this.pendingMap.keys()].filter((k) => {
      const p = this.pendingMap.get(k)!.input;
      return p.mid === mid && (cuid === undefined || p.cuid === cuid);
    });
    if (keys.length > 1) throw new HomeError("UNKNOWN_MITIGATION", `mid ${mid} is pending for several clients; name the cuid`);
    if (keys.length === 0) return false;
    return approve ? this.consent.approve(keys[0]) : this.consent.reject(keys[0]);
  }

  /** Withdrawal, expiry or replacement: removes exactly what this mitigation added. */
  async end(m: { cuid: string; mid: number }): Promise<{ removed: number; script?: string }> {
    const key = keyOf(m.cuid, m.mid);
    // a withdrawal racing a lookup or an nft transaction waits for it, then removes what it added
    for (let p = this.inflight.get(key); p; p = this.inflight.get(key)) await p.catch(() => undefined);
    if (this.pendingMap.delete(key)) {
      this.consent.cancel(key);
      return { removed: 0 };
    }
    this.rejected.delete(key);
    return this.serial(async () => {
      const act = this.active.get(key);
      if (!act) return { removed: 0 };
      const script = await this.removeElements(act);
      this.forget(key, act);
      this.emit("enforcement", { change: "removed", cuid: act.cuid, mid: act.mid, elements: act.elements.length, script });
      return { removed: act.elements.length, script };
    });
  }

  /** Active mitigations with their devices and remaining lifetime (seconds, -1 indefinite). */
  activeMitigations(): Array<{
    cuid: string;
    mid: number;
    action: EnforcementAction;
    devices: Device[];
    elements: ElementRef[];
    remaining: number;
  }> {
    const now = Date.now();
    return [...this.active.values()].map((a) => ({
      cuid: a.cuid,
      mid: a.mid,
      action: a.action,
      devices: a.devices,
      elements: a.elements,
      remaining: a.expiresAt === undefined ? -1 : Math.max(0, Math.ceil((a.expiresAt - now) / 1000)),
    }));
  }

  pending(): Array<{ cuid: string; mid: number; devices: Device[] }> {
    return [...this.pendingMap.values()].map((p) => ({ cuid: p.input.cuid, mid: p.input.mid, devices: p.devices }));
  }

  /**
   * Compares the table with what the caller believes is active (e.g. the dialer's mitigations()
   * after a restart). Elements of unknown mitigations are deleted, or adopted with adoptUnknown.
   */
  async reconcile(believed: Array<{ cuid: string; mid: number }>, opts: { adoptUnknown?: boolean } = {}): Promise<ReconcileReport> {
    return this.serial(async () => {
      await this.ensureSetup();
      const report: ReconcileReport = { kept: [], missing: [], removed: [], adopted: [] };
      const believedByTag = new Map(believed.map((b) => [mitigationTag(b.cuid, b.mid, this.owner), b]));
      const table = await this.backend.list();
      // drop in-memory mitigations nobody believes in any more
      for (const [key, act] of [...this.active]) {
        if (!believedByTag.has(act.tag)) {
          this.forget(key, act);
          if (table === undefined) report.removed.push(...act.elements);
        }
      }
      if (table === undefined) {
        for (const b of believed) (this.active.has(keyOf(b.cuid, b.mid)) ? report.kept : report.missing).push(b);
        return report;
      }
      const byTag = new Map<string, TableElement[]>();
      for (const e of table) {
        const tag = e.comment ?? "";
        let l = byTag.get(tag);
        if (!l) byTag.set(tag, (l = []));
        l.push(e);
      }
      const toDelete: TableElement[] = [];
      for (const [tag, els] of byTag) {
        const b = believedByTag.get(tag);
        const parsed = parseMitigationTag(tag);
        // another dialer's elements (another upstream ISP sharing this table): not ours to judge
        if (this.owner !== undefined && parsed?.owner !== this.owner) continue;
        if (this.owner === undefined && parsed?.owner !== undefined) continue;
        if (b || (opts.adoptUnknown && parsed)) {
          const cuid = b ? b.cuid : parsed!.cuid;
          const mid = b ? b.mid : parsed!.mid;
          const key = keyOf(cuid, mid);
          if (!this.active.has(key)) {
            const expires = els.reduce<number | undefined>(
              (mx, e) => (e.expiresSec === undefined || mx === undefined ? undefined : Math.max(mx, e.expiresSec)),
              0,
            );
            this.track({
              cuid,
              mid,
              tag,
              action: els[0].set.startsWith("quarantine") ? "quarantine" : "block",
              devices: [],
              elements: els.map((e) => ({ set: e.set, key: e.key })),
              lifetime: expires ?? -1,
              expiresAt: expires === undefined ? undefined : Date.now() + expires * 1000,
            });
          }
          if (!b) report.adopted.push(tag);
        } else {
          toDelete.push(...els);
        }
      }
      for (const b of believed) {
        const has = (byTag.get(mitigationTag(b.cuid, b.mid, this.owner)) ?? []).length > 0;
        if (has) report.kept.push(b);
        else {
          report.missing.push(b);
          const act = this.active.get(keyOf(b.cuid, b.mid));
          if (act) this.forget(keyOf(b.cuid, b.mid), act);
        }
      }
      if (toDelete.length > 0) {
        report.script = await this.backend.delete(toDelete);
        report.removed = toDelete;
      }
      return report;
    });
  }

  /**
   * Puts back the elements a mitigation held before a restart when the kernel lost them (reboot,
   * flushed table), without a new NAT lookup: the flows that found the device may be gone.
   */
  async restore(m: { cuid: string; mid: number; lifetime: number; enforcement: StoredEnforcement }): Promise<HandleResult> {
    if (this.closed) return this.result(m, "failed", "the enforcer is closed", [], { reason: "closed" });
    const key = keyOf(m.cuid, m.mid);
    const lifetime = m.lifetime;
    try {
      return await this.serial(async () => {
        await this.ensureSetup();
        const tag = mitigationTag(m.cuid, m.mid, this.owner);
        const elements = m.enforcement.elements;
        const script = await this.backend.add(this.addItems(key, elements, lifetime, tag));
        const act: ActiveMitigation = {
          cuid: m.cuid,
          mid: m.mid,
          tag,
          action: m.enforcement.action,
          devices: [],
          elements,
          lifetime,
          expiresAt: lifetime === -1 ? undefined : Date.now() + lifetime * 1000,
        };
        this.track(act);
        this.emit("enforcement", { change: "reconciled", cuid: m.cuid, mid: m.mid, elements: elements.length, script });
        return {
          ...this.result(m, "enforced", `restored after restart: ${this.describe(act)}`, [], { script, lifetime, elements }),
          action: act.action,
        };
      });
    } catch (err) {
      const reason: FailureReason = err instanceof NftError ? "nft-error" : "backend-error";
      return this.result(m, "failed", (err as Error).message, [], { reason });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.consent.close();
    this.pendingMap.clear();
    for (const a of this.active.values()) if (a.timer) clearTimeout(a.timer);
    await this.queue.catch(() => undefined);
    await this.lookup.close();
  }

  // ------------------------------------------------------------------ internals

  private elementsFor(devices: Device[], q: NatQuery): ElementRef[] {
    const els =
      this.action === "block"
        ? blockElements(devices, { targetPrefixes: q.targetPrefixes, targetProtocols: q.targetProtocols, targetPorts: q.targetPorts })
        : quarantineElements(devices);
    if (els.length > this.maxElements) throw new TooManyElementsError(els.length, this.maxElements);
    if (els.length === 0) throw new TooManyElementsError(0, this.maxElements);
    return els;
  }

  private async enforce(m: MitigationInput, lifetime: number, devices: Device[], elements: ElementRef[]): Promise<HandleResult> {
    if (this.closed) return this.result(m, "failed", "the enforcer is closed", devices, { reason: "closed" });
    const key = keyOf(m.cuid, m.mid);
    try {
      return await this.serial(async () => {
        await this.ensureSetup();
        const tag = mitigationTag(m.cuid, m.mid, this.owner);
        const script = await this.backend.add(this.addItems(key, elements, lifetime, tag));
        const act: ActiveMitigation = {
          cuid: m.cuid,
          mid: m.mid,
          tag,
          action: this.action,
          devices,
          elements,
          lifetime,
          expiresAt: lifetime === -1 ? undefined : Date.now() + lifetime * 1000,
        };
        this.track(act);
        // new elements count from zero now; shared ones from what was last read of them
        act.base = { at: Date.now(), ...(this.sumCounts(act) ?? { bytes: 0, packets: 0 }) };
        this.emit("enforcement", { change: "added", cuid: m.cuid, mid: m.mid, elements: elements.length, script });
        return this.result(m, "enforced", this.describe(act), devices, { script, lifetime, elements: act.elements });
      });
    } catch (err) {
      const reason: FailureReason = err instanceof NftError ? "nft-error" : "backend-error";
      return this.result(m, "failed", (err as Error).message, devices, { reason });
    }
  }

  private async refresh(m: MitigationInput, act: ActiveMitigation, q: NatQuery, lifetime: number): Promise<HandleResult> {
    // Devices may have opened new NAT mappings; a lookup that finds none keeps the block as it is.
    let devices = act.devices;
    try {
      const found = await this.lookup.lookup(q);
      if (found.found) {
        const known = new Set(act.devices.map((d) => d.address));
        devices = [...act.devices, ...found.devices.filter((d) => !known.has(d.address))];
      }
    } catch {
      // keep the current devices
    }
    let elements: ElementRef[];
    try {
      elements = this.elementsFor(devices, q);
    } catch (err) {
      return this.result(m, "failed", (err as Error).message, devices, { reason: "too-many-elements" });
    }
    const key = keyOf(m.cuid, m.mid);
    try {
      return await this.serial(async () => {
        const merged = new Map(act.elements.map((e) => [elementId(e), e]));
        for (const e of elements) merged.set(elementId(e), e);
        const all = [...merged.values()];
        // the refreshed lifetime must apply to this mitigation's own elements before computing timeouts
        act.lifetime = lifetime;
        act.expiresAt = lifetime === -1 ? undefined : Date.now() + lifetime * 1000;
        let script = await this.backend.add(this.addItems(key, all, lifetime, act.tag));
        script += await this.ensureExtended(key, all, lifetime, act.tag);
        for (const e of all) this.hold(key, e);
        act.elements = all;
        act.devices = devices;
        this.arm(key, act);
        this.emit("enforcement", { change: "refreshed", cuid: act.cuid, mid: act.mid, elements: all.length, script });
        return this.result(m, "enforced", this.describe(act), devices, { script, lifetime, elements: act.elements });
      });
    } catch (err) {
      return this.result(m, "failed", (err as Error).message, devices, { reason: err instanceof NftError ? "nft-error" : "backend-error" });
    }
  }

  /**
   * Kernels before 6.10 keep an existing element's timeout on `add`, and no kernel drops a timeout
   * that way (refresh to an indefinite lifetime). Elements whose expiry did not follow are re-added:
   * for plain sets in one transaction (add, delete, add); interval sets refuse that, so there it is
   * a delete then an add (a gap of one nft run).
   */
  private async ensureExtended(key: string, elements: ElementRef[], lifetime: number, tag: string): Promise<string> {
    const table = await this.backend.list();
    if (!table) return "";
    const want = new Set(elements.map(elementId));
    const stale: ElementRef[] = [];
    for (const t of table) {
      if (!want.has(elementId(t))) continue;
      const timeout = this.effectiveTimeout(t, key, lifetime);
      const lagging =
        timeout === undefined
          ? t.expiresSec !== undefined
          : t.expiresSec !== undefined && t.expiresSec < Math.min(timeout, MAX_NFT_TIMEOUT_SEC) - 5;
      if (lagging) stale.push({ set: t.set, key: t.key });
    }
    if (stale.length === 0) return "";
    const items = (els: ElementRef[]) =>
      els.map((e) => ({ element: e, timeoutSec: this.effectiveTimeout(e, key, lifetime), comment: tag }));
    const plain = stale.filter((e) => e.set.startsWith("quarantine"));
    const interval = stale.filter((e) => !e.set.startsWith("quarantine"));
    let script = "";
    if (plain.length > 0) {
      // add bare first so the delete cannot fail on an element that expired meanwhile
      script += await this.backend.change([{ add: plain.map((e) => ({ element: e })) }, { delete: plain }, { add: items(plain) }]);
    }
    if (interval.length > 0) {
      script += await this.backend.delete(interval);
      script += await this.backend.add(items(interval));
    }
    return script;
  }

  /** Elements to add; one another mitigation holds keeps the longer of the two timeouts. */
  private addItems(key: string, elements: ElementRef[], lifetime: number, tag: string): ElementAdd[] {
    return elements.map((e) => ({ element: e, timeoutSec: this.effectiveTimeout(e, key, lifetime), comment: tag }));
  }

  private effectiveTimeout(e: ElementRef, ownKey: string | undefined, ownLifetime: number | undefined): number | undefined {
    let best = ownLifetime === undefined ? 0 : ownLifetime;
    if (best === -1) return undefined;
    const now = Date.now();
    for (const k of this.holders.get(elementId(e)) ?? []) {
      if (k === ownKey) continue;
      const other = this.active.get(k);
      if (!other) continue;
      if (other.expiresAt === undefined) return undefined;
      best = Math.max(best, Math.ceil((other.expiresAt - now) / 1000));
    }
    return best > 0 ? best : 1;
  }

  private async removeElements(act: ActiveMitigation): Promise<string | undefined> {
    const key = keyOf(act.cuid, act.mid);
    const sole: ElementRef[] = [];
    const shared: ElementRef[] = [];
    for (const e of act.elements) {
      const h = this.holders.get(elementId(e));
      if (h && [...h].some((k) => k !== key && this.active.has(k))) shared.push(e);
      else sole.push(e);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      // delete only what the kernel still holds: an expired element would fail the transaction
      const table = await this.backend.list();
      const present = table ? new Set(table.map((t) => elementId(t))) : undefined;
      const del = present ? sole.filter((e) => present.has(elementId(e))) : sole;
      const keep = shared.filter((e) => !present || present.has(elementId(e)));
      // the remaining holders' timeouts now decide for shared elements
      const ops: ElementOp[] = [
        { delete: del },
        { add: keep.map((e) => ({ element: e, timeoutSec: this.effectiveTimeout(e, key, undefined) })) },
      ];
      if (del.length === 0 && keep.length === 0) return undefined;
      try {
        return (await this.backend.change(ops)) || undefined;
      } catch (err) {
        if (attempt === 0 && this.backend.isMissingElement(err)) continue;
        throw err;
      }
    }
    return undefined;
  }

  private async ensureSetup(): Promise<void> {
    if (this.setupDone) return;
    await this.backend.setup();
    this.setupDone = true;
  }

  private track(act: ActiveMitigation): void {
    const key = keyOf(act.cuid, act.mid);
    this.active.set(key, act);
    for (const e of act.elements) this.hold(key, e);
    this.arm(key, act);
  }

  private hold(key: string, e: ElementRef): void {
    const id = elementId(e);
    let h = this.holders.get(id);
    if (!h) this.holders.set(id, (h = new Set()));
    h.add(key);
  }

  /** A timer mirrors the kernel's timeout so the record goes when the kernel drops the elements. */
  private arm(key: string, act: ActiveMitigation): void {
    if (act.timer) clearTimeout(act.timer);
    act.timer = undefined;
    if (act.expiresAt === undefined) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, act.expiresAt - Date.now()));
    act.timer = setTimeout(() => {
      act.timer = undefined;
      if (this.active.get(key) !== act) return;
      if (act.expiresAt! > Date.now() + 50) return this.arm(key, act);
      this.forget(key, act);
      this.emit("enforcement", { change: "expired", cuid: act.cuid, mid: act.mid, elements: act.elements.length });
    }, wait);
    act.timer.unref();
  }

  private forget(key: string, act: ActiveMitigation): void {
    if (act.timer) clearTimeout(act.timer);
    this.active.delete(key);
    for (const e of act.elements) {
      const h = this.holders.get(elementId(e));
      if (!h) continue;
      h.delete(key);
      if (h.size === 0) {
        this.holders.delete(elementId(e));
        this.counts.delete(elementId(e));
      }
    }
  }

  private remember(key: string, lifetime: number): void {
    this.rejected.set(key, lifetime === -1 ? Number.MAX_SAFE_INTEGER : Date.now() + lifetime * 1000);
    while (this.rejected.size > REJECTED_MEMORY) this.rejected.delete(this.rejected.keys().next().value as string);
  }

  private describe(act: ActiveMitigation): string {
    const who =
      act.devices.length > 0
        ? act.devices.map((d) => `${d.address}${d.mac ? ` (${d.mac})` : ""}`).join(", ")
        : `${act.elements.length} element(s)`;
    const life = act.lifetime === -1 ? "until withdrawn" : `for ${act.lifetime} s`;
    return `${act.action === "block" ? "blocked" : "quarantined"} ${who} ${life} (${act.elements.length} nft element(s) in inet ${this.table})`;
  }

  private result(
    m: { cuid: string; mid: number },
    outcome: DecisionOutcome,
    detail: string,
    devices: Device[],
    extra: Partial<HandleResult> = {},
  ): HandleResult {
    return { cuid: m.cuid, mid: m.mid, outcome, detail, devices, action: this.action, ...extra };
  }

  private trackInflight(key: string, p: Promise<HandleResult>): Promise<HandleResult> {
    this.inflight.set(key, p);
    const clear = () => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    };
    p.then(clear, clear);
    return p;
  }

  /** Runs nft work one change at a time, so holder counts and transactions never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Validates caller-supplied devices into Device records (no flows). */
function givenDevices(list: unknown): Device[] {
  if (!Array.isArray(list) || list.length > 256) throw new InvalidScopeError("devices", "must be a list of at most 256 devices");
  return list.map((d, i) => {
    const o = (typeof d === "object" && d !== null ? d : {}) as Record<string, unknown>;
    const a = typeof o.address === "string" ? canonicalAddress(o.address) : undefined;
    if (!a) throw new InvalidScopeError(`devices[${i}].address`, "not an IP address");
    const dev: Device = { address: a.address, family: a.family, otherAddresses: [], ports: [], publicPorts: [], protocols: [], flows: [] };
    if (o.mac !== undefined) {
      const mac = typeof o.mac === "string" ? canonicalMac(o.mac) : undefined;
      if (!mac) throw new InvalidScopeError(`devices[${i}].mac`, "not a MAC address");
      dev.mac = mac;
    }
    if (o.otherAddresses !== undefined) {
      if (!Array.isArray(o.otherAddresses) || o.otherAddresses.length > 64)
        throw new InvalidScopeError(`devices[${i}].otherAddresses`, "must be a list of at most 64 addresses");
      dev.otherAddresses = o.otherAddresses.map((x, j) => {
        const c = typeof x === "string" ? canonicalAddress(x) : undefined;
        if (!c) throw new InvalidScopeError(`devices[${i}].otherAddresses[${j}]`, "not an IP address");
        return c.address;
      });
    }
    return dev;
  });
}

export function createHomeEnforcer(opts: HomeEnforcerOptions): HomeEnforcer {
  return new HomeEnforcer(opts);
}
