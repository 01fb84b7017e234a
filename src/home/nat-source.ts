// Where the NAT mappings come from: the kernel via the `conntrack` tool (a listing per lookup, or
// an index kept current by `conntrack -E` events), /proc/net/nf_conntrack (OpenWrt), or a static
// table (labs, demos, a table handed in by the caller).
import { promises as fs } from "node:fs";
import { canonicalAddress, canonicalMac, isHostPrefix } from "./address";
import { parseConntrackLine, type ConntrackFlow, type FlowEnd } from "./conntrack-parse";
import { HomeError, InvalidTableError, ToolMissingError, CommandFailedError, ClosedError, PermissionDeniedError } from "./errors";
import { FlowIndex, matchFlow } from "./flow-index";
import { CommandRunner, type StreamHandle } from "./runner";
import type { NatQuery } from "./scope";

export interface NatSource {
  /** "conntrack" | "conntrack-events" | "proc" | "static" */
  readonly kind: string;
  /** Prepares the source (builds the index); lookups call it when needed. */
  start(): Promise<void>;
  /** Flows matching the query (see matchFlow). */
  lookup(q: NatQuery): Promise<ConntrackFlow[]>;
  /** A MAC the table itself knows for a device (static tables). */
  macFor?(address: string): string | undefined;
  close(): Promise<void>;
}

export interface ListingOptions {
  timeoutMs?: number;
  /** Lines read from one listing before it is stopped (OutputTooLargeError). */
  maxLines?: number;
}

/** conntrack arguments that let the kernel pre-filter a listing for this query. */
export function conntrackFilterArgs(q: NatQuery): string[] {
  const args: string[] = [];
  const fams = new Set([...q.sourcePrefixes, ...q.targetPrefixes].map((p) => p.family));
  if (fams.size === 1) args.push("-f", [...fams][0]);
  if (q.targetProtocols.length === 1) args.push("-p", String(q.targetProtocols[0]));
  if (q.sourcePrefixes.length === 1 && isHostPrefix(q.sourcePrefixes[0])) args.push("--reply-dst", q.sourcePrefixes[0].network);
  return args;
}

/** Streams `conntrack -L -o extended` and keeps the matches. */
export class ConntrackListSource implements NatSource {
  readonly kind = "conntrack";
  constructor(
    private readonly runner: CommandRunner,
    private readonly opts: ListingOptions = {},
  ) {}
  async start(): Promise<void> {}
  async lookup(q: NatQuery): Promise<ConntrackFlow[]> {
    const out: ConntrackFlow[] = [];
    await listConntrack(
      this.runner,
      conntrackFilterArgs(q),
      (f) => {
        if (matchFlow(q, f)) out.push(f);
      },
      this.opts,
    );
    return out;
  }
  async close(): Promise<void> {}
}

/** Streams a full or filtered conntrack listing into onFlow. */
export async function listConntrack(
  runner: CommandRunner,
  filterArgs: string[],
  onFlow: (f: ConntrackFlow) => void,
  opts: ListingOptions = {},
): Promise<void> {
  const h = runner.stream(
    ["conntrack", "-L", "-o", "extended", ...filterArgs],
    (line) => {
      const parsed = parseConntrackLine(line);
      if (parsed) onFlow(parsed.flow);
    },
    { timeoutMs: opts.timeoutMs ?? 30_000, maxLines: opts.maxLines ?? 2_000_000 },
  );
  await h.done;
}

export interface EventSourceOptions extends ListingOptions {
  /** Flows kept in memory at most; beyond it lookups fall back to a live listing. */
  maxFlows?: number;
  /** Wait after starting `conntrack -E` before the initial listing, so no flow falls between. */
  subscribeDelayMs?: number;
  /** Back-off before restarting a dead event listener. */
  restartDelayMs?: number;
  /** Netlink receive buffer for `conntrack -E` (-b); 0 keeps the tool's default. Default 8 MiB. */
  eventBufferBytes?: number;
}

/**
 * An index of the kernel's table kept current by `conntrack -E` (NEW and DESTROY events), so a
 * lookup costs the same for 100 or 100,000 flows. A miss is confirmed with a filtered listing
 * before it counts, which also covers events lost to a full socket buffer.
 */
