// The neighbour table (IPv4 ARP and IPv6 ND) gives each device's MAC. A history of recently seen
// address->MAC pairs keeps a device recognisable after it changes its IPv6 privacy address or
// after its old entry aged out.
import { canonicalAddress, canonicalMac, type Family } from "./address";
import type { CommandRunner } from "./runner";

export interface Neighbour {
  address: string;
  family: Family;
  mac: string;
  dev?: string;
  state?: string;
}

/** Parses `ip neigh show` output; entries without a link-layer address are skipped. */
export function parseIpNeigh(text: string): Neighbour[] {
  const out: Neighbour[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim().split(/\s+/);
    if (t.length < 3) continue;
    const a = canonicalAddress(t[0]);
    if (!a) continue;
    const ll = t.indexOf("lladdr");
    if (ll < 0) continue;
    const mac = canonicalMac(t[ll + 1] ?? "");
    if (!mac) continue;
    const devAt = t.indexOf("dev");
    const n: Neighbour = { address: a.address, family: a.family, mac };
    if (devAt >= 0 && t[devAt + 1]) n.dev = t[devAt + 1];
    const last = t[t.length - 1];
    if (/^[A-Z]+$/.test(last)) n.state = last;
    out.push(n);
  }
  return out;
}

/** Parses `ip -o addr show` into the router's own addresses. */
export function parseIpAddr(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim().split(/\s+/);
    const at = t.findIndex((x) => x === "inet" || x === "inet6");
    if (at < 0 || !t[at + 1]) continue;
    const a = canonicalAddress(t[at + 1].split("/")[0]);
    if (a) out.push(a.address);
  }
  return out;
}

export class NeighbourTable {
  private current = new Map<string, Neighbour>();
  private readonly history = new Map<string, { mac: string; seen: number }>();

  constructor(
    private readonly runner: CommandRunner,
    private readonly historyLimit = 4096,
  ) {}

  async refresh(): Promise<void> {
    const { stdout } = await this.runner.run(["ip", "neigh", "show"], { maxOutputBytes: 8 * 1024 * 1024 });
    this.load(parseIpNeigh(stdout));
  }

  /** Replaces the current view (also used by tests and static labs). */
  load(entries: Neighbour[]): void {
    this.current = new Map(entries.map((n) => [n.address, n]));
    const now = Date.now();
    for (const n of entries) {
      this.history.delete(n.address); // re-insert keeps the map in age order
      this.history.set(n.address, { mac: n.mac, seen: now });
    }
    while (this.history.size > this.historyLimit) {
      const oldest = this.history.keys().next().value as string;
      this.history.delete(oldest);
    }
  }

  /** MAC of the address now, or the last one seen for it. */
  macFor(address: string): string | undefined {
    return this.current.get(address)?.mac ?? this.history.get(address)?.mac;
  }

  /** Every address currently answering with this MAC (e.g. a device's IPv6 privacy addresses). */
  addressesFor(mac: string): string[] {
    const out: string[] = [];
    for (const n of this.current.values()) if (n.mac === mac) out.push(n.address);
    return out;
  }
}
