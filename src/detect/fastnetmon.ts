// FastNetMon Community Edition hand-off: what its notify script receives, turned into a call-home
// mitigation scope. FastNetMon 1.2.x runs `<notify_script_path> IP DIRECTION PPS ACTION` through
// the shell; ACTION is "ban" (stdin: the attack description plus, with connection tracking, the
// host's flows), "attack_details" (stdin: the description plus packet samples, once
// ban_details_records_count samples are in) or "unban" (no stdin). Pure parsing: no I/O here.
import type * as ipaddr from "ipaddr.js";
import { parseAddress, parsePrefix, prefixContains, validateMitigationRequest } from "../dots/validation";
import { MITIGATION_SCOPE_KEY, SCOPE } from "../dots/vocabulary";

function canonical(a: ipaddr.IPv4 | ipaddr.IPv6): string {
  return a.kind() === "ipv4" ? a.toString() : (a as ipaddr.IPv6).toRFC5952String();
}

export type FastNetMonAction = "ban" | "unban" | "attack_details";

export interface FastNetMonCall {
  /** The banned host (for an outgoing attack: the home's public address), canonical text. */
  address: string;
  family: "ipv4" | "ipv6";
  direction: "incoming" | "outgoing" | "other";
  pps: number;
  action: FastNetMonAction;
}

export class FastNetMonArgsError extends Error {
  override readonly name = "FastNetMonArgsError";
}

const ACTIONS: readonly FastNetMonAction[] = ["ban", "unban", "attack_details"];

/** The four positional arguments FastNetMon passes. Throws FastNetMonArgsError naming the bad one. */
export function parseFastNetMonArgs(argv: readonly string[]): FastNetMonCall {
  if (argv.length < 4)
    throw new FastNetMonArgsError(
      `expected the 4 arguments FastNetMon passes (IP DIRECTION PPS ACTION), got ${argv.length}: ${JSON.stringify(argv)}`,
    );
  const [ipText, dirText, ppsText, actionText] = argv;
  const ip = parseAddress(ipText);
  if (!ip) throw new FastNetMonArgsError(`argument 1 (IP) is not an IPv4 or IPv6 address: ${JSON.stringify(ipText)}`);
  const direction = dirText === "incoming" || dirText === "outgoing" ? dirText : "other";
  if (!/^\d{1,15}$/.test(ppsText)) throw new FastNetMonArgsError(`argument 3 (pps) is not a whole number: ${JSON.stringify(ppsText)}`);
  if (!(ACTIONS as readonly string[]).includes(actionText))
    throw new FastNetMonArgsError(`argument 4 (action) must be ban, unban or attack_details, got ${JSON.stringify(actionText)}`);
  const family = ip.kind() === "ipv4" ? "ipv4" : "ipv6";
  const address = canonical(ip);
  return { address, family, direction, pps: Number(ppsText), action: actionText as FastNetMonAction };
}

/** One traffic record of the details: a flow line (weight = packets) or a packet sample (weight 1 x sample ratio). */
export interface TrafficRecord {
  source: string;
  sourcePort?: number;
  target: string;
  targetPort?: number;
  /** IP protocol number, when the record names it. */
  protocol?: number;
  weight: number;
  kind: "flow" | "sample";
}

export interface FastNetMonDetails {
  /** The "IP:" line. */
  address?: string;
  attackType?: string;
  /** "Attack protocol:" as a protocol number (FastNetMon's guess of the dominant protocol). */
  protocol?: number;
  records: TrafficRecord[];
  /** Lines that looked like flows or samples but could not be read (kept for the log). */
  unreadable: string[];
}

/** The most stdin we read: FastNetMon prints at most ban_details_records_count (default 20) flows and samples. */
export const MAX_DETAILS_BYTES = 1 << 20;
const MAX_RECORDS = 10_000;

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, icmpv6: 58, "ipv6-icmp": 58, sctp: 132 };

export function protocolNumber(name: string): number | undefined {
  const n = name.trim().toLowerCase();
  if (/^\d{1,3}$/.test(n) && Number(n) <= 255) return Number(n);
  return PROTOCOLS[n];
}

