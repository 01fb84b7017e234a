// A UDP relay on loopback between a client and a server that drops a seeded share of datagrams in
// each direction. It injects loss that real loopback never has; everything else is real sockets.
// Each client address/port gets its own upstream socket, bound to upstreamAddress (e.g. 127.0.0.2,
// so the server sees that source).
import * as dgram from "node:dgram";

export interface LossyRelayOptions {
  target: { address: string; port: number };
  /** Share of datagrams dropped in each direction, 0..1 (default 0.3). */
  lossRate?: number;
  /** PRNG seed: the same seed drops the same datagram positions (default 1). */
  seed?: number;
  /** Where clients send to (default 127.0.0.1). */
  listenAddress?: string;
  /** Source address towards the target (default 127.0.0.1). */
  upstreamAddress?: string;
}

export interface RelayStats {
  forwarded: number;
  dropped: number;
}

/** mulberry32: small, seeded, good enough to pick datagrams to drop. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class LossyRelay {
  readonly stats = { up: { forwarded: 0, dropped: 0 } as RelayStats, down: { forwarded: 0, dropped: 0 } as RelayStats };
  private front: dgram.Socket | undefined;
  private readonly upstream = new Map<string, dgram.Socket>();
  private readonly upRandom: () => number;
  private readonly downRandom: () => number;
  private readonly lossRate: number;

  constructor(private readonly opts: LossyRelayOptions) {
    this.lossRate = opts.lossRate ?? 0.3;
    this.upRandom = prng(opts.seed ?? 1);
    this.downRandom = prng((opts.seed ?? 1) ^ 0x5eed);
  }

  async start(): Promise<{ address: string; port: number }> {
    const listenAddress = this.opts.listenAddress ?? "127.0.0.1";
    const front = dgram.createSocket(listenAddress.includes(":") ? "udp6" : "udp4");
    this.front = front;
    front.on("message", (msg, rinfo) => this.fromClient(msg, rinfo));
    front.on("error", () => undefined);
    await new Promise<void>((r) => front.bind(0, listenAddress, r));
    return { address: listenAddress, port: front.address().port };
  }

  async close(): Promise<void> {
    const all = [...this.upstream.values()];
    this.upstream.clear();
    if (this.front) all.push(this.front);
    this.front = undefined;
    await Promise.all(all.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${rinfo.address}|${rinfo.port}`;
    let up = this.upstream.get(key);
    if (!up) {
      const upstreamAddress = this.opts.upstreamAddress ?? "127.0.0.1";
      const sock = dgram.createSocket(upstreamAddress.includes(":") ? "udp6" : "udp4");
      up = sock;
      this.upstream.set(key, sock);
      sock.on("error", () => undefined);
      sock.on("message", (back) => {
        if (this.downRandom() < this.lossRate) this.stats.down.dropped++;
        else {
          this.stats.down.forwarded++;
          this.front?.send(back, rinfo.port, rinfo.address);
        }
      });
      sock.bind(0, upstreamAddress);
    }
    if (this.upRandom() < this.lossRate) this.stats.up.dropped++;
    else {
      this.stats.up.forwarded++;
      up.send(msg, this.opts.target.port, this.opts.target.address);
    }
  }
}
