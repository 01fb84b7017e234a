// DOTS identifiers on the ISP (Call Home DOTS client) side: cuid (RFC 9132 section 4.4.1.1),
// mid allocation, and the stable session id the listener gives each authenticated home.
import { createHash, randomBytes } from "node:crypto";
import type { LocalIdentity, PeerIdentity } from "../transport/connection";

/** Highest mid before the client must roll over to 0 when no attack is in progress (3/4 of 2^32-1). */
export const MID_ROLLOVER = 3221225471;
/** mid is a uint32. */
export const MID_MAX = 0xffffffff;

/** base64url, no padding, of the first 16 bytes of SHA-256(input): 22 characters. */
export function hash16Base64Url(input: Buffer | string): string {
  const digest = createHash("sha256").update(input).digest();
  return digest.subarray(0, 16).toString("base64url");
}

/** cuid from a DER SubjectPublicKeyInfo (certificate or raw public key). */
export function cuidFromSpki(spkiDer: Buffer): string {
  if (!Buffer.isBuffer(spkiDer) || spkiDer.length === 0) throw new TypeError("cuidFromSpki: empty SPKI");
  return hash16Base64Url(spkiDer);
}

/** cuid from a TLS 1.2 PSK identity or a TLS 1.3 pre_shared_key identity (its bytes as sent). */
export function cuidFromPskIdentity(identity: string | Buffer): string {
  const bytes = typeof identity === "string" ? Buffer.from(identity, "utf8") : identity;
  if (bytes.length === 0) throw new TypeError("cuidFromPskIdentity: empty identity");
  return hash16Base64Url(bytes);
}

/**
 * Our cuid for a session. Certificates: our own SPKI. PSK: we are the (D)TLS server and have no
 * identity of our own in the handshake, so we use the identity the home authenticated with
 * (both ends know it, and it is stable per home), unless a configured identity overrides it.
 */
export function cuidForSession(local: LocalIdentity, peer: PeerIdentity, configuredPskIdentity?: string): string {
  if (configuredPskIdentity) return cuidFromPskIdentity(configuredPskIdentity);
  if (local.method === "certificate" && local.spki && local.spki.length > 0) return cuidFromSpki(local.spki);
  if (local.pskIdentity) return cuidFromPskIdentity(local.pskIdentity);
  if (peer.pskIdentity) return cuidFromPskIdentity(peer.pskIdentity);
  if (peer.spki && peer.spki.length > 0) return cuidFromSpki(peer.spki);
  throw new TypeError("cannot derive a cuid: no SPKI and no PSK identity on either side");
}

/**
 * A replacement cuid after the home reported a cuid-collision (RFC 9132 section 4.4.1.3): 16
 * random bytes, base64url, the same 22-character shape as a derived one.
 */
export function freshCuid(): string {
  return randomBytes(16).toString("base64url");
}

/** Stable session id per authenticated peer identity: "psk-<hash>" or "cert-<hash of SPKI>". */
export function sessionIdForPeer(peer: PeerIdentity): string {
  if (peer.method === "psk") {
    if (!peer.pskIdentity) throw new TypeError("PSK peer without identity");
    return `psk-${hash16Base64Url(Buffer.from(peer.pskIdentity, "utf8"))}`;
  }
  if (!peer.spki || peer.spki.length === 0) throw new TypeError("certificate peer without SPKI");
  return `cert-${hash16Base64Url(peer.spki)}`;
}

/** True when a string has the shape of an RFC 9132 cuid made by the procedure above. */
export function isCuidShaped(cuid: string): boolean {
  return /^[A-Za-z0-9_-]{22}$/.test(cuid);
}

export class MidExhaustedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MidExhaustedError";
  }
}

/**
 * mid allocation, monotonic per (server, cuid) and unique among active requests (RFC 9132
 * section 4.4.1.1). At MID_ROLLOVER the counter returns to 0 only when no attack is in
 * progress for that pair; during an attack it keeps increasing up to the uint32 maximum.
 */
export class MidAllocator {
  private readonly last = new Map<string, number>();

  constructor(private readonly start = 0) {
    if (!Number.isInteger(start) || start < 0 || start > MID_ROLLOVER) throw new RangeError("mid start outside 0..3221225471");
  }

  private key(server: string, cuid: string): string {
    return `${server}\u0000${cuid}`;
  }

  /** The most recent mid handed out (or noted) for this pair, if any. */
  current(server: string, cuid: string): number | undefined {
    return this.last.get(this.key(server, cuid));
  }

  /**
   * Next mid. `active` lists mids still in use (attack in progress when non-empty); they are
   * never handed out again.
   */
  next(server: string, cuid: string, active: ReadonlySet<number> | readonly number[] = []): number {
    const k = this.key(server, cuid);
    const activeSet = active instanceof Set ? (active as ReadonlySet<number>) : new Set(active as readonly number[]);
    const prev = this.last.get(k);
    let candidate = prev === undefined ? this.start : prev + 1;
    if (candidate > MID_ROLLOVER && activeSet.size === 0) candidate = 0;
    while (activeSet.has(candidate)) candidate++;
    if (candidate > MID_MAX) throw new MidExhaustedError("mid space exhausted while requests are active; withdraw some first");
    this.last.set(k, candidate);
    return candidate;
  }

  /**
   * Records a mid chosen by the caller. It must be above the last one for the pair (monotonic),
   * except right after a rollover point.
   */
  note(server: string, cuid: string, mid: number): void {
    if (!Number.isInteger(mid) || mid < 0 || mid > MID_MAX) throw new RangeError(`mid ${mid} is not a uint32`);
    const k = this.key(server, cuid);
    const prev = this.last.get(k);
    if (prev === undefined || mid > prev) this.last.set(k, mid);
  }

  /** Forget a pair (e.g. after the cuid changed on a 4.09 cause 3). */
  forget(server: string, cuid: string): void {
    this.last.delete(this.key(server, cuid));
  }
}
