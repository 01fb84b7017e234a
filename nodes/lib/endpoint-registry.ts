// Process-wide registry of the call-home engines that endpoint config nodes own. Node-RED stops
// and recreates config nodes on a full deploy (and on a restart of flows); the engine, with its
// sockets and sessions, outlives the node object here for a short grace period and is adopted by
// the node that comes back with the same id and the same settings fingerprint. Changed settings,
// a removed node, a stop of the flows or of the runtime close it at once.
import * as crypto from "node:crypto";
import type { EventEmitter } from "node:events";

export interface Engine extends EventEmitter {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Receives the engine's events while a node owns it. */
export type Sink = (event: string, args: unknown[]) => void;

/** Events an engine emits while no node owns it (between close and adoption) are kept, up to this many. */
const MAX_QUEUED = 500;
/** Longest a closed, unremoved endpoint waits to be adopted, should the runtime not say it is done. */
export const DEFAULT_GRACE_MS = 10000;

interface Entry {
  key: string;
  kind: string;
  fingerprint: string;
  /** Listener endpoints: the bound port, so a new engine on that port first stops an orphan. */
  port?: number;
  engine: Engine;
  started: Promise<void>;
  sink: Sink | undefined;
  queue: Array<[string, unknown[]]>;
  dropped: number;
  timer: NodeJS.Timeout | undefined;
  stopping: Promise<void> | undefined;
  /** What the owning node remembers about the engine across adoptions (status text). */
  memo: Record<string, unknown>;
}

export interface EngineSpec<E extends Engine> {
  /** Registry key: the endpoint config node id (or "node:<id>" for a v1 node's implicit endpoint). */
  key: string;
  kind: "isp" | "home";
  fingerprint: string;
  port?: number;
  /** The events forwarded to the owner. */
  events: readonly string[];
  create(): E;
}

export interface Lease<E extends Engine> {
  readonly engine: E;
  /** Resolves once the engine runs (at once for an adopted one). */
  readonly started: Promise<void>;
  /** True when a running engine (and its sessions) was taken over from the previous deploy. */
  readonly adopted: boolean;
  /** Kept with the engine across adoptions. */
  readonly memo: Record<string, unknown>;
  /**
   * Gives the engine up. removed=false (the node may come back with the same settings): kept for
   * the grace period, with the events the node had not delivered yet (`unsent`) kept for the next
   * owner; removed=true: stopped now. Resolves when nothing more needs waiting for.
   */
  release(removed: boolean, unsent?: Array<[string, unknown[]]>): Promise<void>;
}

/** Runtime event emitter as Node-RED exposes it (RED.events). */
export interface RuntimeEvents {
  on(event: string, listener: (...args: any[]) => void): unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
  removeListener(event: string, listener: (...args: any[]) => void): unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
}

class EngineRegistry {
  private readonly entries = new Map<string, Entry>();
  /** Per-process secret: fingerprints of settings that include keys cannot be tested offline. */
  private readonly secret = crypto.randomBytes(32);
  private readonly hooked = new WeakSet<object>();
  graceMs = DEFAULT_GRACE_MS;

  /** HMAC of the canonical JSON of the settings (buffers as hex); the settings themselves are not kept. */
  fingerprint(settings: unknown): string {
    return crypto.createHmac("sha256", this.secret).update(canonical(settings)).digest("hex");
  }

  /**
   * Hooks the runtime once: when flows have started, an endpoint still waiting for its node will
   * not be adopted any more; when flows stop without a deploy (stop flows, shutdown), none will.
   */
  hook(events: RuntimeEvents): void {
    if (this.hooked.has(events)) return;
    this.hooked.add(events);
    events.on("flows:started", () => void this.stopOrphans());
    events.on("runtime-event", (e: { id?: string; payload?: { state?: string; deploy?: boolean } }) => {
      if (e && e.id === "runtime-state" && e.payload?.state === "stop" && !e.payload.deploy) void this.stopOrphans();
    });
  }

