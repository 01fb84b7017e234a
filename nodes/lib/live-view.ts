// The live DOTS view's registry: endpoints (listener and dialer engines) and filter-action nodes
// register here while they run; the dots-live-view plugin's admin routes read a snapshot of it for
// the editor's sidebar and pass Approve / Reject on to a filter-action's enforcer. Only fields
// chosen here leave the process: never keys, scripts or request bodies.
import type { EventEmitter } from "node:events";
import type { CallHomeListener } from "../../src/dots/isp-engine";
import type { CallHomeDialer } from "../../src/dots/home-engine";
import type { HomeEnforcer } from "../../src/home/enforcer";

/** Rows per list in a snapshot; the totals are sent beside them. */
export const MAX_ROWS = 100;
/** Recent errors kept (oldest dropped first). */
export const MAX_ERRORS = 50;
/** Longest text of any string taken from a peer or an error. */
const MAX_TEXT = 300;

export interface Rows<T> {
  total: number;
  rows: T[];
}

export interface LiveError {
  time: string;
  source: string;
  message: string;
  /** The same error from the same source in a row counts up here instead of taking another slot. */
  count: number;
}

export interface LiveSnapshot {
  time: string;
  isp: Array<{
    id: string;
    name: string;
    listening?: string;
    sessions: Rows<{
      id: string;
      home: string;
      identity: string;
      transport: string;
      remote: string;
      cipher: string;
      since: string;
      heartbeatsIn: number;
      heartbeatsOut: number;
      lastHeartbeat?: string;
    }>;
    mitigations: Rows<{
      home: string;
      connected: boolean;
      mid: number;
      status: string;
      lifetime: number;
      remaining: number;
      withdrawn: boolean;
    }>;
  }>;
  home: Array<{
    id: string;
    name: string;
    connected: boolean;
    connection?: { transport: string; remote: string; cipher: string; since: string };
    lastDisconnect?: string;
    mitigations: Rows<{ mid: number; status: string; lifetime: number }>;
  }>;
  filters: Array<{
    id: string;
    name: string;
    blocks: Rows<{ mid: number; cuid: string; action: string; devices: string[]; remaining: number }>;
    pending: Rows<{ mid: number; cuid: string; devices: string[] }>;
  }>;
  errors: LiveError[];
}

interface Owner {
  id: string;
  name?: string;
}

interface HeartbeatCount {
  in: number;
  out: number;
  last: number;
}

interface HomeConnection {
  transport: string;
  remote: string;
  cipher: string;
  since: number;
}

type Endpoint = { owner: Owner; kind: "isp"; engine: CallHomeListener } | { owner: Owner; kind: "home"; engine: CallHomeDialer };

const text = (v: unknown): string => String(v ?? "").slice(0, MAX_TEXT);
const iso = (ms: number): string => new Date(ms).toISOString();
function rows<T>(all: T[]): Rows<T> {
  return { total: all.length, rows: all.slice(0, MAX_ROWS) };
}

export class LiveView {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly filters = new Map<string, { owner: Owner; enforcer: HomeEnforcer }>();
  private readonly errors: LiveError[] = [];
  /** Per engine, so counters survive a deploy that hands the engine to a new node. */
  private readonly heartbeats = new WeakMap<object, Map<string, HeartbeatCount>>();
  private readonly connections = new WeakMap<object, HomeConnection | undefined>();
  private readonly lastDisconnect = new WeakMap<object, string>();
  private readonly listening = new WeakMap<object, string>();
  private readonly watched = new WeakSet<object>();

  /** An endpoint runs `engine`; returns the call that takes it off the view (node close). */
  addEndpoint(owner: Owner, kind: "isp" | "home", engine: EventEmitter): () => void {
    const entry = { owner, kind, engine } as Endpoint;
    this.endpoints.set(owner.id, entry);
    this.watch(owner, entry);
    return () => {
      if (this.endpoints.get(owner.id) === entry) this.endpoints.delete(owner.id);
    };
  }

