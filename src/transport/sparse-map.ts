// Map and Set for per-session objects. A V8 Map or Set costs about 200 bytes even when empty, and a
// session holds some twenty of them (CoAP exchanges, dedup, observers, timers, ...) that are empty
// nearly all the time or hold one entry (the exchange in flight); at 50,000 sessions they were a
// third of the listener's heap. These keep a single entry inline, allocate a table only for a
// second one, and drop it when the last entry goes: nothing is allocated per heartbeat.

const NONE: unique symbol = Symbol("none");

/** SameValueZero, the key equality of Map and Set. */
function same(a: unknown, b: unknown): boolean {
  return a === b || (a !== a && b !== b);
}

/** The Map API subset the sessions use. Iteration follows insertion order, as a Map's does. */
export class SparseMap<K, V> implements Iterable<[K, V]> {
  private soleKey: K | typeof NONE = NONE;
  private soleValue: V | undefined = undefined;
  private table: Map<K, V> | undefined = undefined;

  get size(): number {
    if (this.table !== undefined) return this.table.size;
    return this.soleKey === NONE ? 0 : 1;
  }

  get(key: K): V | undefined {
    if (this.table !== undefined) return this.table.get(key);
    return this.soleKey !== NONE && same(this.soleKey, key) ? this.soleValue : undefined;
  }

  has(key: K): boolean {
    if (this.table !== undefined) return this.table.has(key);
    return this.soleKey !== NONE && same(this.soleKey, key);
  }

  set(key: K, value: V): this {
    if (this.table !== undefined) this.table.set(key, value);
    else if (this.soleKey === NONE || same(this.soleKey, key)) {
      this.soleKey = key;
      this.soleValue = value;
    } else {
      this.table = new Map<K, V>([[this.soleKey, this.soleValue as V]]);
      this.table.set(key, value);
      this.soleKey = NONE;
      this.soleValue = undefined;
    }
    return this;
  }

  delete(key: K): boolean {
    if (this.table !== undefined) {
      if (!this.table.delete(key)) return false;
      if (this.table.size === 0) this.table = undefined;
      return true;
    }
    if (this.soleKey === NONE || !same(this.soleKey, key)) return false;
    this.soleKey = NONE;
    this.soleValue = undefined;
    return true;
  }

  clear(): void {
    this.table = undefined;
    this.soleKey = NONE;
    this.soleValue = undefined;
  }

  entries(): IterableIterator<[K, V]> {
    if (this.table !== undefined) return this.table.entries();
    const entries: Array<[K, V]> = this.soleKey === NONE ? [] : [[this.soleKey, this.soleValue as V]];
    return entries[Symbol.iterator]();
  }

  keys(): IterableIterator<K> {
    if (this.table !== undefined) return this.table.keys();
    return (this.soleKey === NONE ? [] : [this.soleKey])[Symbol.iterator]();
  }

  values(): IterableIterator<V> {
    if (this.table !== undefined) return this.table.values();
    return (this.soleKey === NONE ? [] : [this.soleValue as V])[Symbol.iterator]();
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }
}

/** The Set API subset the sessions use, built the same way. */
export class SparseSet<T> implements Iterable<T> {
  private readonly members = new SparseMap<T, true>();

  get size(): number {
    return this.members.size;
  }

  has(value: T): boolean {
    return this.members.has(value);
  }

  add(value: T): this {
    this.members.set(value, true);
    return this;
  }

  delete(value: T): boolean {
    return this.members.delete(value);
  }

  clear(): void {
    this.members.clear();
  }

  values(): IterableIterator<T> {
    return this.members.keys();
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.values();
  }
}
