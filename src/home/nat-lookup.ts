// Maps a mitigation's public attack source to the internal devices behind the NAT
// (RFC 9066 section 5.3.2, "NAT on the home side"): flows -> devices, each with its MAC.
import { parsePrefixText, type Family, type ParsedPrefix } from "./address";
import type { ConntrackFlow } from "./conntrack-parse";
import { NeighbourTable, parseIpAddr } from "./neighbours";
import type { NatSource } from "./nat-source";
import type { CommandRunner } from "./runner";
import { scopeToQuery, type NatQuery } from "./scope";

export interface Device {
  /** Internal address (the flows' original source). */
  address: string;
  family: Family;
  /** From the neighbour table (or its history, or a static table). */
  mac?: string;
  /** Other addresses currently answering with the same MAC (e.g. IPv6 privacy addresses). */
  otherAddresses: string[];
  /** The device's own source ports in the matched flows (before NAT). */
  ports: number[];
  /** Public source ports the ISP saw (after NAT). */
  publicPorts: number[];
  protocols: number[];
  flows: ConntrackFlow[];
}

export type NatLookupResult =
  | { found: true; devices: Device[]; query: NatQuery; detail: string }
  | { found: false; reason: "no-device"; devices: []; query: NatQuery; detail: string };

export interface NatLookupOptions {
  source: NatSource;
  /** Runner for `ip neigh` / `ip addr`; without it no MAC is looked up (static MACs still apply). */
  runner?: CommandRunner;
  neighbours?: NeighbourTable;
  /**
   * The router's own addresses, never reported as a device (its own traffic, e.g. the DOTS
   * session). "auto" asks `ip -o addr show`; default "auto" with a runner, else none.
   */
  localAddresses?: "auto" | string[];
  /** Flows kept per device in a result. */
  maxFlowsPerDevice?: number;
  /**
   * Re-read the neighbour table this often (ms) so the address->MAC history follows devices
   * between lookups; 0 = only at lookups. Default 30000 with a runner.
   */
  neighbourRefreshMs?: number;
}

export class NatLookup {
  readonly source: NatSource;
  readonly neighbours: NeighbourTable | undefined;
  private readonly runner: CommandRunner | undefined;
  private local: Set<string> | undefined;
  private localAt = 0;
  private readonly localSpec: "auto" | string[];
  private readonly maxFlows: number;
  private refreshTimer: NodeJS.Timeout | undefined;

  constructor(opts: NatLookupOptions) {
    this.source = opts.source;
    this.runner = opts.runner;
    this.neighbours = opts.neighbours ?? (opts.runner ? new NeighbourTable(opts.runner) : undefined);
    this.localSpec = opts.localAddresses ?? (opts.runner ? "auto" : []);
    if (Array.isArray(this.localSpec)) this.local = new Set(this.localSpec);
    this.maxFlows = opts.maxFlowsPerDevice ?? 64;
    const every = opts.neighbourRefreshMs ?? 30_000;
    if (this.runner && this.neighbours && every > 0) {
      const nb = this.neighbours;
      this.refreshTimer = setInterval(() => void nb.refresh().catch(() => undefined), every);
      this.refreshTimer.unref();
    }
  }

  /** Accepts a scope in the DOTS JSON view or an already parsed query. */
  async lookup(scopeOrQuery: unknown): Promise<NatLookupResult> {
    const query = isQuery(scopeOrQuery) ? scopeOrQuery : scopeToQuery(scopeOrQuery);
    const flows = await this.source.lookup(query);
    const local = await this.localAddresses();
    const byDevice = new Map<string, ConntrackFlow[]>();
    let skippedLocal = 0;
    for (const f of flows) {
      if (local.has(f.orig.src)) {
        skippedLocal++;
        continue;
      }
      let list = byDevice.get(f.orig.src);
      if (!list) byDevice.set(f.orig.src, (list = []));
      list.push(f);
    }
    if (this.neighbours && this.runner && (byDevice.size > 0 || this.hostV6Sources(query).length > 0)) {
      try {
        await this.neighbours.refresh();
      } catch {
        // MACs are an aid; a failing `ip neigh` must not hide the devices found
      }
    }
    if (byDevice.size === 0) {
      const moved = await this.followMac(query, local);
      if (moved) return moved;
      const why = skippedLocal > 0 ? ` (${skippedLocal} matching flow(s) belong to the router itself)` : "";
      return { found: false, reason: "no-device", devices: [], query, detail: `no device behind the NAT matches the attack${why}` };
    }
    const devices: Device[] = [];
    for (const [address, fl] of byDevice) {
      const mac = this.source.macFor?.(address) ?? this.neighbours?.macFor(address);
      const d: Device = {
        address,
        family: fl[0].family,
        otherAddresses: mac && this.neighbours ? this.neighbours.addressesFor(mac).filter((a) => a !== address) : [],
        ports: uniq(fl.map((f) => f.orig.sport)),
        publicPorts: uniq(fl.map((f) => f.reply.dport)),
        protocols: uniq(fl.map((f) => f.protocol)),
        flows: fl.slice(0, this.maxFlows),
      };
      if (mac) d.mac = mac;
      devices.push(d);
    }
    devices.sort((a, b) => b.flows.length - a.flows.length || (a.address < b.address ? -1 : 1));
    const detail = devices.map((d) => `${d.address}${d.mac ? ` (${d.mac})` : ""}: ${d.flows.length} flow(s)`).join("; ");
    return { found: true, devices, query, detail };
  }