export class ConntrackEventSource implements NatSource {
  readonly kind = "conntrack-events";
  readonly index: FlowIndex;
  private events: StreamHandle | undefined;
  private starting: Promise<void> | undefined;
  private closed = false;
  private synced = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private restarts = 0;
  /** Last failure of the event listener, for diagnostics. */
  lastError: HomeError | undefined;
  /** Event lines applied since start. */
  eventsApplied = 0;

  constructor(
    private readonly runner: CommandRunner,
    private readonly opts: EventSourceOptions = {},
  ) {
    this.index = new FlowIndex(opts.maxFlows ?? 1_000_000);
  }

  start(): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError("conntrack event source"));
    if (!this.starting) {
      this.starting = this.sync().catch((err) => {
        this.starting = undefined;
        throw err;
      });
    }
    return this.starting;
  }

  private async sync(): Promise<void> {
    this.synced = false;
    this.index.clear();
    const buffered: string[] = [];
    let listing = true;
    // a large socket buffer rides out bursts of new flows (an attack is one) without losing events
    const bufferArgs = this.opts.eventBufferBytes === 0 ? [] : ["-b", String(this.opts.eventBufferBytes ?? 8 * 1024 * 1024)];
    const handle = this.runner.stream(
      ["conntrack", "-E", "-o", "extended", "-e", "NEW,DESTROY", ...bufferArgs],
      (line) => {
        if (listing) {
          if (buffered.length < 1_000_000) buffered.push(line);
          return;
        }
        this.applyEvent(line);
      },
      {
        onStderrLine: (l) => {
          if (/No buffer space/i.test(l)) this.synced = false; // events were lost: a miss must be confirmed
        },
      },
    );
    this.events = handle;
    let early: unknown;
    handle.done.then(
      () => this.onEventsEnded(handle, undefined),
      (err) => {
        early = err;
        this.onEventsEnded(handle, err);
      },
    );
    await new Promise((r) => setTimeout(r, this.opts.subscribeDelayMs ?? 150));
    if (early) throw early instanceof Error ? early : new Error(String(early));
    await listConntrack(this.runner, [], (f) => this.index.upsert(f), this.opts);
    listing = false;
    for (const line of buffered) this.applyEvent(line);
    this.synced = this.index.stats().refused === 0;
  }

  private applyEvent(line: string): void {
    const p = parseConntrackLine(line);
    if (!p) return;
    this.eventsApplied++;
    if (p.event === "DESTROY") this.index.remove(p.flow);
    else if (!this.index.upsert(p.flow)) this.synced = false;
  }

  private onEventsEnded(handle: StreamHandle, err: unknown): void {
    if (this.events !== handle) return;
    this.events = undefined;
    this.synced = false;
    if (err instanceof HomeError) this.lastError = err;
    this.starting = undefined;
    if (this.closed) return;
    // A missing tool or permission will not heal by itself: the next lookup tries again.
    if (err instanceof ToolMissingError || err instanceof PermissionDeniedError) return;
    // the listener died (conntrack killed, buffer overflow exit): rebuild after a growing pause
    const delay = Math.min(60_000, (this.opts.restartDelayMs ?? 1000) * 2 ** Math.min(6, this.restarts++));
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.closed)
        this.start().then(
          () => (this.restarts = 0),
          (e) => (this.lastError = e instanceof HomeError ? e : this.lastError),
        );
    }, delay);
  }

  /** True while the index mirrors the kernel (listener up, nothing refused or lost). */
  get inSync(): boolean {
    return this.synced && this.events !== undefined;
  }

  async lookup(q: NatQuery): Promise<ConntrackFlow[]> {
    if (this.closed) throw new ClosedError("conntrack event source");
    try {
      await this.start();
    } catch {
      // fall through to a live listing; it reports a missing tool or permission itself
    }
    const hits = this.index.lookup(q);
    if (hits.length > 0) return hits;
    const out: ConntrackFlow[] = [];
    await listConntrack(
      this.runner,
      conntrackFilterArgs(q),
      (f) => {
        if (matchFlow(q, f)) out.push(f);
      },
      this.opts,
    );
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const h = this.events;
    this.events = undefined;
    if (h) {
      h.stop();
      await h.done.catch(() => undefined);
    }
    this.index.clear();
  }
}

