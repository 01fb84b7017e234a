// nft scripts for the enforcement table. Everything lives in one table of our own
// (`inet dots_call_home` by default): named sets whose elements carry the mitigation's lifetime as
// their timeout, so the kernel lifts a block by itself even if this process is gone.
import type { Family } from "./address";
import { canonicalAddress, canonicalMac, familyOf, isHostPrefix, type ParsedPrefix } from "./address";
import { InvalidScopeError } from "./errors";
import type { NumberRange } from "./scope";

export const DEFAULT_TABLE = "dots_call_home";

/** nft 1.0.6 refuses element timeouts much above this ("value too large"); longer lifetimes are capped (365 days). */
export const MAX_NFT_TIMEOUT_SEC = 365 * 24 * 3600;

export type SetName = "block4" | "block6" | "blockmac4" | "blockmac6" | "quarantine4" | "quarantine6" | "quarantinemac";

const SET_TYPES: Record<SetName, { type: string; interval: boolean }> = {
  block4: { type: "ipv4_addr . inet_proto . ipv4_addr . inet_service", interval: true },
  block6: { type: "ipv6_addr . inet_proto . ipv6_addr . inet_service", interval: true },
  blockmac4: { type: "ether_addr . inet_proto . ipv4_addr . inet_service", interval: true },
  blockmac6: { type: "ether_addr . inet_proto . ipv6_addr . inet_service", interval: true },
  quarantine4: { type: "ipv4_addr", interval: false },
  quarantine6: { type: "ipv6_addr", interval: false },
  quarantinemac: { type: "ether_addr", interval: false },
};

export const SET_NAMES = Object.keys(SET_TYPES) as SetName[];

// One rule per set (the set's kernel name follows the @); forward hook only: the router itself
// stays reachable for remediation.
const RULES: Array<[SetName, string]> = [
  ["block4", "ip saddr . meta l4proto . ip daddr . th dport @"],
  ["block6", "ip6 saddr . meta l4proto . ip6 daddr . th dport @"],
  ["blockmac4", "ether saddr . meta l4proto . ip daddr . th dport @"],
  ["blockmac6", "ether saddr . meta l4proto . ip6 daddr . th dport @"],
  ["quarantine4", "ip saddr @"],
  ["quarantine6", "ip6 saddr @"],
  ["quarantinemac", "ether saddr @"],
];

/**
 * Kernel name of a set. Dialers of several upstream ISPs sharing one table (RFC 9066: one session
 * per upstream domain) each get their own sets and chain (`block4_<owner>`, `forward_<owner>`):
 * when both ISPs block the same device and target, each holds its own element, so one ISP's
 * withdrawal, expiry or restart clean-up never removes what the other still needs. A packet both
 * match is dropped (and counted) by whichever chain the kernel runs first.
 */
export function kernelSetName(set: SetName, owner?: string): string {
  return owner === undefined ? set : `${set}_${safeOwner(owner)}`;
}

function chainName(owner?: string): string {
  return owner === undefined ? "forward" : `forward_${safeOwner(owner)}`;
}

function chainDecl(table: string, owner?: string): string {
  return `add chain inet ${table} ${chainName(owner)} { type filter hook forward priority filter - 10; policy accept; }`;
}

export function checkTableName(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,31}$/.test(name))
    throw new InvalidScopeError("table", `not a safe nft table name: ${JSON.stringify(name)}`);
  return name;
}

/**
 * Creates the table, sets and chain when absent and (re)writes the chain's rules, in one
 * transaction. Existing set elements survive: `add set` on an existing set is a no-op.
 */
export function setupScript(table = DEFAULT_TABLE, owner?: string): string {
  checkTableName(table);
  const lines = [`add table inet ${table}`];
  for (const name of SET_NAMES) {
    const s = SET_TYPES[name];
    // per-element counters: what a mitigation's own elements dropped (RFC 9132 bytes/pkts-dropped)
    lines.push(
      `add set inet ${table} ${kernelSetName(name, owner)} { type ${s.type}; flags ${s.interval ? "interval,timeout" : "timeout"}; counter; }`,
    );
  }
  lines.push(chainDecl(table, owner));
  lines.push(`flush chain inet ${table} ${chainName(owner)}`);
  for (const [set, match] of RULES)
    lines.push(`add rule inet ${table} ${chainName(owner)} ${match}${kernelSetName(set, owner)} counter drop`);
  return lines.join("\n") + "\n";
}

