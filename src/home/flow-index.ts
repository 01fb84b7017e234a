// Matching a conntrack flow against a mitigation scope (RFC 9066 section 5.3.2 CPE NAT lookup),
// and an in-memory index that answers a lookup without scanning every flow, so the cost stays
// the same for 100 or 100,000 entries.
import { prefixContains, isHostPrefix } from "./address";
import { flowKey, ICMP_PROTOCOLS, PORT_PROTOCOLS, type ConntrackFlow } from "./conntrack-parse";
import { inRanges, type NatQuery } from "./scope";

/**
 * A flow belongs to the attack when the reply tuple's destination (the public address and port the
 * ISP saw, after NAT) is in source-prefix / source-port-range, and the original destination is in
 * target-prefix with the protocol and port. ICMP types are those of the original direction (what
 * the device sent and the ISP observed). Without NAT (IPv6) reply.dst is the device itself, so the
 * same rule matches directly.
 */
export function matchFlow(q: NatQuery, f: ConntrackFlow): boolean {
  if (!q.sourcePrefixes.some((p) => prefixContains(p, f.reply.dst))) return false;
  if (!q.targetPrefixes.some((p) => prefixContains(p, f.orig.dst))) return false;
  if (q.targetProtocols.length > 0 && !q.targetProtocols.includes(f.protocol)) return false;
  const hasPorts = PORT_PROTOCOLS.has(f.protocol);
  const isIcmp = (f.family === 4 && f.protocol === 1) || (f.family === 6 && f.protocol === 58);
  if (q.sourcePorts.length > 0 || q.sourceIcmpTypes.length > 0) {
    const byPort = hasPorts && q.sourcePorts.length > 0 && inRanges(f.reply.dport, q.sourcePorts);
    const byType = isIcmp && q.sourceIcmpTypes.length > 0 && inRanges(f.orig.type, q.sourceIcmpTypes);
    if (!byPort && !byType) return false;
  }
  if (q.targetPorts.length > 0) {
    if (hasPorts) {
      if (!inRanges(f.orig.dport, q.targetPorts)) return false;
    } else if (!(isIcmp && q.sourceIcmpTypes.length > 0)) {
      return false;
    }
  }
  return true;
}

/** Above this many source ports, probing the port index costs more than another selector. */
const MAX_PORT_PROBES = 4096;

export interface FlowIndexStats {
  flows: number;
  /** Flows refused because the index was full. */
  refused: number;
}

export class FlowIndex {
  private readonly flows = new Map<string, ConntrackFlow>();
  private readonly byReplyPort = new Map<string, Bucket>();
  private readonly byOrigDst = new Map<string, Bucket>();
  private readonly byReplyDst = new Map<string, Bucket>();
  /** (protocol, public port or ICMP type, target address): one device port spraying many targets stays selective. */
  private readonly byPortTarget = new Map<string, Bucket>();
  /** (target address, protocol, target port). */
  private readonly byTargetPort = new Map<string, Bucket>();
  private readonly protocols = new Set<number>();
  private refused = 0;

  constructor(readonly maxFlows = 1_000_000) {}

  get size(): number {
    return this.flows.size;
  }

  stats(): FlowIndexStats {
    return { flows: this.flows.size, refused: this.refused };
  }

  /** Adds or replaces a flow; false when the index is full. */
  upsert(flow: ConntrackFlow): boolean {
    const key = flowKey(flow);
    const old = this.flows.get(key);
    if (old) this.unlink(key, old);
    else if (this.flows.size >= this.maxFlows) {
      this.refused++;
      return false;
    }
    this.flows.set(key, flow);
    this.link(key, flow);
    return true;
  }

  remove(flow: ConntrackFlow): boolean {
    const key = flowKey(flow);
    const old = this.flows.get(key);
    if (!old) return false;
    this.unlink(key, old);
    this.flows.delete(key);
    return true;
  }

  clear(): void {
    this.flows.clear();
    this.byReplyPort.clear();
    this.byOrigDst.clear();
    this.byReplyDst.clear();
    this.byPortTarget.clear();
    this.byTargetPort.clear();
    this.protocols.clear();
    this.refused = 0;
  }

  all(): IterableIterator<ConntrackFlow> {
    return this.flows.values();
  }

  lookup(q: NatQuery): ConntrackFlow[] {
    const keys = this.candidates(q);
    const out: ConntrackFlow[] = [];
    if (keys === undefined) {
      for (const f of this.flows.values()) if (matchFlow(q, f)) out.push(f);
      return out;
    }
    for (const k of keys) {
      const f = this.flows.get(k);
      if (f && matchFlow(q, f)) out.push(f);
    }
    return out;
  }

  /** The smallest candidate set any selector offers; undefined = scan everything. */
  private candidates(q: NatQuery): Iterable<string> | undefined {
    const options: Bucket[][] = [];
    const targetHosts = q.targetPrefixes.every(isHostPrefix) ? [...new Set(q.targetPrefixes.map((p) => p.network))] : undefined;
    const portKeys = this.portKeys(q);
    if (portKeys) {
      options.push(setsFor(this.byReplyPort, portKeys));
      if (targetHosts && portKeys.length * targetHosts.length <= MAX_PORT_PROBES) {
        options.push(
          setsFor(
            this.byPortTarget,
            portKeys.flatMap((k) => targetHosts.map((t) => `${k}|${t}`)),
          ),
        );
      }
    }
    if (targetHosts) {
      options.push(setsFor(this.byOrigDst, targetHosts));
      const tk = this.targetPortKeys(q, targetHosts);
      if (tk) options.push(setsFor(this.byTargetPort, tk));
    }
    if (q.sourcePrefixes.every(isHostPrefix))
      options.push(
        setsFor(
          this.byReplyDst,
          q.sourcePrefixes.map((p) => p.network),
        ),
      );
    if (options.length === 0) return undefined;
    let best = options[0];
    let bestSize = sizeOf(best);
    for (const o of options.slice(1)) {
      const s = sizeOf(o);
      if (s < bestSize) {
        best = o;
        bestSize = s;
      }
    }
    if (best.length === 1) return typeof best[0] === "string" ? [best[0]] : best[0];
    const union = new Set<string>();
    for (const b of best) {
      if (typeof b === "string") union.add(b);
      else for (const k of b) union.add(k);
    }
    return union;
  }