  /** A filter-action node's enforcer; returns the call that takes it off the view. */
  addFilter(owner: Owner, enforcer: HomeEnforcer): () => void {
    const entry = { owner, enforcer };
    this.filters.set(owner.id, entry);
    if (!this.watched.has(enforcer)) {
      this.watched.add(enforcer);
      enforcer.on("error", (e: Error) => this.error(owner, e));
      enforcer.on("decision", (r) => {
        if (r.outcome === "failed") this.error(owner, `mid ${r.mid}: ${r.reason ?? r.detail ?? "failed"}`);
      });
    }
    return () => {
      if (this.filters.get(owner.id) === entry) this.filters.delete(owner.id);
    };
  }

  /** Adds to the recent errors (the oldest go first beyond MAX_ERRORS). */
  error(owner: Owner, e: unknown): void {
    const message = text(e instanceof Error ? e.message : String(e));
    const source = text(owner.name || owner.id);
    const last = this.errors[this.errors.length - 1];
    if (last && last.source === source && last.message === message) {
      last.time = iso(Date.now());
      last.count++;
      return;
    }
    this.errors.push({ time: iso(Date.now()), source, message, count: 1 });
    if (this.errors.length > MAX_ERRORS) this.errors.splice(0, this.errors.length - MAX_ERRORS);
  }

  /**
   * Approve (true) or reject (false) a pending consent of filter `filterId`. Returns "unknown-node"
   * or "not-pending" when there is nothing to decide; the enforcer's decision event does the rest.
   */
  decide(filterId: string, mid: number, cuid: string | undefined, approve: boolean): "ok" | "unknown-node" | "not-pending" {
    const f = this.filters.get(filterId);
    if (!f) return "unknown-node";
    const ok = approve ? f.enforcer.approve(mid, cuid) : f.enforcer.reject(mid, cuid);
    return ok ? "ok" : "not-pending";
  }