  acquire<E extends Engine>(spec: EngineSpec<E>, sink: Sink): Lease<E> {
    const existing = this.entries.get(spec.key);
    if (existing && existing.fingerprint === spec.fingerprint && existing.kind === spec.kind && !existing.sink && !existing.stopping)
      return this.adopt<E>(existing, sink);
    // An orphan with the very same settings under another key: a v1 node migrated to an endpoint
    // config node (or an endpoint replaced by an identical one) keeps its sessions.
    for (const e of this.entries.values()) {
      if (e !== existing && !e.sink && !e.stopping && e.kind === spec.kind && e.fingerprint === spec.fingerprint) {
        this.entries.delete(e.key);
        e.key = spec.key;
        if (existing) void this.stopEntry(existing);
        this.entries.set(spec.key, e);
        return this.adopt<E>(e, sink);
      }
    }
    const before: Array<Promise<void>> = [];
    if (existing) before.push(this.stopEntry(existing));
    if (spec.port !== undefined && spec.port !== 0) {
      for (const e of this.entries.values())
        if (e !== existing && !e.sink && e.kind === spec.kind && e.port === spec.port) before.push(this.stopEntry(e));
    }
    const engine = spec.create();
    const entry: Entry = {
      key: spec.key,
      kind: spec.kind,
      fingerprint: spec.fingerprint,
      port: spec.port,
      engine,
      started: Promise.resolve(),
      sink,
      queue: [],
      dropped: 0,
      timer: undefined,
      stopping: undefined,
      memo: {},
    };
    for (const name of spec.events) engine.on(name, (...args: unknown[]) => this.forward(entry, name, args));
    entry.started = Promise.all(before).then(() => (entry.stopping ? undefined : engine.start()));
    entry.started.catch(() => undefined);
    this.entries.set(spec.key, entry);
    return this.lease<E>(entry, false);
  }

  /** Keys of the engines alive now (tests, and the no-leak checks). */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Stops every engine no node owns; resolves once they are stopped. */
  stopOrphans(): Promise<void> {
    return Promise.all([...this.entries.values()].filter((e) => !e.sink).map((e) => this.stopEntry(e))).then(() => undefined);
  }

  private adopt<E extends Engine>(entry: Entry, sink: Sink): Lease<E> {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.sink = sink;
    const queued = entry.queue.splice(0);
    if (entry.dropped > 0) sink("queue-overflow", [entry.dropped]);
    entry.dropped = 0;
    for (const [name, args] of queued) sink(name, args);
    return this.lease<E>(entry, true);
  }

  private lease<E extends Engine>(entry: Entry, adopted: boolean): Lease<E> {
    let released = false;
    return {
      engine: entry.engine as E,
      started: entry.started,
      adopted,
      memo: entry.memo,
      release: (removed: boolean, unsent: Array<[string, unknown[]]> = []): Promise<void> => {
        if (released) return Promise.resolve();
        released = true;
        // Another lease took this engine over meanwhile: nothing of ours to give up.
        if (this.entries.get(entry.key) !== entry || entry.stopping) return entry.stopping ?? Promise.resolve();
        entry.sink = undefined;
        if (removed) return this.stopEntry(entry);
        entry.queue = [...unsent, ...entry.queue].slice(-MAX_QUEUED);
        entry.timer = setTimeout(() => void this.stopEntry(entry), this.graceMs);
        entry.timer.unref();
        return Promise.resolve();
      },
    };
  }

  private forward(entry: Entry, name: string, args: unknown[]): void {
    if (entry.sink) {
      entry.sink(name, args);
      return;
    }
    if (entry.queue.length >= MAX_QUEUED) {
      entry.queue.shift();
      entry.dropped++;
    }
    entry.queue.push([name, args]);
  }

  private stopEntry(entry: Entry): Promise<void> {
    if (entry.stopping) return entry.stopping;
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.sink = undefined;
    entry.queue.length = 0;
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    const engine = entry.engine;
    entry.stopping = entry.started
      .catch(() => undefined)
      .then(() => engine.stop())
      .catch(() => undefined)
      .finally(() => {
        engine.removeAllListeners();
        engine.on("error", () => undefined); // a socket error after the stop is not fatal
      });
    return entry.stopping;
  }
}

/** JSON with sorted keys and buffers as hex, so equal settings give equal text. */
function canonical(value: unknown): string {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return JSON.stringify(`hex:${Buffer.from(value).toString("hex")}`);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value as Record<string, unknown>)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

const GLOBAL_KEY = Symbol.for("@dots-call-home/node-red.engine-registry");

/** The one registry of this process, even should two copies of the package be loaded. */
export const engines: EngineRegistry =
  ((globalThis as Record<symbol, unknown>)[GLOBAL_KEY] as EngineRegistry | undefined) ??
  ((globalThis as Record<symbol, unknown>)[GLOBAL_KEY] = new EngineRegistry());
