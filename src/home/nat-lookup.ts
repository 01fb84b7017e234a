// Maps a mitigation's public attack source to the internal devices behind the NAT
// (RFC 9066 section 5.3.2, "NAT on the home side"): flows -> devices, each with its MAC.
import type { Family } from "./address";
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
}

export class NatLookup {
  readonly source: NatSource;
  readonly neighbours: NeighbourTable | undefined;
  private readonly runner: CommandRunner | undefined;
  private local: Set<string> | undefined;
  private localAt = 0;
  private readonly localSpec: "auto" | string[];
  private readonly maxFlows: number;

  constructor(opts: NatLookupOptions) {
    this.source = opts.source;
    this.runner = opts.runner;
    this.neighbours = opts.neighbours ?? (opts.runner ? new NeighbourTable(opts.runner) : undefined);
    this.localSpec = opts.localAddresses ?? (opts.runner ? "auto" : []);
    if (Array.isArray(this.localSpec)) this.local = new Set(this.localSpec);
    this.maxFlows = opts.maxFlowsPerDevice ?? 64;
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
    if (byDevice.size === 0) {
      const why = skippedLocal > 0 ? ` (${skippedLocal} matching flow(s) belong to the router itself)` : "";
      return { found: false, reason: "no-device", devices: [], query, detail: `no device behind the NAT matches the attack${why}` };
    }
    if (this.neighbours && this.runner) {
      try {
        await this.neighbours.refresh();
      } catch {
        // MACs are an aid; a failing `ip neigh` must not hide the devices found
      }
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
    await this.source.close();
  }
}

function isQuery(v: unknown): v is NatQuery {
  return typeof v === "object" && v !== null && Array.isArray((v as NatQuery).sourcePrefixes) && Array.isArray((v as NatQuery).targetPrefixes);
}

function uniq(values: Array<number | undefined>): number[] {
  return [...new Set(values.filter((v): v is number => v !== undefined))].sort((a, b) => a - b);
}