  snapshot(now = Date.now()): LiveSnapshot {
    const snap: LiveSnapshot = { time: iso(now), isp: [], home: [], filters: [], errors: this.errors.map((e) => ({ ...e })).reverse() };
    const byName = <T extends { owner: Owner }>(a: T, b: T): number =>
      (a.owner.name || a.owner.id).localeCompare(b.owner.name || b.owner.id);
    for (const ep of [...this.endpoints.values()].sort(byName)) {
      const name = text(ep.owner.name || "");
      if (ep.kind === "isp") {
        const hb = this.heartbeats.get(ep.engine);
        const sessions = ep.engine
          .sessions()
          .sort((a, b) => a.home.localeCompare(b.home))
          .map((s) => {
            const h = hb?.get(s.id);
            return {
              id: text(s.id),
              home: text(s.home),
              identity: text(s.peer.identity),
              transport: text(s.transport),
              remote: text(s.remoteAddress.includes(":") ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`),
              cipher: text(s.cipher),
              since: iso(s.since),
              heartbeatsIn: h?.in ?? 0,
              heartbeatsOut: h?.out ?? 0,
              ...(h?.last ? { lastHeartbeat: iso(h.last) } : {}),
            };
          });
        const mitigations = ep.engine
          .homeMitigations()
          .sort((a, b) => a.home.localeCompare(b.home) || a.mid - b.mid)
          .map((m) => ({
            home: text(m.home),
            connected: m.connected,
            mid: m.mid,
            status: text(m.status ?? ""),
            lifetime: m.lifetime,
            remaining: m.expiresAt === Infinity ? -1 : Math.max(0, Math.ceil((m.expiresAt - now) / 1000)),
            withdrawn: m.withdrawn,
          }));
        const where = this.listening.get(ep.engine);
        snap.isp.push({
          id: ep.owner.id,
          name,
          ...(where ? { listening: where } : {}),
          sessions: rows(sessions),
          mitigations: rows(mitigations),
        });
      } else {
        const c = this.connections.get(ep.engine);
        const connected = ep.engine.connected;
        const gone = this.lastDisconnect.get(ep.engine);
        const mitigations = ep.engine
          .mitigations()
          .sort((a, b) => a.mid - b.mid)
          .map((m) => ({ mid: m.mid, status: text(m.status), lifetime: m.lifetime }));
        snap.home.push({
          id: ep.owner.id,
          name,
          connected,
          ...(connected && c ? { connection: { transport: c.transport, remote: c.remote, cipher: c.cipher, since: iso(c.since) } } : {}),
          ...(!connected && gone ? { lastDisconnect: gone } : {}),
          mitigations: rows(mitigations),
        });
      }
    }
    for (const f of [...this.filters.values()].sort(byName)) {
      const devices = (d: Array<{ address: string }>): string[] => d.slice(0, 20).map((x) => text(x.address));
      const blocks = f.enforcer
        .activeMitigations()
        .sort((a, b) => a.mid - b.mid)
        .map((b) => ({ mid: b.mid, cuid: text(b.cuid), action: text(b.action), devices: devices(b.devices), remaining: b.remaining }));
      const pending = f.enforcer
        .pending()
        .sort((a, b) => a.mid - b.mid)
        .map((p) => ({ mid: p.mid, cuid: text(p.cuid), devices: devices(p.devices) }));
      snap.filters.push({ id: f.owner.id, name: text(f.owner.name || ""), blocks: rows(blocks), pending: rows(pending) });
    }
    return snap;
  }

  /** Listens to an engine once (it may pass from node to node across deploys). */
  private watch(owner: Owner, ep: Endpoint): void {
    if (this.watched.has(ep.engine)) return;
    this.watched.add(ep.engine);
    const engine = ep.engine;
    // The owner of the moment names the source of an error.
    const who = (): Owner => [...this.endpoints.values()].find((e) => e.engine === engine)?.owner ?? owner;
    if (ep.kind === "isp") this.watchIsp(ep.engine, who);
    else this.watchHome(ep.engine, who);
  }

  private watchIsp(engine: CallHomeListener, who: () => Owner): void {
    const counts = new Map<string, HeartbeatCount>();
    this.heartbeats.set(engine, counts);
    engine.on("error", (e) => this.error(who(), e));
    engine.on("listening", (l) =>
      this.listening.set(engine, `${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port} ${l.transports.join("+")}`),
    );
    engine.on("heartbeat", (h) => {
      let c = counts.get(h.sessionId);
      if (!c) {
        if (counts.size >= 20000) counts.delete(counts.keys().next().value as string);
        c = { in: 0, out: 0, last: 0 };
        counts.set(h.sessionId, c);
      }
      if (h.direction === "in") c.in++;
      else c.out++;
      c.last = Date.now();
    });
    engine.on("session-down", (s, reason) => {
      counts.delete(s.id);
      this.error(who(), `session of ${s.home} down: ${reason}`);
    });
    engine.on("auth-failure", (f) => this.error(who(), `${f.reason}: ${f.message}`));
    engine.on("drop", (d) => this.error(who(), `${d.remoteAddress} banned until ${d.until}: ${d.message}`));
    engine.on("identity-conflict", (c) => this.error(who(), `identity conflict: ${c.message}`));
  }

  private watchHome(engine: CallHomeDialer, who: () => Owner): void {
    engine.on("error", (e) => this.error(who(), e));
    engine.on("connected", (c) => {
      const remote = `${c.remoteAddress.includes(":") ? `[${c.remoteAddress}]` : c.remoteAddress}:${c.remotePort}`;
      this.connections.set(engine, { transport: text(c.transport), remote: text(remote), cipher: text(c.cipher), since: Date.now() });
    });
    engine.on("disconnected", (d) => {
      this.connections.set(engine, undefined);
      this.lastDisconnect.set(engine, text(d.reason));
      this.error(who(), `disconnected: ${d.reason}`);
    });
  }
}

const GLOBAL_KEY = Symbol.for("@dots-call-home/node-red.live-view");

/** The one live view of this process, even should two copies of the package be loaded. */
export const liveView: LiveView =
  ((globalThis as Record<symbol, unknown>)[GLOBAL_KEY] as LiveView | undefined) ??
  ((globalThis as Record<symbol, unknown>)[GLOBAL_KEY] = new LiveView());
