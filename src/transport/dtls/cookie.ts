// Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1): HMAC over the client's address, port and
// ClientHello parameters with a rotating secret; the previous secret is still accepted so a cookie
// issued just before a rotation stays valid.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const COOKIE_LENGTH = 32;

export interface CookieInput {
  address: string;
  port: number;
  clientVersion: number;
  random: Buffer;
  sessionId: Buffer;
  suitesRaw: Buffer;
}

export class CookieJar {
  private current = randomBytes(32);
  private previous: Buffer | undefined;
  private rotatedAt: number;

  constructor(
    private readonly rotationMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.rotatedAt = now();
  }

  private rotateIfDue(): void {
    const t = this.now();
    if (t - this.rotatedAt < this.rotationMs) return;
    // After two periods without traffic the old secret is also stale.
    this.previous = t - this.rotatedAt < 2 * this.rotationMs ? this.current : undefined;
    this.current = randomBytes(32);
    this.rotatedAt = t;
  }

  private compute(secret: Buffer, c: CookieInput): Buffer {
    const h = createHmac("sha256", secret);
    const fixed = Buffer.allocUnsafe(4);
    fixed.writeUInt16BE(c.port, 0);
    fixed.writeUInt16BE(c.clientVersion, 2);
    h.update(c.address, "latin1")
      .update(fixed)
      .update(c.random)
      .update(Buffer.from([c.sessionId.length]))
      .update(c.sessionId)
      .update(c.suitesRaw);
    return h.digest();
  }

  issue(c: CookieInput): Buffer {
    this.rotateIfDue();
    return this.compute(this.current, c);
  }

  verify(cookie: Buffer, c: CookieInput): boolean {
    if (cookie.length !== COOKIE_LENGTH) return false;
    this.rotateIfDue();
    if (timingSafeEqual(cookie, this.compute(this.current, c))) return true;
    return this.previous !== undefined && timingSafeEqual(cookie, this.compute(this.previous, c));
  }

  /** For tests: force a rotation now. */
  rotate(): void {
    this.previous = this.current;
    this.current = randomBytes(32);
    this.rotatedAt = this.now();
  }
}