  private hostV6Sources(q: NatQuery): string[] {
    return q.sourcePrefixes.filter((p) => p.family === "ipv6" && p.length === 128).map((p) => p.network);
  }

  /**
   * IPv6 without NAT: the named address may be a privacy address the device has since left. Its
   * MAC (neighbour history) leads to the addresses it uses now; their flows to the target count,
   * and without any the device is still reported (flows empty) so its MAC can be blocked.
   */
  private async followMac(q: NatQuery, local: Set<string>): Promise<NatLookupResult | undefined> {
    if (!this.neighbours) return undefined;
    const devices: Device[] = [];
    for (const old of this.hostV6Sources(q)) {
      const mac = this.neighbours.macFor(old);
      if (!mac) continue;
      const now = this.neighbours.addressesFor(mac).filter((a) => a !== old && !local.has(a) && !a.startsWith("fe80:"));
      const byAddress = new Map<string, ConntrackFlow[]>();
      if (now.length > 0) {
        const prefixes = now.map((a) => parsePrefixText(a)).filter((p): p is ParsedPrefix => p !== undefined);
        // a new address means new sockets: the old source ports say nothing about them
        const moved: NatQuery = {
          ...q,
          sourcePrefixes: prefixes,
          sourcePorts: [],
          sourceIcmpTypes: q.sourcePorts.length > 0 ? [] : q.sourceIcmpTypes,
        };
        for (const f of await this.source.lookup(moved)) {
          let l = byAddress.get(f.orig.src);
          if (!l) byAddress.set(f.orig.src, (l = []));
          l.push(f);
        }
      }
      if (byAddress.size === 0) byAddress.set(now.find((a) => a.includes(":")) ?? old, []);
      for (const [address, flows] of byAddress) {
        devices.push({
          address,
          family: 6,
          mac,
          otherAddresses: [...new Set([old, ...now])].filter((a) => a !== address),
          ports: uniq(flows.map((f) => f.orig.sport)),
          publicPorts: uniq(flows.map((f) => f.reply.dport)),
          protocols: uniq(flows.map((f) => f.protocol)),
          flows: flows.slice(0, this.maxFlows),
        });
      }
    }
    if (devices.length === 0) return undefined;
    const detail = devices
      .map((d) => `${d.address} (${d.mac}), found by its MAC after an address change: ${d.flows.length} flow(s)`)
      .join("; ");
    return { found: true, devices, query: q, detail };
  }

  private async localAddresses(): Promise<Set<string>> {
    // the WAN address can change (DHCP, PPP): asked again after a minute
    if (this.local && (this.localSpec !== "auto" || Date.now() - this.localAt < 60_000)) return this.local;
    if (!this.runner) return (this.local = new Set());
    try {
      const { stdout } = await this.runner.run(["ip", "-o", "addr", "show"]);
      this.local = new Set(parseIpAddr(stdout));
      this.localAt = Date.now();
    } catch {
      return this.local ?? new Set(); // retried on the next lookup
    }
    return this.local;
  }

  async close(): Promise<void> {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    await this.source.close();
  }
}

function isQuery(v: unknown): v is NatQuery {
  return (
    typeof v === "object" && v !== null && Array.isArray((v as NatQuery).sourcePrefixes) && Array.isArray((v as NatQuery).targetPrefixes)
  );
}

function uniq(values: Array<number | undefined>): number[] {
  return [...new Set(values.filter((v): v is number => v !== undefined))].sort((a, b) => a - b);
}