/** One set element: which set and its key in canonical nft text. */
export interface ElementRef {
  set: SetName;
  key: string;
}

export function elementId(e: ElementRef): string {
  return `${e.set} ${e.key}`;
}

function rangeText(r: NumberRange): string {
  return r.lower === r.upper ? String(r.lower) : `${r.lower}-${r.upper}`;
}

function prefixText(p: ParsedPrefix): string {
  return isHostPrefix(p) ? p.network : p.text;
}

export interface BlockTarget {
  targetPrefixes: ParsedPrefix[];
  /** Empty = every protocol. */
  targetProtocols: number[];
  /** Empty = every port. */
  targetPorts: NumberRange[];
}

export interface EnforcedDevice {
  address: string;
  family: Family;
  mac?: string;
  /** Further addresses of the same device (IPv6 privacy addresses). */
  otherAddresses?: string[];
}

const PORTLESS = new Set([1, 58]);

/** Elements that block each device's traffic to the target (address, protocol, ports). */
export function blockElements(devices: EnforcedDevice[], t: BlockTarget): ElementRef[] {
  const out = new Map<string, ElementRef>();
  const protos = t.targetProtocols.length > 0 ? t.targetProtocols.map(String) : ["0-255"];
  for (const d of devices) {
    const addresses = [d.address, ...(d.otherAddresses ?? [])].map((a) => canonicalAddress(a)).filter((a) => a !== undefined);
    const mac = d.mac !== undefined ? canonicalMac(d.mac) : undefined;
    for (const target of t.targetPrefixes) {
      for (const proto of protos) {
        const ports = t.targetPorts.length > 0 && !PORTLESS.has(Number(proto)) ? t.targetPorts.map(rangeText) : ["0-65535"];
        for (const port of ports) {
          const tail = `${proto} . ${prefixText(target)} . ${port}`;
          for (const a of addresses) {
            if (a.family !== familyOf(target)) continue;
            const e: ElementRef = { set: target.family === "ipv4" ? "block4" : "block6", key: `${a.address} . ${tail}` };
            out.set(elementId(e), e);
          }
          if (mac) {
            const e: ElementRef = { set: target.family === "ipv4" ? "blockmac4" : "blockmac6", key: `${mac} . ${tail}` };
            out.set(elementId(e), e);
          }
        }
      }
    }
  }
  return [...out.values()];
}

/** Elements that quarantine each device: everything it sends through the router. */
export function quarantineElements(devices: EnforcedDevice[]): ElementRef[] {
  const out = new Map<string, ElementRef>();
  for (const d of devices) {
    for (const text of [d.address, ...(d.otherAddresses ?? [])]) {
      const a = canonicalAddress(text);
      if (!a) continue;
      const e: ElementRef = { set: a.family === 4 ? "quarantine4" : "quarantine6", key: a.address };
      out.set(elementId(e), e);
    }
    const mac = d.mac !== undefined ? canonicalMac(d.mac) : undefined;
    if (mac) out.set(`quarantinemac ${mac}`, { set: "quarantinemac", key: mac });
  }
  return [...out.values()];
}

/**
 * Comment tag naming the mitigation that added an element (read back by reconcile). With an owner
 * (one per upstream ISP when several dialers share a table, RFC 9066 section 3.1), the tag is
 * `dots:<owner>:<cuid>/<mid>`, so one dialer's reconcile leaves the other ISPs' elements alone.
 */
export function mitigationTag(cuid: string, mid: number, owner?: string): string {
  const safe = String(cuid)
    .replace(/[^A-Za-z0-9_-]/g, "_")
    .slice(0, 64);
  return owner === undefined ? `dots:${safe}/${mid}` : `dots:${safeOwner(owner)}:${safe}/${mid}`;
}

/** An owner label as it appears in a tag (no ':' so the cuid part stays unambiguous). */
export function safeOwner(owner: string): string {
  return String(owner)
    .replace(/[^A-Za-z0-9_.-]/g, "_")
    .slice(0, 48);
}