/** "addr:port" where addr may be IPv6 (FastNetMon prints `2001:db8::1:53`: the last group is the port). */
function splitEndpoint(text: string): { address: string; port: number } | undefined {
  const i = text.lastIndexOf(":");
  if (i <= 0) return undefined;
  const addr = parseAddress(text.slice(0, i));
  const portText = text.slice(i + 1);
  if (!addr || !/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return undefined;
  return { address: canonical(addr), port: Number(portText) };
}

// flow line (connection tracking, printed on "ban"): "198.51.100.2:40001 > 203.0.113.5:5555 33814 bytes 583 packets"
// (incoming flows use " < " with the opposite host on the right)
const FLOW = /^(\S+) ([<>]) (\S+) (\d+) bytes (\d+) packets\s*$/;
// packet sample (printed on "attack_details"):
// "2026-12-04 16:06:38.556460 198.51.100.2:40001 > 203.0.113.5:5555 protocol: udp frag: 0  packets: 1 size: 58 bytes ttl: 63 sample ratio: 1"
const SAMPLE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (\S+) > (\S+) protocol: (\S+)(.*)$/;
const FLOW_HEADER = /^(TCP|UDP) flows: \d+\s*$/;

/** Reads FastNetMon's plain-text attack details. Never throws; what it cannot read goes to `unreadable`. */
export function parseFastNetMonDetails(text: string): FastNetMonDetails {
  const out: FastNetMonDetails = { records: [], unreadable: [] };
  let flowProtocol: number | undefined;
  for (const raw of text.slice(0, MAX_DETAILS_BYTES).split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "") continue;
    let m: RegExpExecArray | null;
    if ((m = /^IP: (\S+)$/.exec(line))) {
      const a = parseAddress(m[1]);
      if (a) out.address = canonical(a);
    } else if ((m = /^Attack type: (\S+)$/.exec(line))) out.attackType = m[1];
    else if ((m = /^Attack protocol: (\S+)$/.exec(line))) out.protocol = protocolNumber(m[1]);
    else if ((m = FLOW_HEADER.exec(line))) flowProtocol = protocolNumber(m[1]);
    else if (/^(Incoming|Outgoing)$/.test(line)) flowProtocol = undefined;
    else if ((m = FLOW.exec(line))) {
      const left = splitEndpoint(m[1]);
      const right = splitEndpoint(m[3]);
      if (!left || !right) {
        out.unreadable.push(line);
        continue;
      }
      // ">" : host:src_port > remote:dst_port ; "<" : host:dst_port < remote:src_port
      const [src, dst] = m[2] === ">" ? [left, right] : [right, left];
      if (out.records.length < MAX_RECORDS)
        out.records.push({
          source: src.address,
          sourcePort: src.port,
          target: dst.address,
          targetPort: dst.port,
          protocol: flowProtocol,
          weight: Number(m[5]),
          kind: "flow",
        });
    } else if ((m = SAMPLE.exec(line))) {
      const src = splitEndpoint(m[1]);
      const dst = splitEndpoint(m[2]);
      if (!src || !dst) {
        out.unreadable.push(line);
        continue;
      }
      const ratio = /sample ratio: (\d+)/.exec(m[4]);
      const weight = ratio && Number(ratio[1]) > 0 ? Number(ratio[1]) : 1;
      const protocol = protocolNumber(m[3]);
      const ported = protocol === 6 || protocol === 17 || protocol === 132;
      if (out.records.length < MAX_RECORDS)
        out.records.push({
          source: src.address,
          sourcePort: ported ? src.port : undefined,
          target: dst.address,
          targetPort: ported ? dst.port : undefined,
          protocol,
          weight,
          kind: "sample",
        });
    } else if (/ > | < /.test(line)) out.unreadable.push(line);
  }
  return out;
}

export interface AttackScopeOptions {
  /** Lifetime of the request, seconds. */
  lifetime: number;
  /** Keep a flow when it carries at least this share of the heaviest flow's packets (0..1). */
  flowShare?: number;
  /** At most this many targets / ports in one request (the heaviest first). */
  maxTargets?: number;
  maxPorts?: number;
}

export interface AttackScope {
  /** The bare scope (the JSON `listen` and the mitigation request node take), or undefined when no target is known. */
  scope?: Record<string, unknown>;
  targets: string[];
  sourcePorts: number[];
  targetPorts: number[];
  protocols: number[];
  /** Why the scope lacks ports or a target, for the log. */
  notes: string[];
}

const PORTED = new Set([6, 17, 132]);

/**
 * The scope of the mitigation for an outgoing attack from `call.address`: the heaviest flows (or
 * samples) leaving that address, their targets, protocols and (NATed) source ports. Flows from
 * the same address that carry little traffic (another device behind the same NAT) are left out,
 * so the home does not block a bystander.
 */
