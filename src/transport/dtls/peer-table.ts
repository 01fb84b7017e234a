// The DTLS server's peers by address and port. Every datagram is looked up here first. With 50,000
// sessions a Map keyed by "address|port" cost about 2.5 us per datagram: a key string built and
// hashed per datagram, then several cache misses (bucket, entry, stored key string). IPv4 peers (and
// v4-mapped ones on a dual-stack socket) are also indexed in an open-addressing table of typed
// arrays keyed by the address's 32 bits and the port: no string is built, and one probe usually
// touches one cache line of keys before the peer itself. The hash is keyed with a random seed per
// table, so a client cannot pick ports that collide.
import { randomBytes } from "node:crypto";

/** What the table needs of a peer: the address as the socket reports it and the port. */
export interface TablePeer {
  readonly socketAddress: string;
  readonly port: number;
}

/** A v4-mapped address ("::ffff:a.b.c.d") sets this bit beside the port, so it never equals "a.b.c.d". */
const MAPPED = 0x10000;
const MAPPED_PREFIX = "::ffff:";
const INITIAL_CAPACITY = 1024;

/** The 32 bits of a dotted-quad IPv4 literal starting at `from`, or -1 when it is not exactly one. */
function ipv4Bits(s: string, from: number): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits > 0 && octet === 0)) return -1; // no leading zeros: one spelling per address
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

export class PeerTable<P extends TablePeer> {
  /** Every peer by "address|port" (the key the server keeps in each peer). */
  private readonly byKey = new Map<string, P>();
  private readonly seed = randomBytes(4).readUInt32LE(0);
  private mask = INITIAL_CAPACITY - 1;
  private addresses = new Uint32Array(INITIAL_CAPACITY);
  /** Port + 1, with MAPPED for a v4-mapped address; 0 = empty slot. */
  private ports = new Int32Array(INITIAL_CAPACITY);
  private slots: (P | undefined)[] = new Array<P | undefined>(INITIAL_CAPACITY).fill(undefined);
  private indexed = 0;

  /** The table's key for an address as the socket reports it and a port. */
  static key(socketAddress: string, port: number): string {
    return `${socketAddress}|${port}`;
  }

  get size(): number {
    return this.byKey.size;
  }

  values(): IterableIterator<P> {
    return this.byKey.values();
  }

  get(key: string): P | undefined {
    return this.byKey.get(key);
  }

  /** The peer at this address and port; for IPv4 without building the key. */
  find(socketAddress: string, port: number): P | undefined {
    const mapped = socketAddress.startsWith(MAPPED_PREFIX);
    const bits = ipv4Bits(socketAddress, mapped ? MAPPED_PREFIX.length : 0);
    if (bits < 0) return this.byKey.get(PeerTable.key(socketAddress, port));
    // An empty slot holds undefined.
    return this.slots[this.probe(bits, (port | (mapped ? MAPPED : 0)) + 1)];
  }

  /** Adds or replaces the peer under `key`, which must be PeerTable.key(peer.socketAddress, peer.port). */
  set(key: string, peer: P): this {
    const previous = this.byKey.get(key);
    if (previous !== undefined) this.unindex(previous);
    this.byKey.set(key, peer);
    this.index(peer);
    return this;
  }

  delete(key: string): boolean {
    const peer = this.byKey.get(key);
    if (peer === undefined) return false;
    this.byKey.delete(key);
    this.unindex(peer);
    return true;
  }

  clear(): void {
    this.byKey.clear();
    this.ports.fill(0);
    this.slots.fill(undefined);
    this.indexed = 0;
  }

  private slotOf(bits: number, tag: number): number {
    // murmur3's 32-bit finaliser over the address mixed with the seed, then the port.
    let h = (bits ^ this.seed) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13) ^ tag, 0xc2b2ae35);
    h ^= h >>> 16;
    return h & this.mask;
  }

  /** The slot holding this address and port tag, or the empty slot that ends its probe run. */
  private probe(bits: number, tag: number): number {
    const mask = this.mask;
    let i = this.slotOf(bits, tag);
    while (this.ports[i] !== 0 && !(this.ports[i] === tag && this.addresses[i] === bits)) i = (i + 1) & mask;
    return i;
  }

  private index(peer: P): void {
    const mapped = peer.socketAddress.startsWith(MAPPED_PREFIX);
    const bits = ipv4Bits(peer.socketAddress, mapped ? MAPPED_PREFIX.length : 0);
    if (bits < 0) return;
    if ((this.indexed + 1) * 2 > this.mask + 1) this.grow();
    const tag = (peer.port | (mapped ? MAPPED : 0)) + 1;
    const i = this.probe(bits, tag);
    if (this.ports[i] === 0) this.indexed++;
    this.addresses[i] = bits;
    this.ports[i] = tag;
    this.slots[i] = peer;
  }

  private unindex(peer: P): void {
    const mapped = peer.socketAddress.startsWith(MAPPED_PREFIX);
    const bits = ipv4Bits(peer.socketAddress, mapped ? MAPPED_PREFIX.length : 0);
    if (bits < 0) return;
    const i = this.probe(bits, (peer.port | (mapped ? MAPPED : 0)) + 1);
    if (this.ports[i] === 0 || this.slots[i] !== peer) return;
    const mask = this.mask;
    // Backward-shift deletion (no tombstones): pull later entries of the probe run into the gap
    // unless their home slot lies cyclically after the gap.
    let gap = i;
    for (let j = (i + 1) & mask; this.ports[j] !== 0; j = (j + 1) & mask) {
      const home = this.slotOf(this.addresses[j], this.ports[j]);
      const movable = gap <= j ? home <= gap || home > j : home <= gap && home > j;
      if (!movable) continue;
      this.addresses[gap] = this.addresses[j];
      this.ports[gap] = this.ports[j];
      this.slots[gap] = this.slots[j];
      gap = j;
    }
    this.ports[gap] = 0;
    this.slots[gap] = undefined;
    this.indexed--;
  }

  private grow(): void {
    const oldAddresses = this.addresses;
    const oldPorts = this.ports;
    const oldSlots = this.slots;
    const capacity = (this.mask + 1) * 2;
    this.mask = capacity - 1;
    this.addresses = new Uint32Array(capacity);
    this.ports = new Int32Array(capacity);
    this.slots = new Array<P | undefined>(capacity).fill(undefined);
    for (let k = 0; k < oldPorts.length; k++) {
      if (oldPorts[k] === 0) continue;
      const i = this.probe(oldAddresses[k], oldPorts[k]);
      this.addresses[i] = oldAddresses[k];
      this.ports[i] = oldPorts[k];
      this.slots[i] = oldSlots[k];
    }
  }
}