/** Reads /proc/net/nf_conntrack (through the runner, so it works inside a namespace). */
export class ProcConntrackSource implements NatSource {
  readonly kind = "proc";
  constructor(
    private readonly runner: CommandRunner,
    private readonly path = "/proc/net/nf_conntrack",
    private readonly opts: ListingOptions = {},
  ) {}
  async start(): Promise<void> {}
  async lookup(q: NatQuery): Promise<ConntrackFlow[]> {
    const out: ConntrackFlow[] = [];
    const h = this.runner.stream(
      ["cat", this.path],
      (line) => {
        const p = parseConntrackLine(line);
        if (p && matchFlow(q, p.flow)) out.push(p.flow);
      },
      { timeoutMs: this.opts.timeoutMs ?? 30_000, maxLines: this.opts.maxLines ?? 2_000_000 },
    );
    try {
      await h.done;
    } catch (err) {
      if (err instanceof CommandFailedError && /No such file/.test(err.stderr))
        throw new ToolMissingError(this.path, "not present on this system (nf_conntrack proc interface disabled?)");
      throw err;
    }
    return out;
  }
  async close(): Promise<void> {}
}

/**
 * One entry of a static NAT table. Either a conntrack line (string), a flow with orig/reply
 * tuples, or the short form: device, public (post-NAT) address, target and ports.
 */
export type StaticTableEntry =
  | string
  | { orig: FlowEnd; reply: FlowEnd; protocol: number | string; mac?: string }
  | {
      protocol: number | string;
      device: string;
      devicePort?: number;
      /** Address after NAT; defaults to the device (no NAT). */
      public?: string;
      publicPort?: number;
      target: string;
      targetPort?: number;
      icmpType?: number;
      mac?: string;
    };

const PROTO_BY_NAME: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, dccp: 33, icmpv6: 58, sctp: 132, udplite: 136 };
const MAX_STATIC_ENTRIES = 1_000_000;

function protoNumber(p: unknown, where: string): number {
  if (typeof p === "number" && Number.isInteger(p) && p >= 0 && p <= 255) return p;
  if (typeof p === "string" && p.toLowerCase() in PROTO_BY_NAME) return PROTO_BY_NAME[p.toLowerCase()];
  throw new InvalidTableError(`${where}: protocol must be a number 0..255 or one of ${Object.keys(PROTO_BY_NAME).join(", ")}`);
}

function addr(v: unknown, where: string): string {
  const a = typeof v === "string" ? canonicalAddress(v) : undefined;
  if (!a) throw new InvalidTableError(`${where}: not an IP address: ${JSON.stringify(v)}`);
  return a.address;
}

function port(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 65535) return v;
  throw new InvalidTableError(`${where}: not a port: ${JSON.stringify(v)}`);
}

function endOf(v: unknown, where: string): FlowEnd {
  if (typeof v !== "object" || v === null) throw new InvalidTableError(`${where}: must be an object`);
  const o = v as Record<string, unknown>;
  const e: FlowEnd = { src: addr(o.src, `${where}.src`), dst: addr(o.dst, `${where}.dst`) };
  const sp = port(o.sport, `${where}.sport`);
  const dp = port(o.dport, `${where}.dport`);
  if (sp !== undefined) e.sport = sp;
  if (dp !== undefined) e.dport = dp;
  if (o.type !== undefined) e.type = Number(o.type);
  if (o.code !== undefined) e.code = Number(o.code);
  return e;
}

