// Anti-replay sliding window of 64 records (RFC 6347 section 4.1.2.6), for one epoch.
// Check before decryption, mark only after the record authenticated, so forged records change nothing.

const WINDOW = 64;

export class ReplayWindow {
  /** Highest sequence number accepted so far, -1 before the first. */
  private highest = -1;
  /** Bit i set = sequence (highest - i) seen; two 32-bit halves avoid BigInt per record. */
  private low = 0;
  private high = 0;

  /** True when `sequence` is above every one accepted so far (RFC 9146 6: only such a record may move a peer). */
  isNewest(sequence: number): boolean {
    return sequence > this.highest;
  }

  /** True when the sequence number is new and not too old. */
  isFresh(sequence: number): boolean {
    if (sequence > this.highest) return true;
    const age = this.highest - sequence;
    if (age >= WINDOW) return false;
    return !this.bit(age);
  }

  mark(sequence: number): void {
    if (sequence > this.highest) {
      const shift = this.highest < 0 ? WINDOW : sequence - this.highest;
      this.shift(shift);
      this.highest = sequence;
      this.low |= 1;
      return;
    }
    const age = this.highest - sequence;
    if (age < WINDOW) this.setBit(age);
  }

  private bit(i: number): boolean {
    return i < 32 ? ((this.low >>> i) & 1) === 1 : ((this.high >>> (i - 32)) & 1) === 1;
  }

  private setBit(i: number): void {
    if (i < 32) this.low = (this.low | (1 << i)) >>> 0;
    else this.high = (this.high | (1 << (i - 32))) >>> 0;
  }

  private shift(n: number): void {
    if (n >= WINDOW) {
      this.low = 0;
      this.high = 0;
    } else if (n >= 32) {
      this.high = (this.low << (n - 32)) >>> 0;
      this.low = 0;
    } else if (n > 0) {
      this.high = ((this.high << n) | (this.low >>> (32 - n))) >>> 0;
      this.low = (this.low << n) >>> 0;
    }
  }
}
