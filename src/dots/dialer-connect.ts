// How the home side reaches the ISP: candidate addresses in the RFC 9132 section 4.3 Happy
// Eyeballs order (UDP/IPv6, UDP/IPv4, TCP/IPv6, TCP/IPv4), staggered attempts where the first
// success wins, a ~10 minute cache of the winning transport, and the reconnect pacing of
// RFC 9132 section 4.7 (MUST NOT retry more often than every 60 s, SHOULD NOT more than every 300 s).
import { lookup as dnsLookup, promises as dnsPromises } from "node:dns";
import { isIP } from "node:net";
import type { Connection, TransportKind } from "../transport/connection";
import type { TransportChoice } from "./api";

export interface Candidate {
  transport: TransportKind;
  /** IP literal to connect to. */
  address: string;
  family: 4 | 6;
  /**
   * The configured name (FQDN or literal), or the SRV target for a discovered candidate: SNI and
   * the certificate name to check (a discovered one only with DNSSEC-validated answers).
   */
  host: string;
  /** Port for this candidate (from an SRV record); absent: the configured port. */
  port?: number;
}

/** The DNS queries RFC 8973 discovery needs (node:dns promises Resolver fits). */
export interface SrvResolver {
  resolveSrv(name: string): Promise<Array<{ name: string; port: number; priority: number; weight: number }>>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

/** A Resolver on the given servers ("127.0.0.1:5353" style), or the system's. */
export function dnsResolver(servers?: string[]): SrvResolver {
  const r = new dnsPromises.Resolver({ timeout: 2000, tries: 2 });
  if (servers && servers.length > 0) r.setServers(servers);
  return r;
}

// A DNS name: dot-separated labels of letters, digits, hyphens (underscores for service labels),
// 1..63 each and 253 in all.
const DNS_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** Why `name` cannot be a domain to discover the ISP from (RFC 8973); undefined when it can. */
export function discoveryDomainProblem(name: string): string | undefined {
  if (!DNS_NAME.test(name) || isIP(name.replace(/\.$/, "")) !== 0) return "is not a DNS domain name";
  return undefined;
}

/**
 * Why `text` is not a DNS server as node:dns setServers takes it ("192.0.2.53", "192.0.2.53:5353",
 * "2001:db8::53", "[2001:db8::53]:5353"); undefined when it is one.
 */
export function dnsServerProblem(text: string): string | undefined {
  const m =
    /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text) ??
    /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(text) ??
    (isIP(text) === 6 ? [text, text] : null);
  if (!m) return "expected an IP address, ADDR:PORT or [IPv6]:PORT";
  if (isIP(m[1]) === 0) return `${m[1]} is not an IP address`;
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return "port must be 1..65535";
  return undefined;
}

/** RFC 8973 SRV owner names for Call Home (service name "dots-call-home"). */
export function callHomeSrvName(transport: TransportKind, domain: string): string {
  return `_dots-call-home.${transport === "dtls" ? "_udp" : "_tcp"}.${domain.replace(/\.$/, "")}`;
}

/**
 * RFC 8973 discovery of the Call Home DOTS client: SRV records _dots-call-home._udp/_tcp.<domain>,
 * targets resolved to addresses, ordered as Happy Eyeballs wants (UDP before TCP, IPv6 before
 * IPv4) and by SRV priority within each. Each candidate's host is its SRV target; the dialer checks
 * the ISP certificate against the discovery domain unless the answers are DNSSEC-validated.
 * Throws when nothing usable is found.
 */