/** Validates static entries into flows (plus the MACs they name). */
export function staticEntriesToFlows(entries: unknown): { flows: ConntrackFlow[]; macs: Map<string, string> } {
  if (!Array.isArray(entries)) throw new InvalidTableError("a static NAT table must be a JSON array");
  if (entries.length > MAX_STATIC_ENTRIES) throw new InvalidTableError(`a static NAT table holds at most ${MAX_STATIC_ENTRIES} entries`);
  const flows: ConntrackFlow[] = [];
  const macs = new Map<string, string>();
  entries.forEach((e, i) => {
    const where = `entry ${i}`;
    if (typeof e === "string") {
      const p = parseConntrackLine(e);
      if (!p) throw new InvalidTableError(`${where}: not a conntrack line`);
      flows.push(p.flow);
      return;
    }
    if (typeof e !== "object" || e === null) throw new InvalidTableError(`${where}: must be a string or an object`);
    const o = e as Record<string, unknown>;
    const protocol = protoNumber(o.protocol, where);
    let flow: ConntrackFlow;
    if (o.orig !== undefined || o.reply !== undefined) {
      const orig = endOf(o.orig, `${where}.orig`);
      flow = { family: orig.src.includes(":") ? 6 : 4, protocol, orig, reply: endOf(o.reply, `${where}.reply`), flags: [] };
    } else {
      const device = addr(o.device, `${where}.device`);
      const pub = o.public === undefined ? device : addr(o.public, `${where}.public`);
      const target = addr(o.target, `${where}.target`);
      if (device.includes(":") !== target.includes(":"))
        throw new InvalidTableError(`${where}: device and target are of different IP families`);
      const devicePort = port(o.devicePort, `${where}.devicePort`);
      const publicPort = port(o.publicPort, `${where}.publicPort`) ?? devicePort;
      const targetPort = port(o.targetPort, `${where}.targetPort`);
      const orig: FlowEnd = { src: device, dst: target };
      const reply: FlowEnd = { src: target, dst: pub };
      if (devicePort !== undefined) orig.sport = devicePort;
      if (targetPort !== undefined) {
        orig.dport = targetPort;
        reply.sport = targetPort;
      }
      if (publicPort !== undefined) reply.dport = publicPort;
      if (o.icmpType !== undefined) {
        const t = Number(o.icmpType);
        if (!Number.isInteger(t) || t < 0 || t > 255) throw new InvalidTableError(`${where}.icmpType: must be 0..255`);
        orig.type = t;
      }
      flow = { family: device.includes(":") ? 6 : 4, protocol, orig, reply, flags: [] };
    }
    if (o.mac !== undefined) {
      const mac = canonicalMac(String(o.mac));
      if (!mac) throw new InvalidTableError(`${where}.mac: not a MAC address`);
      macs.set(flow.orig.src, mac);
    }
    flows.push(flow);
  });
  return { flows, macs };
}

/** A fixed table: an array given by the caller, or a JSON file (array) / conntrack text file. */
export class StaticTableSource implements NatSource {
  readonly kind = "static";
  private readonly index = new FlowIndex();
  private macs = new Map<string, string>();
  private loading: Promise<void> | undefined;

  constructor(private readonly table: { entries: unknown } | { file: string; maxBytes?: number }) {}

  start(): Promise<void> {
    if (!this.loading) {
      this.loading = this.load().catch((err) => {
        this.loading = undefined;
        throw err;
      });
    }
    return this.loading;
  }

  private async load(): Promise<void> {
    let entries: unknown;
    if ("entries" in this.table) entries = this.table.entries;
    else {
      const max = this.table.maxBytes ?? 64 * 1024 * 1024;
      const st = await fs.stat(this.table.file).catch((e: NodeJS.ErrnoException) => {
        throw new InvalidTableError(
          `cannot read static NAT table ${this.table && (this.table as { file: string }).file}: ${e.code ?? e.message}`,
        );
      });
      if (st.size > max) throw new InvalidTableError(`static NAT table ${this.table.file} is larger than ${max} bytes`);
      const text = await fs.readFile(this.table.file, "utf8");
      const trimmed = text.trimStart();
      if (trimmed.startsWith("[")) {
        try {
          entries = JSON.parse(text);
        } catch (e) {
          throw new InvalidTableError(`static NAT table ${this.table.file} is not valid JSON: ${(e as Error).message}`);
        }
      } else {
        entries = text.split("\n").filter((l) => parseConntrackLine(l) !== undefined);
      }
    }
    const { flows, macs } = staticEntriesToFlows(entries);
    this.index.clear();
    for (const f of flows) this.index.upsert(f);
    this.macs = macs;
  }

  async lookup(q: NatQuery): Promise<ConntrackFlow[]> {
    await this.start();
    return this.index.lookup(q);
  }

  macFor(address: string): string | undefined {
    return this.macs.get(address);
  }

