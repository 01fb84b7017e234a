// Fixed-size slots for per-session secrets, carved out of a few large buffers. An idle session then
// owns no Buffer of its own (each costs a JS object, an ArrayBuffer and a native allocation, several
// times the 96 bytes it would hold), and a released slot is wiped so keys do not linger in memory.
// Chunks are kept once allocated; their number is bounded by the server's peer cap.

export class SecretSlab {
  private readonly chunks: Buffer[] = [];
  private readonly freeSlots: number[] = [];
  private used = 0;

  constructor(
    readonly slotSize: number,
    readonly slotsPerChunk = 256,
  ) {
    if (!Number.isInteger(slotSize) || slotSize <= 0 || !Number.isInteger(slotsPerChunk) || slotsPerChunk <= 0) {
      throw new RangeError("slot size and slots per chunk must be positive integers");
    }
  }

  /** A zeroed slot; its bytes are buffer(slot)[offset(slot) .. offset(slot) + slotSize). */
  allocate(): number {
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      slot = this.chunks.length * this.slotsPerChunk;
      // Unpooled: a chunk is long-lived and must not pin, or be pinned by, Node's shared pool.
      this.chunks.push(Buffer.allocUnsafeSlow(this.slotSize * this.slotsPerChunk).fill(0));
      for (let s = slot + this.slotsPerChunk - 1; s > slot; s--) this.freeSlots.push(s);
    }
    this.used++;
    return slot;
  }

  buffer(slot: number): Buffer {
    return this.chunks[Math.floor(slot / this.slotsPerChunk)];
  }

  offset(slot: number): number {
    return (slot % this.slotsPerChunk) * this.slotSize;
  }

  /** Wipes the slot and makes it available again. Each allocated slot must be released once. */
  release(slot: number): void {
    const start = this.offset(slot);
    this.buffer(slot).fill(0, start, start + this.slotSize);
    this.freeSlots.push(slot);
    this.used--;
  }

  get slotsInUse(): number {
    return this.used;
  }

  /** Bytes held by the chunks (used and free slots). */
  get bytesReserved(): number {
    return this.chunks.length * this.slotsPerChunk * this.slotSize;
  }
}