  /** Keys of byReplyPort the query can hit; undefined when too many to probe. */
  private portKeys(q: NatQuery): string[] | undefined {
    if (q.sourcePorts.length === 0 && q.sourceIcmpTypes.length === 0) return undefined;
    const protos = q.targetProtocols.length > 0 ? q.targetProtocols : [...this.protocols];
    let probes = 0;
    for (const r of q.sourcePorts) probes += (r.upper - r.lower + 1) * protos.length;
    for (const r of q.sourceIcmpTypes) probes += (r.upper - r.lower + 1) * 2;
    if (probes > MAX_PORT_PROBES) return undefined;
    const keys: string[] = [];
    for (const proto of protos) {
      if (!PORT_PROTOCOLS.has(proto)) continue;
      for (const r of q.sourcePorts) for (let p = r.lower; p <= r.upper; p++) keys.push(`${proto}|${p}`);
    }
    for (const proto of ICMP_PROTOCOLS) {
      for (const r of q.sourceIcmpTypes) for (let t = r.lower; t <= r.upper; t++) keys.push(`${proto}|t${t}`);
    }
    return keys;
  }

  /** Keys of byTargetPort when the query names protocols and target ports. */
  private targetPortKeys(q: NatQuery, hosts: string[]): string[] | undefined {
    if (q.targetProtocols.length === 0 || q.targetPorts.length === 0) return undefined;
    if (!q.targetProtocols.every((p) => PORT_PROTOCOLS.has(p))) return undefined;
    let probes = 0;
    for (const r of q.targetPorts) probes += (r.upper - r.lower + 1) * q.targetProtocols.length * hosts.length;
    if (probes > MAX_PORT_PROBES) return undefined;
    const keys: string[] = [];
    for (const h of hosts)
      for (const proto of q.targetProtocols)
        for (const r of q.targetPorts) for (let p = r.lower; p <= r.upper; p++) keys.push(`${h}|${proto}|${p}`);
    return keys;
  }

  private portKey(f: ConntrackFlow): string | undefined {
    if (PORT_PROTOCOLS.has(f.protocol) && f.reply.dport !== undefined) return `${f.protocol}|${f.reply.dport}`;
    if (ICMP_PROTOCOLS.has(f.protocol) && f.orig.type !== undefined) return `${f.protocol}|t${f.orig.type}`;
    return undefined;
  }

  private link(key: string, f: ConntrackFlow): void {
    this.protocols.add(f.protocol);
    const pk = this.portKey(f);
    if (pk) {
      addTo(this.byReplyPort, pk, key);
      addTo(this.byPortTarget, `${pk}|${f.orig.dst}`, key);
    }
    addTo(this.byOrigDst, f.orig.dst, key);
    addTo(this.byReplyDst, f.reply.dst, key);
    if (PORT_PROTOCOLS.has(f.protocol) && f.orig.dport !== undefined)
      addTo(this.byTargetPort, `${f.orig.dst}|${f.protocol}|${f.orig.dport}`, key);
  }

  private unlink(key: string, f: ConntrackFlow): void {
    const pk = this.portKey(f);
    if (pk) {
      removeFrom(this.byReplyPort, pk, key);
      removeFrom(this.byPortTarget, `${pk}|${f.orig.dst}`, key);
    }
    removeFrom(this.byOrigDst, f.orig.dst, key);
    removeFrom(this.byReplyDst, f.reply.dst, key);
    if (PORT_PROTOCOLS.has(f.protocol) && f.orig.dport !== undefined)
      removeFrom(this.byTargetPort, `${f.orig.dst}|${f.protocol}|${f.orig.dport}`, key);
  }
}

/** Most keys point at one flow: a bare key then, a Set only when shared (saves memory at 100k flows). */
type Bucket = string | Set<string>;

function addTo(m: Map<string, Bucket>, k: string, v: string): void {
  const b = m.get(k);
  if (b === undefined) m.set(k, v);
  else if (typeof b === "string") {
    if (b !== v) m.set(k, new Set([b, v]));
  } else b.add(v);
}

function removeFrom(m: Map<string, Bucket>, k: string, v: string): void {
  const b = m.get(k);
  if (b === undefined) return;
  if (typeof b === "string") {
    if (b === v) m.delete(k);
    return;
  }
  b.delete(v);
  if (b.size === 1) m.set(k, b.values().next().value as string);
}

function setsFor(m: Map<string, Bucket>, keys: string[]): Bucket[] {
  const out: Bucket[] = [];
  for (const k of keys) {
    const b = m.get(k);
    if (b !== undefined) out.push(b);
  }
  return out;
}

function sizeOf(buckets: Bucket[]): number {
  let n = 0;
  for (const b of buckets) n += typeof b === "string" ? 1 : b.size;
  return n;
}