  async close(): Promise<void> {}
}

export type NatSpec =
  | "auto"
  | "conntrack"
  | "conntrack-list"
  | "proc"
  | { kind: "proc"; path: string }
  | { kind: "static"; file: string }
  | { kind: "table"; entries: unknown };

/** Parses the CLI form: auto | conntrack | conntrack-list | proc | proc:PATH | static:FILE. */
export function parseNatSpec(text: string): NatSpec {
  if (text === "auto" || text === "conntrack" || text === "conntrack-list" || text === "proc") return text;
  if (text.startsWith("static:") && text.length > 7) return { kind: "static", file: text.slice(7) };
  if (text.startsWith("proc:") && text.length > 5) return { kind: "proc", path: text.slice(5) };
  throw new InvalidTableError(`unknown NAT source "${text}" (expected auto, conntrack, conntrack-list, proc, proc:PATH or static:FILE)`);
}

export interface CreateNatSourceOptions extends EventSourceOptions {
  runner?: CommandRunner;
}

/**
 * Builds a source. "conntrack" is the event-indexed kernel table; "conntrack-list" lists per
 * lookup; "auto" picks conntrack when the tool works, else /proc/net/nf_conntrack.
 */
export async function createNatSource(spec: NatSpec, opts: CreateNatSourceOptions = {}): Promise<NatSource> {
  const runner = opts.runner ?? new CommandRunner();
  if (spec === "conntrack") return new ConntrackEventSource(runner, opts);
  if (spec === "conntrack-list") return new ConntrackListSource(runner, opts);
  if (spec === "proc") return new ProcConntrackSource(runner, undefined, opts);
  if (spec === "auto") {
    try {
      await runner.run(["conntrack", "-C"], { timeoutMs: 5000 });
      return new ConntrackEventSource(runner, opts);
    } catch (err) {
      if (!(err instanceof ToolMissingError)) throw err;
      return new ProcConntrackSource(runner, undefined, opts);
    }
  }
  if (spec.kind === "proc") return new ProcConntrackSource(runner, spec.path, opts);
  if (spec.kind === "static") return new StaticTableSource({ file: spec.file });
  return new StaticTableSource({ entries: spec.entries });
}

interface SharedEntry {
  source: Promise<NatSource>;
  users: number;
}

/** Live shared sources per router ("host" or a netns name) and spec. */
const shared = new Map<string, SharedEntry>();

/**
 * One NAT source per router and spec in this process (one `conntrack -E` child however many
 * enforcers and dialers use it). Each caller gets its own handle; the source closes with the last.
 * `router` names where the runner runs (a netns name, or "host").
 */
export async function sharedNatSource(spec: NatSpec, opts: CreateNatSourceOptions & { router?: string } = {}): Promise<NatSource> {
  // static tables and explicit entries are cheap and caller-specific: not shared
  if (typeof spec === "object" && (spec.kind === "static" || spec.kind === "table")) return createNatSource(spec, opts);
  const key = `${opts.router ?? "host"}\u0000${JSON.stringify(spec)}`;
  let entry = shared.get(key);
  if (!entry) {
    entry = { source: createNatSource(spec, opts), users: 0 };
    shared.set(key, entry);
    const e = entry;
    e.source.catch(() => {
      if (shared.get(key) === e) shared.delete(key);
    });
  }
  entry.users++;
  let inner: NatSource;
  try {
    inner = await entry.source;
  } catch (err) {
    entry.users--;
    throw err;
  }
  const e = entry;
  let closed = false;
  return {
    kind: inner.kind,
    start: () => (closed ? Promise.reject(new ClosedError("shared NAT source")) : inner.start()),
    lookup: (q) => (closed ? Promise.reject(new ClosedError("shared NAT source")) : inner.lookup(q)),
    ...(inner.macFor ? { macFor: (a: string) => inner.macFor!(a) } : {}),
    async close() {
      if (closed) return;
      closed = true;
      e.users--;
      if (e.users > 0) return;
      if (shared.get(key) === e) shared.delete(key);
      await inner.close();
    },
  };
}

/** How many processes-wide shared sources are open (tests, diagnostics). */
export function sharedNatSourceCount(): number {
  return shared.size;
}