export function attackScope(call: FastNetMonCall, details: FastNetMonDetails, opts: AttackScopeOptions): AttackScope {
  const notes: string[] = [];
  const share = opts.flowShare ?? 0.2;
  const maxTargets = opts.maxTargets ?? 8;
  const maxPorts = opts.maxPorts ?? 16;
  if (details.address !== undefined && details.address !== call.address)
    notes.push(`the details name ${details.address}, the arguments ${call.address}: only traffic from ${call.address} is used`);
  // flows when the ban brought them, else samples (attack_details)
  const mine = (kind: TrafficRecord["kind"]): TrafficRecord[] =>
    details.records.filter((r) => r.kind === kind && r.source === call.address);
  let records = mine("flow");
  if (records.length === 0) records = mine("sample");
  // aggregate per (source port, target, target port, protocol)
  const agg = new Map<string, TrafficRecord>();
  for (const r of records) {
    const protocol = r.protocol ?? details.protocol;
    const key = `${r.sourcePort ?? ""}|${r.target}|${r.targetPort ?? ""}|${protocol ?? ""}`;
    const prev = agg.get(key);
    if (prev) prev.weight += r.weight;
    else agg.set(key, { ...r, protocol });
  }
  const sorted = [...agg.values()].sort((a, b) => b.weight - a.weight);
  const top = sorted[0]?.weight ?? 0;
  const heavy = sorted.filter((r) => r.weight > 0 && r.weight >= top * share);
  if (heavy.length < sorted.length)
    notes.push(`${sorted.length - heavy.length} light flow(s) below ${Math.round(share * 100)}% of the heaviest left out`);

  const uniq = <T>(xs: T[], max: number): T[] => [...new Set(xs)].slice(0, max);
  const targets = uniq(
    heavy.map((r) => r.target).filter((t) => parseAddress(t)?.kind() === parseAddress(call.address)?.kind()),
    maxTargets,
  );
  const protocols = uniq(
    heavy.map((r) => r.protocol).filter((p): p is number => p !== undefined),
    8,
  );
  if (protocols.length === 0 && details.protocol !== undefined) protocols.push(details.protocol);
  const allPorted =
    heavy.length > 0 &&
    heavy.every((r) => r.protocol !== undefined && PORTED.has(r.protocol) && r.sourcePort !== undefined && r.targetPort !== undefined);
  let sourcePorts: number[] = [];
  let targetPorts: number[] = [];
  if (allPorted) {
    sourcePorts = uniq(
      heavy.map((r) => r.sourcePort as number),
      maxPorts + 1,
    );
    targetPorts = uniq(
      heavy.map((r) => r.targetPort as number),
      maxPorts + 1,
    );
    if (sourcePorts.length > maxPorts || targetPorts.length > maxPorts) {
      notes.push(`more than ${maxPorts} ports: the request names the address and targets only`);
      sourcePorts = [];
      targetPorts = [];
    }
  } else if (heavy.length > 0)
    notes.push(
      "the traffic has no ports for every flow (ICMP, fragments or an unknown protocol): the request names the address and targets only",
    );
  if (targets.length === 0) {
    notes.push(
      details.records.length === 0
        ? "no flows or packet samples in the details"
        : `no flows or samples from ${call.address} in the details`,
    );
    if (details.unreadable.length > 0)
      notes.push(`${details.unreadable.length} unreadable line(s), first: ${JSON.stringify(details.unreadable[0])}`);
    return { targets, sourcePorts, targetPorts, protocols, notes };
  }
  const hostLen = call.family === "ipv4" ? 32 : 128;
  const scope: Record<string, unknown> = {
    [SCOPE.targetPrefix]: targets.map((t) => `${t}/${hostLen}`),
    [SCOPE.sourcePrefix]: [`${call.address}/${hostLen}`],
    [SCOPE.lifetime]: opts.lifetime,
  };
  if (protocols.length > 0) scope[SCOPE.targetProtocol] = protocols;
  if (targetPorts.length > 0) scope[SCOPE.targetPortRange] = targetPorts.map((p) => ({ "lower-port": p }));
  if (sourcePorts.length > 0) scope[SCOPE.sourcePortRange] = sourcePorts.map((p) => ({ "lower-port": p }));
  return { scope, targets, sourcePorts, targetPorts, protocols, notes };
}

/** The home whose prefixes hold `address` (the longest matching prefix wins), or undefined. */
export function homeForAddress(address: string, homePrefixes: Record<string, string[]>): { home: string; prefix: string } | undefined {
  let best: { home: string; prefix: string; length: number } | undefined;
  for (const [home, prefixes] of Object.entries(homePrefixes)) {
    for (const prefix of prefixes) {
      let length: number;
      try {
        length = parsePrefix(prefix, { allowHostBits: true, allowBareAddress: true }).length;
      } catch {
        continue;
      }
      if (prefixContains(prefix, address) && (!best || length > best.length)) best = { home, prefix, length };
    }
  }
  return best && { home: best.home, prefix: best.prefix };
}

/** Checks the scope with the same rules the listener applies before sending; returns the problems or []. */
export function scopeProblems(scope: Record<string, unknown>, homePrefixes: string[]): string[] {
  const r = validateMitigationRequest({ [MITIGATION_SCOPE_KEY]: { scope: [scope] } }, { side: "isp", homePrefixes });
  return r.ok ? [] : r.errors.map((e) => `${e.field}: ${e.message}`);
}