/** Splits a tag into owner (undefined for untagged-owner tags), cuid and mid; undefined if not ours. */
export function parseMitigationTag(tag: string): { owner?: string; cuid: string; mid: number } | undefined {
  const m = /^dots:(?:([A-Za-z0-9_.-]+):)?([A-Za-z0-9_-]*)\/(\d+)$/.exec(tag);
  if (!m) return undefined;
  return { ...(m[1] !== undefined ? { owner: m[1] } : {}), cuid: m[2], mid: Number(m[3]) };
}

export interface AddOptions {
  /** Seconds; -1 or undefined = no timeout (indefinite lifetime). */
  timeoutSec?: number;
  comment?: string;
}

function groupBySet(elements: ElementRef[]): Map<SetName, ElementRef[]> {
  const m = new Map<SetName, ElementRef[]>();
  for (const e of elements) {
    let l = m.get(e.set);
    if (!l) m.set(e.set, (l = []));
    l.push(e);
  }
  return m;
}

/**
 * `add element` for each set. Adding an element that exists is not an error; on kernels >= 6.10 it
 * updates the element's timeout, which is how a refresh extends a block.
 */
export function addElementsScript(table: string, items: Array<{ element: ElementRef; opts: AddOptions }>, owner?: string): string {
  checkTableName(table);
  const bySet = new Map<SetName, string[]>();
  for (const { element, opts } of items) {
    let text = element.key;
    if (opts.timeoutSec !== undefined && opts.timeoutSec > 0) text += ` timeout ${Math.min(opts.timeoutSec, MAX_NFT_TIMEOUT_SEC)}s`;
    if (opts.comment) text += ` comment "${opts.comment.replace(/["\\]/g, "_")}"`;
    let l = bySet.get(element.set);
    if (!l) bySet.set(element.set, (l = []));
    l.push(text);
  }
  return [...bySet].map(([set, texts]) => `add element inet ${table} ${kernelSetName(set, owner)} { ${texts.join(", ")} }\n`).join("");
}

export function deleteElementsScript(table: string, elements: ElementRef[], owner?: string): string {
  checkTableName(table);
  return [...groupBySet(elements)]
    .map(([set, els]) => `delete element inet ${table} ${kernelSetName(set, owner)} { ${els.map((e) => e.key).join(", ")} }\n`)
    .join("");
}

/** Logical set of a kernel set name: ours (this owner's, or the owner-less ones), else undefined. */
function logicalSet(kernelName: string, owner?: string): SetName | undefined {
  for (const n of SET_NAMES) if (kernelSetName(n, owner) === kernelName) return n;
  return undefined;
}

// ------------------------------------------------------------ reading the table back (nft -j)

/** An element as the kernel holds it. */
export interface TableElement extends ElementRef {
  comment?: string;
  /** Seconds until the kernel removes it; undefined = no timeout. */
  expiresSec?: number;
  timeoutSec?: number;
  /** The element's own counter (sets made with `counter`): what it dropped since it was added. */
  packets?: number;
  bytes?: number;
}

const PROTO_NUMBERS: Record<string, number> = {
  icmp: 1,
  igmp: 2,
  tcp: 6,
  udp: 17,
  dccp: 33,
  gre: 47,
  esp: 50,
  ah: 51,
  "ipv6-icmp": 58,
  icmpv6: 58,
  sctp: 132,
  udplite: 136,
};

function jsonComponent(v: unknown, index: number, setName: SetName): string {
  if (typeof v === "number") return String(v);
  if (typeof v === "string") {
    if (SET_TYPES[setName].interval && index === 1 && v in PROTO_NUMBERS) return String(PROTO_NUMBERS[v]);
    const a = canonicalAddress(v);
    if (a) return a.address;
    return canonicalMac(v) ?? v;
  }
  if (typeof v === "object" && v !== null) {
    const o = v as Record<string, unknown>;
    if (o.prefix && typeof o.prefix === "object") {
      const p = o.prefix as { addr: string; len: number };
      const a = canonicalAddress(p.addr);
      return `${a ? a.address : p.addr}/${p.len}`;
    }
    if (Array.isArray(o.range) && o.range.length === 2) {
      const [lo, hi] = o.range.map((x) => jsonComponent(x, index, setName));
      return lo === hi ? lo : `${lo}-${hi}`;
    }
  }
  return JSON.stringify(v);
}