export async function discoverCandidates(domain: string, transports: TransportKind[], resolver: SrvResolver): Promise<Candidate[]> {
  const errors: string[] = [];
  const found: Array<Candidate & { priority: number; weight: number }> = [];
  for (const transport of transports) {
    const owner = callHomeSrvName(transport, domain);
    let records: Awaited<ReturnType<SrvResolver["resolveSrv"]>>;
    try {
      records = await resolver.resolveSrv(owner);
    } catch (e) {
      errors.push(`${owner}: ${(e as Error).message}`);
      continue;
    }
    // RFC 2782: a single record with target "." means the service is not offered there.
    records = records.filter((r) => r.name !== "" && r.name !== "." && r.port > 0 && r.port <= 65535).slice(0, 16);
    for (const r of records) {
      const target = r.name.replace(/\.$/, "");
      for (const [family, query] of [
        [6, resolver.resolve6.bind(resolver)],
        [4, resolver.resolve4.bind(resolver)],
      ] as const) {
        let addresses: string[] = [];
        if (isIP(target) === family) addresses = [target];
        else if (isIP(target) === 0) {
          try {
            addresses = await query(target);
          } catch {
            // no address of this family
          }
        }
        for (const address of addresses.slice(0, 8))
          found.push({ transport, address, family, host: target, port: r.port, priority: r.priority, weight: r.weight });
      }
    }
  }
  if (found.length === 0)
    throw new Error(`RFC 8973 discovery found no Call Home client for ${domain}${errors.length ? ` (${errors.join("; ")})` : ""}`);
  const order = (t: TransportKind) => transports.indexOf(t);
  found.sort((a, b) => order(a.transport) - order(b.transport) || b.family - a.family || a.priority - b.priority || b.weight - a.weight);
  const seen = new Set<string>();
  const out: Candidate[] = [];
  for (const { priority: _p, weight: _w, ...c } of found) {
    const key = `${c.transport}|${c.address}|${c.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(c);
  }
  return out;
}

export type LookupAll = (host: string) => Promise<Array<{ address: string; family: number }>>;

export const defaultLookup: LookupAll = (host) =>
  new Promise((resolve, reject) => {
    dnsLookup(host, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses)));
  });

/** Resolves every host and orders the candidates: UDP before TCP, IPv6 before IPv4 within each. */
export async function resolveCandidates(
  hosts: string[],
  transports: TransportKind[],
  lookup: LookupAll = defaultLookup,
): Promise<Candidate[]> {
  const addrs: Array<{ address: string; family: 4 | 6; host: string }> = [];
  const errors: string[] = [];
  for (const host of hosts) {
    const fam = isIP(host);
    if (fam !== 0) {
      addrs.push({ address: host, family: fam as 4 | 6, host });
      continue;
    }
    try {
      for (const a of await lookup(host)) {
        if (a.family === 4 || a.family === 6) addrs.push({ address: a.address, family: a.family, host });
      }
    } catch (e) {
      errors.push(`${host}: ${(e as Error).message}`);
    }
  }
  if (addrs.length === 0) throw new Error(`no address for ${hosts.join(", ")}${errors.length ? ` (${errors.join("; ")})` : ""}`);
  const seen = new Set<string>();
  const out: Candidate[] = [];
  for (const transport of transports) {
    for (const family of [6, 4] as const) {
      for (const a of addrs) {
        if (a.family !== family) continue;
        const key = `${transport}|${a.address}`;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push({ transport, address: a.address, family, host: a.host });
      }
    }
  }
  return out;
}

/** Which transports a choice allows: "auto" tries DTLS only with credentials it can use (a PSK, or a P-256 certificate). */
export function transportsFor(choice: TransportChoice, dtlsCapable: boolean): TransportKind[] {
  if (choice === "udp") return ["dtls"];
  if (choice === "tcp") return ["tls"];
  return dtlsCapable ? ["dtls", "tls"] : ["tls"];
}

export type AttemptFn = (candidate: Candidate, signal: AbortSignal) => Promise<Connection>;

export interface HappyEyeballsOptions {
  /** Delay before starting the next candidate while earlier ones are still trying. Default 250 ms. */
  attemptDelayMs?: number;
  /** Told about every attempt as it starts. */
  onAttempt?: (c: Candidate) => void;
  /** Abort everything (stop()). */
  signal?: AbortSignal;
}

export class HappyEyeballsError extends Error {
  constructor(readonly failures: Array<{ candidate: Candidate; error: Error }>) {
    super(
      `all connection attempts failed: ${failures.map((f) => `${f.candidate.transport}/${f.candidate.address}: ${f.error.message}`).join("; ") || "no candidates"}`,
    );
    this.name = "HappyEyeballsError";
  }
}

/**
 * Starts candidates one after another, `attemptDelayMs` apart (sooner when one fails); the first
 * connection wins, the rest are aborted and any late success is closed.
 */
export function happyEyeballs(
  candidates: Candidate[],
  attempt: AttemptFn,
  opts: HappyEyeballsOptions = {},
): Promise<{ connection: Connection; candidate: Candidate }> {
  const delay = opts.attemptDelayMs ?? 250;
  return new Promise((resolve, reject) => {
    if (candidates.length === 0) return reject(new HappyEyeballsError([]));
    const controller = new AbortController();
    const failures: Array<{ candidate: Candidate; error: Error }> = [];
    let next = 0;
    let running = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const onOuterAbort = () => finish(undefined, new Error("connect aborted"));
    opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
    const finish = (win: { connection: Connection; candidate: Candidate } | undefined, err?: Error) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      controller.abort();
      opts.signal?.removeEventListener("abort", onOuterAbort);
      if (win) resolve(win);
      else reject(err ?? new HappyEyeballsError(failures));
    };
    const launch = () => {
      if (done || next >= candidates.length) return;
      const c = candidates[next++];
      running++;
      try {
        opts.onAttempt?.(c);
      } catch {
        // an observer's error never changes the race
      }
      if (timer) clearTimeout(timer);
      timer = setTimeout(launch, delay);
      timer.unref();
      let p: Promise<Connection>;
      try {
        p = attempt(c, controller.signal);
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(
        (conn) => {
          running--;
          if (done) conn.close();
          else finish({ connection: conn, candidate: c });
        },
        (e: unknown) => {
          running--;
          failures.push({ candidate: c, error: e instanceof Error ? e : new Error(String(e)) });
          if (done) return;
          if (next < candidates.length) launch();
          else if (running === 0) finish(undefined);
        },
      );
    };
    if (opts.signal?.aborted) return finish(undefined, new Error("connect aborted"));
    launch();
  });
}

/**
 * Remembers which transport won for a target (RFC 9132 section 4.3): about 10 minutes, but a TLS
 * winner is kept first for 24 h, since UDP SHOULD NOT be re-probed more often than that (and MUST
 * NOT more often than every 5 min; a shorter tlsTtlMs is clamped to that).
 */
export class TransportCache {
  private readonly entries = new Map<string, { transport: TransportKind; until: number }>();
  private readonly tlsTtlMs: number;
  constructor(
    private readonly ttlMs = 10 * 60_000,
    private readonly now: () => number = Date.now,
    tlsTtlMs = 24 * 3600_000,
    /** Lower bound of tlsTtlMs; labs may pass 0. */
    minUdpReprobeMs = 5 * 60_000,
  ) {
    this.tlsTtlMs = Math.max(tlsTtlMs, minUdpReprobeMs);
  }

  remember(key: string, transport: TransportKind): void {
    this.entries.set(key, { transport, until: this.now() + (transport === "tls" ? this.tlsTtlMs : this.ttlMs) });
    if (this.entries.size > 64) this.entries.delete(this.entries.keys().next().value as string);
  }

  preferred(key: string): TransportKind | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.transport;
  }

  /** Candidates with the cached winner's transport first. */
  order(key: string, candidates: Candidate[]): Candidate[] {
    const t = this.preferred(key);
    if (!t) return candidates;
    return [...candidates.filter((c) => c.transport === t), ...candidates.filter((c) => c.transport !== t)];
  }
}

export interface ReconnectPolicy {
  /** Minimum spacing between connection attempts, ms. Default 60 000 (RFC 9132 MUST). */
  minMs: number;
  /** Spacing grows (doubling) up to this, ms. Default 300 000 (RFC 9132 SHOULD). */
  maxMs: number;
  /**
   * The first attempt after a session that was up has ended starts after a delay drawn uniformly
   * from [0, firstAttemptJitterMs), so a thousand homes told at once do not arrive at once.
   * Default 5000.
   */
  firstAttemptJitterMs?: number;
}

export const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = Object.freeze({ minMs: 60_000, maxMs: 300_000 });

/** Default spread of the first attempt after a session ended, ms. */
export const DEFAULT_FIRST_ATTEMPT_JITTER_MS = 5000;

/**
 * Paces connection attempts (RFC 9132 section 4.7, applied by RFC 9066 section 5.2.1): after a
 * FAILED attempt the next one waits minMs, then 2*minMs, ... up to maxMs. The first attempt after
 * a session that was up ends is not a retry: it starts after a uniform jitter in
 * [0, firstAttemptJitterMs). That fast path is taken at most once per minMs, so a peer that ends
 * every session right after it starts still sees attempts no closer than minMs.
 */
export class ReconnectPacer {
  private failures = 0;
  private lastAttempt = -Infinity;
  private lastFastPath = -Infinity;
  private readonly jitterMs: number;

  constructor(
    private readonly policy: ReconnectPolicy = DEFAULT_RECONNECT,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {
    if (!(policy.minMs >= 0) || !(policy.maxMs >= policy.minMs))
      throw new RangeError(`reconnect bounds must satisfy 0 <= minMs <= maxMs (got ${policy.minMs}, ${policy.maxMs})`);
    // Never slower than a retry: labs that shorten minMs get a proportionally short jitter.
    this.jitterMs = policy.firstAttemptJitterMs ?? Math.min(DEFAULT_FIRST_ATTEMPT_JITTER_MS, policy.minMs);
    if (!(this.jitterMs >= 0) || !Number.isFinite(this.jitterMs))
      throw new RangeError(`firstAttemptJitterMs must be a finite number >= 0 (got ${policy.firstAttemptJitterMs})`);
  }

  /** Record that an attempt starts now. */
  attempted(): void {
    this.lastAttempt = this.now();
  }

  failed(): void {
    this.failures++;
  }

  succeeded(): void {
    this.failures = 0;
  }

  /** Consecutive failed attempts since the last success. */
  get failedInARow(): number {
    return this.failures;
  }

  /** Milliseconds to wait before the next attempt may start (after a failure). */
  delayMs(): number {
    const spacing = this.failures === 0 ? this.policy.minMs : Math.min(this.policy.maxMs, this.policy.minMs * 2 ** (this.failures - 1));
    return Math.max(0, this.lastAttempt + spacing - this.now());
  }

  /**
   * Milliseconds before the first attempt after a session that was up has ended: a jitter in
   * [0, firstAttemptJitterMs), or delayMs() when the fast path was used less than minMs ago.
   */
  afterSessionEnded(): number {
    const now = this.now();
    if (now - this.lastFastPath < this.policy.minMs) return this.delayMs();
    this.lastFastPath = now;
    this.failures = 0;
    return Math.floor(this.random() * this.jitterMs);
  }
}

/** Waits between re-sends of a refused TCP connect within one attempt (as DTLS re-sends its first flight). */
export const REFUSED_RESEND_MS: readonly number[] = Object.freeze([1000, 2000, 4000, 8000]);

/**
 * Runs one connection attempt, re-sending it while the peer actively refuses it (TCP RST,
 * ECONNREFUSED: the listener is restarting), `delays` apart. A DTLS attempt re-sends its
 * ClientHello flight 1 s, 2 s, 4 s, 8 s apart inside one attempt; this gives a TCP attempt the same
 * 15 s span instead of failing in a millisecond and costing the home minMs of spacing. Other errors,
 * and the abort signal, end it at once.
 */
export async function resendWhileRefused<T>(
  connect: () => Promise<T>,
  signal: AbortSignal,
  delays: readonly number[] = REFUSED_RESEND_MS,
): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await connect();
    } catch (e) {
      if (i >= delays.length || signal.aborted || !isRefused(e)) throw e;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, delays[i]);
      function done() {
        clearTimeout(t);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
    if (signal.aborted) throw new Error("aborted");
  }
}

function isRefused(e: unknown): boolean {
  const err = e as { code?: string; message?: string; cause?: { code?: string } } | undefined;
  return err?.code === "ECONNREFUSED" || err?.cause?.code === "ECONNREFUSED" || /ECONNREFUSED|connection refused/i.test(err?.message ?? "");
}
