// Drop-list for the call-home listener (RFC 9066 section 8): a source address that fails N
// handshakes or authentications within a window is ignored for a while. Memory is bounded: at
// most maxTracked addresses are remembered (least recently active forgotten first) and entries
// expire once their window and ban have passed.

import * as net from "node:net";
import { TransportError } from "./connection";

export interface DropListOptions {
  /** Failures within windowMs that trigger a ban (default 5). */
  maxFailures?: number;
  /** Sliding window for counting failures (default 60 s). */
  windowMs?: number;
  /** How long a banned address is ignored (default 10 min). */
  banMs?: number;
  /** Cap on remembered addresses (default 10,000). */
  maxTracked?: number;
  /**
   * IPv6 sources are grouped by this prefix length (default 128: each address on its own).
   * 64 treats a whole /64, which one subscriber usually holds, as one source.
   */
  ipv6PrefixLength?: number;
  /** Clock, for tests. */
  now?: () => number;
}

interface Entry {
  /** Failure times within the window, oldest first, at most maxFailures long. */
  failures: number[];
  bannedUntil: number;
}

export interface DropVerdict {
  /** The source is banned now (newly or already). */
  dropped: boolean;
  /** End of the ban (ms since epoch) when dropped. */
  until?: number;
  /** True only for the failure that started the ban. */
  newlyDropped: boolean;
}

export class DropList {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly banMs: number;
  readonly maxTracked: number;
  private readonly ipv6PrefixLength: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();

  constructor(opts: DropListOptions = {}) {
    this.maxFailures = opts.maxFailures ?? 5;
    this.windowMs = opts.windowMs ?? 60_000;
    this.banMs = opts.banMs ?? 600_000;
    this.maxTracked = opts.maxTracked ?? 10_000;
    this.ipv6PrefixLength = opts.ipv6PrefixLength ?? 128;
    this.now = opts.now ?? Date.now;
    for (const [name, v, min] of [
      ["maxFailures", this.maxFailures, 1],
      ["windowMs", this.windowMs, 1],
      ["banMs", this.banMs, 1],
      ["maxTracked", this.maxTracked, 1],
      ["ipv6PrefixLength", this.ipv6PrefixLength, 1],
    ] as const) {
      if (!Number.isFinite(v) || v < min || (name === "ipv6PrefixLength" && v > 128)) {
        throw new TransportError("CONFIG", `drop-list ${name} out of range: ${v}`);
      }
    }
  }

  /** Addresses currently remembered (banned or with recent failures). */
  get size(): number {
    return this.entries.size;
  }

  /** Counts one failed handshake/authentication from address. */
  recordFailure(address: string): DropVerdict {
    const key = this.keyOf(address);
    const now = this.now();
    let entry = this.entries.get(key);
    if (entry)
      this.entries.delete(key); // re-inserted below: most recently active last
    else entry = { failures: [], bannedUntil: 0 };
    this.entries.set(key, entry);
    this.evictOverCap();
    if (entry.bannedUntil > now) return { dropped: true, until: entry.bannedUntil, newlyDropped: false };
    const since = now - this.windowMs;
    entry.failures = entry.failures.filter((t) => t > since);
    entry.failures.push(now);
    if (entry.failures.length > this.maxFailures) entry.failures.shift();
    if (entry.failures.length >= this.maxFailures) {
      entry.bannedUntil = now + this.banMs;
      entry.failures = [];
      return { dropped: true, until: entry.bannedUntil, newlyDropped: true };
    }
    return { dropped: false, newlyDropped: false };
  }

  /** True while address is banned. Cheap: called for every datagram and TCP connection. */
  isDropped(address: string): boolean {
    const entry = this.entries.get(this.keyOf(address));
    return entry !== undefined && entry.bannedUntil > this.now();
  }

  /** End of the ban for address, if banned now. */
  droppedUntil(address: string): number | undefined {
    const entry = this.entries.get(this.keyOf(address));
    return entry && entry.bannedUntil > this.now() ? entry.bannedUntil : undefined;
  }

  /** Lifts any ban and forgets the failures of address. */
  forgive(address: string): void {
    this.entries.delete(this.keyOf(address));
  }

  /** Forgets entries whose ban and failure window are over. Call periodically. */
  sweep(): void {
    const now = this.now();
    const since = now - this.windowMs;
    for (const [key, entry] of this.entries) {
      if (entry.bannedUntil <= now && entry.failures.every((t) => t <= since)) this.entries.delete(key);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  private evictOverCap(): void {
    while (this.entries.size > this.maxTracked) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  private keyOf(address: string): string {
    return sourceGroup(address, this.ipv6PrefixLength);
  }
}

/**
 * The group a source address counts in: an IPv4 address (v4-mapped IPv6 included) by itself, an
 * IPv6 address by its first ipv6PrefixLength bits ("2001:db8:0:1:0:0:0:0/64").
 */
export function sourceGroup(address: string, ipv6PrefixLength: number): string {
  const a = address.startsWith("::ffff:") && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
  // Without a ':' it is no IPv6 address (and the long IPv6 pattern need not run for every IPv4 hello).
  if (ipv6PrefixLength >= 128 || !a.includes(":") || !net.isIPv6(a)) return a;
  return `${ipv6Prefix(a, ipv6PrefixLength)}/${ipv6PrefixLength}`;
}

/** The first `bits` bits of an IPv6 address as 8 hex groups (rest zeroed). */
function ipv6Prefix(address: string, bits: number): string {
  const groups = expandIpv6(address.split("%")[0]);
  const out: string[] = [];
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
    out.push((groups[i] & mask).toString(16));
  }
  return out.join(":");
}

function expandIpv6(address: string): number[] {
  let text = address;
  // Trailing dotted IPv4 (e.g. ::ffff:1.2.3.4 or 64:ff9b::1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1].split(".").map(Number);
    text = text.slice(0, -v4[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headParts = head ? head.split(":") : [];
  const tailParts = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : new Array(8 - headParts.length - tailParts.length).fill("0");
  return [...headParts, ...zeros, ...tailParts].map((g) => parseInt(g || "0", 16));
}