/** Reads the elements of our sets (this owner's, see kernelSetName) from `nft -j list table inet <table>` output. */
export function parseTableJson(json: string, owner?: string): TableElement[] {
  const doc = JSON.parse(json) as { nftables?: Array<Record<string, unknown>> };
  const out: TableElement[] = [];
  for (const item of doc.nftables ?? []) {
    const set = item.set as { name?: string; elem?: unknown[] } | undefined;
    const name = set?.name === undefined ? undefined : logicalSet(set.name, owner);
    if (!set || !name) continue;
    for (const raw of set.elem ?? []) {
      let val: unknown = raw;
      let meta: Record<string, unknown> = {};
      if (typeof raw === "object" && raw !== null && "elem" in raw) {
        meta = (raw as { elem: Record<string, unknown> }).elem;
        val = meta.val;
      }
      const comps =
        typeof val === "object" && val !== null && Array.isArray((val as { concat?: unknown[] }).concat)
          ? (val as { concat: unknown[] }).concat
          : [val];
      const e: TableElement = { set: name, key: comps.map((c, i) => jsonComponent(c, i, name)).join(" . ") };
      if (typeof meta.comment === "string") e.comment = meta.comment;
      if (typeof meta.expires === "number") e.expiresSec = meta.expires;
      if (typeof meta.timeout === "number") e.timeoutSec = meta.timeout;
      const counter = meta.counter as { packets?: unknown; bytes?: unknown } | undefined;
      if (counter && typeof counter.packets === "number" && typeof counter.bytes === "number") {
        e.packets = counter.packets;
        e.bytes = counter.bytes;
      }
      out.push(e);
    }
  }
  return out;
}

/**
 * Our sets that exist without per-element counters (made by a version before them): `add set` with
 * `counter` fails on those ("File exists"), so setup migrates them first.
 */
export function setsWithoutCounter(json: string, owner?: string): SetName[] {
  const doc = JSON.parse(json) as { nftables?: Array<Record<string, unknown>> };
  const out: SetName[] = [];
  for (const item of doc.nftables ?? []) {
    const set = item.set as { name?: string; stmt?: unknown[] } | undefined;
    const name = set?.name === undefined ? undefined : logicalSet(set.name, owner);
    if (!set || !name) continue;
    const counted = (set.stmt ?? []).some((st) => typeof st === "object" && st !== null && "counter" in st);
    if (!counted) out.push(name);
  }
  return out;
}

/**
 * One transaction that recreates the given sets with counters and puts their elements back with
 * the time they had left and their tags; the chain is flushed first (a rule referencing a set
 * keeps it from being deleted) and rewritten by the setup script that follows.
 */
export function migrateSetsScript(table: string, sets: SetName[], elements: TableElement[], owner?: string): string {
  checkTableName(table);
  if (sets.length === 0) return "";
  const migrating = new Set(sets);
  let out = `${chainDecl(table, owner)}\nflush chain inet ${table} ${chainName(owner)}\n`;
  for (const name of sets) out += `delete set inet ${table} ${kernelSetName(name, owner)}\n`;
  out += setupScript(table, owner);
  out += addElementsScript(table, readdItems(elements.filter((e) => migrating.has(e.set))), owner);
  return out;
}

/** Elements put back with the time they had left and their tags. */
function readdItems(elements: TableElement[]): Array<{ element: ElementRef; opts: AddOptions }> {
  return elements.map((e) => ({
    element: { set: e.set, key: e.key },
    opts: {
      timeoutSec: e.timeoutSec === undefined ? undefined : Math.max(1, e.expiresSec ?? e.timeoutSec),
      comment: e.comment,
    },
  }));
}

/**
 * Moves an owner's elements out of the shared (owner-less) sets, where versions before per-owner
 * sets kept them with an owner tag, into the owner's own sets (after its setup, same transaction).
 */
export function adoptOwnedScript(table: string, shared: TableElement[], owner: string): string {
  const mine = shared.filter((e) => parseMitigationTag(e.comment ?? "")?.owner === safeOwner(owner));
  if (mine.length === 0) return "";
  return deleteElementsScript(table, mine) + addElementsScript(table, readdItems(mine), owner);
}
