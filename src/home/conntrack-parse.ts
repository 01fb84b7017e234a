// Parses one line of conntrack state in the three textual forms a router offers:
// `conntrack -L` (default and `-o extended`), `conntrack -E` events, and /proc/net/nf_conntrack.
// Unknown keys are ignored; a line that is not a flow yields undefined, never an exception.
import { canonicalAddress, type Family } from "./address";

export interface FlowEnd {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** ICMP/ICMPv6 only. */
  type?: number;
  code?: number;
  id?: number;
}

export interface ConntrackFlow {
  family: Family;
  /** IANA protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...). */
  protocol: number;
  /** As the device sent it: src is the internal device. */
  orig: FlowEnd;
  /** As the answer comes back: dst is the public (post-NAT) address and port. */
  reply: FlowEnd;
  state?: string;
  /** Seconds left, when the listing shows it. */
  timeout?: number;
  flags: string[];
  zone?: number;
  mark?: number;
}

export type ConntrackEventType = "NEW" | "UPDATE" | "DESTROY";

export interface ParsedConntrackLine {
  event?: ConntrackEventType;
  flow: ConntrackFlow;
}

const TUPLE_KEYS = new Set(["src", "dst", "sport", "dport", "type", "code", "id"]);
const IPV4_RE = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

export const PROTOCOL_NAMES: Record<number, string> = {
  1: "icmp",
  6: "tcp",
  17: "udp",
  33: "dccp",
  58: "icmpv6",
  132: "sctp",
  136: "udplite",
  47: "gre",
};

/** Protocols whose header starts with 16-bit source and destination ports. */
export const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);
export const ICMP_PROTOCOLS = new Set([1, 58]);

// Listings repeat the same few addresses (the WAN address, the devices, the targets): a bounded
// cache spares re-validating them on every line.
const addrCache = new Map<string, string>();
const ADDR_CACHE_MAX = 8192;

function normAddr(text: string): string | undefined {
  const hit = addrCache.get(text);
  if (hit !== undefined) return hit;
  let out: string | undefined;
  if (IPV4_RE.test(text)) {
    // canonical dotted quad: no leading zeros, each octet <= 255
    out = text.split(".").every((o) => (o.length === 1 || o[0] !== "0") && Number(o) <= 255) ? text : canonicalAddress(text)?.address;
  } else {
    out = canonicalAddress(text)?.address;
  }
  if (out === undefined) return undefined;
  if (addrCache.size >= ADDR_CACHE_MAX) addrCache.clear();
  addrCache.set(text, out);
  return out;
}

function u16(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

function u8(text: string): number | undefined {
  if (!/^\d{1,3}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 255 ? n : undefined;
}

export function parseConntrackLine(line: string): ParsedConntrackLine | undefined {
  const tokens = line.trim().split(/\s+/);
  if (tokens.length < 4) return undefined;
  let i = 0;
  let event: ConntrackEventType | undefined;
  const head = tokens[0];
  if (head === "[NEW]" || head === "[UPDATE]" || head === "[DESTROY]") {
    event = head.slice(1, -1) as ConntrackEventType;
    i++;
  }
  let family: Family | undefined;
  if (tokens[i] === "ipv4" || tokens[i] === "ipv6") {
    family = tokens[i] === "ipv4" ? 4 : 6;
    i += 2; // family name and number
  }
  // protocol name then number
  const protoNum = u8(tokens[i + 1] ?? "");
  if (protoNum === undefined) return undefined;
  i += 2;
  let timeout: number | undefined;
  let state: string | undefined;
  for (; i < tokens.length && !tokens[i].includes("="); i++) {
    const t = tokens[i];
    if (/^\d+$/.test(t)) timeout = Number(t);
    else if (/^[A-Z_]+$/.test(t)) state = t;
    else if (!t.startsWith("[")) return undefined;
  }
  const orig: Partial<FlowEnd> = {};
  const reply: Partial<FlowEnd> = {};
  let side: 0 | 1 | 2 = 0; // 0 none yet, 1 orig, 2 reply
  let replyClosed = false;
  const flags: string[] = [];
  let zone: number | undefined;
  let mark: number | undefined;
  for (; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.startsWith("[")) {
      if (t.endsWith("]")) flags.push(t.slice(1, -1));
      continue;
    }
    const eq = t.indexOf("=");
    if (eq <= 0) continue;
    const key = t.slice(0, eq);
    const value = t.slice(eq + 1);
    if (key === "src" && side < 2) {
      side = (side + 1) as 1 | 2;
    }
    if (TUPLE_KEYS.has(key) && side > 0 && !(side === 2 && replyClosed)) {
      const end = side === 1 ? orig : reply;
      if (key === "src" || key === "dst") {
        const a = normAddr(value);
        if (!a) return undefined;
        end[key] = a;
      } else if (key === "sport" || key === "dport") {
        const n = u16(value);
        if (n === undefined) return undefined;
        end[key] = n;
      } else if (key === "type" || key === "code") {
        const n = u8(value);
        if (n === undefined) return undefined;
        end[key] = n;
      } else {
        // an entry id (`-o id`) is not part of a tuple; only ICMP tuples carry an id
        if (!ICMP_PROTOCOLS.has(protoNum)) continue;
        const n = u16(value);
        if (n === undefined) return undefined;
        end.id = n;
      }
      continue;
    }
    if (side === 2) replyClosed = true;
    if (key === "zone") zone = Number(value);
    else if (key === "mark") mark = Number(value);
  }
  if (!orig.src || !orig.dst || !reply.src || !reply.dst) return undefined;
  const fam: Family = family ?? (orig.src.includes(":") ? 6 : 4);
  const flow: ConntrackFlow = { family: fam, protocol: protoNum, orig: orig as FlowEnd, reply: reply as FlowEnd, flags };
  if (state !== undefined) flow.state = state;
  if (timeout !== undefined) flow.timeout = timeout;
  if (zone !== undefined && Number.isFinite(zone)) flow.zone = zone;
  if (mark !== undefined && Number.isFinite(mark)) flow.mark = mark;
  return event ? { event, flow } : { flow };
}

/** Identity of a conntrack entry: its original tuple and zone. */
export function flowKey(f: ConntrackFlow): string {
  const o = f.orig;
  return `${f.protocol}|${f.zone ?? 0}|${o.src}|${o.dst}|${o.sport ?? ""}|${o.dport ?? ""}|${o.type ?? ""}|${o.code ?? ""}|${o.id ?? ""}`;
}
