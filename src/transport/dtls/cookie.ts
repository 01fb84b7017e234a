// Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1): HMAC over the client's address, port and
// ClientHello parameters with a rotating secret; the previous secret is still accepted so a cookie
// issued just before a rotation stays valid.
import { randomBytes, timingSafeEqual } from "node:crypto";
import { HmacSha256 } from "./sha256";

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
  private current = new HmacSha256(randomBytes(32));
  private previous: HmacSha256 | undefined;
  private rotatedAt: number;
  private readonly fixed = Buffer.alloc(5);

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
    this.previous?.wipe();
    this.previous = t - this.rotatedAt < 2 * this.rotationMs ? this.current : undefined;
    if (!this.previous) this.current.wipe();
    this.current = new HmacSha256(randomBytes(32));
    this.rotatedAt = t;
  }

  private compute(secret: HmacSha256, c: CookieInput): Buffer {
    const fixed = this.fixed;
    fixed.writeUInt16BE(c.port, 0);
    fixed.writeUInt16BE(c.clientVersion, 2);
    fixed[4] = c.sessionId.length;
    const h = secret.begin();
    h.update(Buffer.from(c.address, "latin1"))
      .update(fixed, 0, 4)
      .update(c.random)
      .update(fixed, 4, 5)
      .update(c.sessionId)
      .update(c.suitesRaw);
    const out = Buffer.allocUnsafe(32);
    secret.end(out);
    return out;
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
    this.previous?.wipe();
    this.previous = this.current;
    this.current = new HmacSha256(randomBytes(32));
    this.rotatedAt = this.now();
  }
}
