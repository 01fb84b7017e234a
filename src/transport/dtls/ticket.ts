// RFC 5077 session tickets for our DTLS server: the session state travels with the client, sealed
// under a key only this server holds, so resumption keeps no per-session state here (RFC 9132 7.1).
// The keys are random per process, or derived per period from a shared ticket secret so that a
// restarted listener, or another process of the same cluster, opens the tickets this one issued.
// Ticket layout (RFC 5077 4 recommends key_name, IV, encrypted state, MAC; ours uses an AEAD):
//   key_name(16) | nonce(12) | ChaCha20-Poly1305(state) | tag(16), with key_name as additional data.
// Tickets sealed before version 2 of the key derivation used AES-256-GCM (node:crypto, a cipher
// object per ticket, several times the cost of ours in JavaScript at ticket size); their keys are
// still derived, to open them, so a rolling upgrade of a cluster loses no resumption.
import { createDecipheriv, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { chachaOpenBytes, chachaSealBytes } from "./cipher";
import { Sha256 } from "./sha256";
import { pooledRandomBytes } from "../random-pool";
import type { SealedCertificate } from "./certificate";

export interface TicketState {
  suiteId: number;
  extendedMasterSecret: boolean;
  identity: string;
  /** The 48-byte master secret of the session. */
  master: Buffer;
  /** When the full handshake happened (seconds since the epoch): resumption does not extend it. */
  issuedAt: number;
  /** pskDigest() of the identity's key then: a changed or revoked key refuses the ticket. */
  pskDigest: Buffer;
  /** Certificate sessions: the client's leaf and what the chain check found; identity and pskDigest unused. */
  certificate?: SealedCertificate;
}

export interface TicketKeyOptions {
  /** How long a ticket can be used (also the lifetime hint sent); default 3600 s. */
  lifetimeSeconds?: number;
  /**
   * Shared ticket secret (at least MIN_TICKET_SECRET_LENGTH bytes): each lifetime period's key is
   * derived from it (HKDF-SHA256), so every process holding it seals and opens the same tickets.
   * Absent: random keys of this process only.
   */
  secret?: Buffer;
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** A shared ticket secret has at least this many bytes (as many as the 32-byte key it derives). */
export const MIN_TICKET_SECRET_LENGTH = 32;
/** HKDF salt of the derived keys: names what they are for, and versions the derivation (v2: ChaCha20-Poly1305). */
const TICKET_KEY_SALT = "dots-call-home dtls ticket keys v2";
/** The derivation before: AES-256-GCM keys, kept to open the tickets sealed with them. */
const LEGACY_TICKET_KEY_SALT = "dots-call-home dtls ticket keys v1";

const KEY_NAME_LENGTH = 16;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const MASTER_LENGTH = 48;
const PSK_DIGEST_LENGTH = 16;
const STATE_VERSION = 1;
/**
 * The state of a certificate session: version 1's fields, then certificate<1..MAX_TICKET_CERTIFICATE_BYTES>,
 * subject<0..MAX_TICKET_SUBJECT_BYTES>, spki<1..MAX_TICKET_SPKI_BYTES>, anchor digest (32),
 * valid-until seconds (uint48). (Version 2, the leaf alone, is no longer issued or accepted.)
 */
const STATE_VERSION_CERTIFICATE = 3;
/** A ticket carries a client leaf up to this size; a larger one gets no ticket. */
const MAX_TICKET_CERTIFICATE_BYTES = 4096;
/** Subject text and public key of the leaf: larger ones get no ticket (RSA-4096's SPKI is 550 bytes). */
const MAX_TICKET_SUBJECT_BYTES = 1024;
const MAX_TICKET_SPKI_BYTES = 1024;
const ANCHOR_DIGEST_LENGTH = 32;
const VALID_UNTIL_BYTES = 6;
/** Identities are at most 2^16-1 bytes on the wire; a ticket carries at most this many. */
const MAX_IDENTITY_BYTES = 1024;
export const MAX_TICKET_LENGTH =
  KEY_NAME_LENGTH +
  IV_LENGTH +
  1 +
  2 +
  1 +
  4 +
  2 +
  MAX_IDENTITY_BYTES +
  PSK_DIGEST_LENGTH +
  MASTER_LENGTH +
  2 +
  MAX_TICKET_CERTIFICATE_BYTES +
  2 +
  MAX_TICKET_SUBJECT_BYTES +
  2 +
  MAX_TICKET_SPKI_BYTES +
  ANCHOR_DIGEST_LENGTH +
  VALID_UNTIL_BYTES +
  TAG_LENGTH;

/** Whether a certificate session fits in a ticket (else the session gets none). */
export function fitsTicket(c: SealedCertificate): boolean {
  return (
    c.leafDer.length > 0 &&
    c.leafDer.length <= MAX_TICKET_CERTIFICATE_BYTES &&
    Buffer.byteLength(c.subject, "utf8") <= MAX_TICKET_SUBJECT_BYTES &&
    c.spki.length > 0 &&
    c.spki.length <= MAX_TICKET_SPKI_BYTES &&
    c.anchor.length === ANCHOR_DIGEST_LENGTH &&
    Number.isInteger(c.validUntil) &&
    c.validUntil >= 0 &&
    c.validUntil < 2 ** 48
  );
}

interface TicketKey {
  name: Buffer;
  key: Buffer;
  /** Every key seals with ChaCha20-Poly1305 but the legacy ones, which only open AES-256-GCM tickets. */
  legacy: boolean;
  createdAt: number;
  /** Derived keys: the lifetime period they belong to (seconds since the epoch / lifetime). */
  period?: number;
}

/** A digest of a PSK that a ticket carries (sealed) to notice a changed key. */
export function pskDigest(psk: Buffer): Buffer {
  return new Sha256().update(PSK_DIGEST_LABEL).update(psk).digest().subarray(0, PSK_DIGEST_LENGTH);
}
const PSK_DIGEST_LABEL = Buffer.from("dots dtls ticket psk", "latin1");

/**
 * The sealing keys: a new key every lifetime, the previous one kept for opening, so a ticket opens
 * for its whole lifetime. Random keys outlive no more than two lifetimes (forward secrecy of old
 * tickets); derived keys are as secret as the shared secret they come from, which is the price of
 * resuming across restarts and processes (the same trade as a TLS server's static ticket key file).
 */
export class TicketKeys {
  readonly lifetimeSeconds: number;
  private readonly now: () => number;
  private readonly secret: Buffer | undefined;
  private current: TicketKey;
  private previous: TicketKey | undefined;
  /** Derived keys only: the AES-256-GCM keys of the current and previous periods (open, never seal). */
  private legacy: TicketKey[] = [];

  constructor(opts: TicketKeyOptions = {}) {
    this.lifetimeSeconds = opts.lifetimeSeconds ?? 3600;
    if (!Number.isInteger(this.lifetimeSeconds) || this.lifetimeSeconds < 1 || this.lifetimeSeconds > 7 * 86400) {
      throw new RangeError(`ticket lifetime out of range: ${this.lifetimeSeconds}`); // RFC 5077 allows 7 days at most
    }
    if (opts.secret !== undefined && opts.secret.length < MIN_TICKET_SECRET_LENGTH) {
      throw new RangeError(`ticket secret too short: ${opts.secret.length} bytes, at least ${MIN_TICKET_SECRET_LENGTH}`);
    }
    this.secret = opts.secret === undefined ? undefined : Buffer.from(opts.secret);
    this.now = opts.now ?? Date.now;
    this.current = this.freshKey();
    // Derived: the previous period's key opens tickets sealed just before this process started.
    if (this.current.period !== undefined) {
      this.previous = this.derivedKey(this.current.period - 1);
      this.legacy = this.legacyKeys(this.current.period);
    }
  }

  seal(state: TicketState): Buffer {
    this.rotate();
    const identity = Buffer.from(state.identity, "utf8");
    if (identity.length > MAX_IDENTITY_BYTES || state.master.length !== MASTER_LENGTH || state.pskDigest.length !== PSK_DIGEST_LENGTH) {
      throw new RangeError("ticket state out of range"); // a defect: callers pass what the handshake produced
    }
    const cert = state.certificate;
    if (cert && !fitsTicket(cert)) throw new RangeError("ticket certificate out of range"); // a defect: callers check fitsTicket
    const subject = cert ? Buffer.from(cert.subject, "utf8") : undefined;
    const certBytes =
      cert && subject ? 2 + cert.leafDer.length + 2 + subject.length + 2 + cert.spki.length + ANCHOR_DIGEST_LENGTH + VALID_UNTIL_BYTES : 0;
    const plain = Buffer.alloc(1 + 2 + 1 + 4 + 2 + identity.length + PSK_DIGEST_LENGTH + MASTER_LENGTH + certBytes);
    let at = plain.writeUInt8(cert ? STATE_VERSION_CERTIFICATE : STATE_VERSION, 0);
    at = plain.writeUInt16BE(state.suiteId, at);
    at = plain.writeUInt8(state.extendedMasterSecret ? 1 : 0, at);
    at = plain.writeUInt32BE(state.issuedAt >>> 0, at);
    at = plain.writeUInt16BE(identity.length, at);
    at += identity.copy(plain, at);
    at += state.pskDigest.copy(plain, at);
    at += state.master.copy(plain, at);
    if (cert && subject) {
      for (const part of [cert.leafDer, subject, cert.spki]) {
        at = plain.writeUInt16BE(part.length, at);
        at += part.copy(plain, at);
      }
      at += cert.anchor.copy(plain, at);
      plain.writeUIntBE(cert.validUntil, at, VALID_UNTIL_BYTES);
    }
    const nonce = pooledRandomBytes(IV_LENGTH);
    const sealed = Buffer.concat([this.current.name, nonce, chachaSealBytes(this.current.key, nonce, this.current.name, plain)]);
    plain.fill(0);
    return sealed;
  }

  /** The state in a ticket this server sealed and that is still within its lifetime; else undefined. */
  open(ticket: Buffer): TicketState | undefined {
    this.rotate();
    if (ticket.length < KEY_NAME_LENGTH + IV_LENGTH + TAG_LENGTH + 10 || ticket.length > MAX_TICKET_LENGTH) return undefined;
    const name = ticket.subarray(0, KEY_NAME_LENGTH);
    const key = this.keyNamed(name);
    if (!key) return undefined;
    const nonce = ticket.subarray(KEY_NAME_LENGTH, KEY_NAME_LENGTH + IV_LENGTH);
    const plain = key.legacy
      ? openLegacy(key.key, nonce, name, ticket)
      : chachaOpenBytes(key.key, nonce, name, ticket.subarray(KEY_NAME_LENGTH + IV_LENGTH));
    if (!plain) return undefined;
    try {
      return this.readState(plain);
    } finally {
      plain.fill(0);
    }
  }

  private keyNamed(name: Buffer): TicketKey | undefined {
    if (timingSafeEqual(this.current.name, name)) return this.current;
    if (this.previous && timingSafeEqual(this.previous.name, name)) return this.previous;
    return this.legacy.find((k) => timingSafeEqual(k.name, name));
  }

  private readState(plain: Buffer): TicketState | undefined {
    // Sealed by us, so well formed unless the layout changed: check it all the same.
    if (plain.length < 10 || (plain[0] !== STATE_VERSION && plain[0] !== STATE_VERSION_CERTIFICATE)) return undefined;
    const identityLength = plain.readUInt16BE(8);
    const fixedEnd = 10 + identityLength + PSK_DIGEST_LENGTH + MASTER_LENGTH;
    let certificate: SealedCertificate | undefined;
    if (plain[0] === STATE_VERSION_CERTIFICATE) {
      certificate = readSealedCertificate(plain, fixedEnd);
      if (!certificate) return undefined;
    } else if (plain.length !== fixedEnd) return undefined;
    const issuedAt = plain.readUInt32BE(4);
    const age = Math.floor(this.now() / 1000) - issuedAt;
    if (age < 0 || age >= this.lifetimeSeconds) return undefined;
    const at = 10 + identityLength;
    return {
      suiteId: plain.readUInt16BE(1),
      extendedMasterSecret: plain[3] === 1,
      identity: plain.subarray(10, at).toString("utf8"),
      pskDigest: Buffer.from(plain.subarray(at, at + PSK_DIGEST_LENGTH)),
      master: Buffer.from(plain.subarray(at + PSK_DIGEST_LENGTH, fixedEnd)),
      issuedAt,
      ...(certificate ? { certificate } : {}),
    };
  }

  private rotate(): void {
    if (this.current.period !== undefined) {
      // Derived keys change at period boundaries, the same instant in every process.
      const period = this.periodNow();
      if (period === this.current.period) return;
      this.previous?.key.fill(0);
      this.previous = period === this.current.period + 1 ? this.current : this.derivedKey(period - 1);
      this.current = this.derivedKey(period);
      for (const k of this.legacy) k.key.fill(0);
      this.legacy = this.legacyKeys(period);
      return;
    }
    if (this.now() - this.current.createdAt < this.lifetimeSeconds * 1000) return;
    this.previous?.key.fill(0);
    this.previous = this.current;
    this.current = this.freshKey();
  }

  private freshKey(): TicketKey {
    if (this.secret) return this.derivedKey(this.periodNow());
    return { name: randomBytes(KEY_NAME_LENGTH), key: randomBytes(32), legacy: false, createdAt: this.now() };
  }

  private periodNow(): number {
    return Math.floor(this.now() / 1000 / this.lifetimeSeconds);
  }

  /** Key and name of one period: HKDF-SHA256(secret, salt, "key"/"name" + lifetime + period). */
  private derivedKey(period: number, legacy = false): TicketKey {
    const info = (what: string): Buffer => Buffer.from(`${what} ${this.lifetimeSeconds} ${period}`, "latin1");
    const secret = this.secret;
    if (!secret) throw new Error("no ticket secret"); // a defect: only called with one
    const salt = legacy ? LEGACY_TICKET_KEY_SALT : TICKET_KEY_SALT;
    const derive = (what: string, length: number): Buffer => Buffer.from(hkdfSync("sha256", secret, salt, info(what), length));
    return { name: derive("name", KEY_NAME_LENGTH), key: derive("key", 32), legacy, createdAt: this.now(), period };
  }

  private legacyKeys(period: number): TicketKey[] {
    return [this.derivedKey(period, true), this.derivedKey(period - 1, true)];
  }
}

/** A ticket sealed with AES-256-GCM under a v1 derived key: its state, or undefined. */
function openLegacy(key: Buffer, iv: Buffer, name: Buffer, ticket: Buffer): Buffer | undefined {
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_LENGTH });
    decipher.setAAD(name);
    decipher.setAuthTag(ticket.subarray(ticket.length - TAG_LENGTH));
    return Buffer.concat([decipher.update(ticket.subarray(KEY_NAME_LENGTH + IV_LENGTH, ticket.length - TAG_LENGTH)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** The certificate part of a version-3 state from `at` to its end; undefined when it does not fit exactly. */
function readSealedCertificate(plain: Buffer, at: number): SealedCertificate | undefined {
  const parts: Buffer[] = [];
  for (let i = 0; i < 3; i++) {
    if (plain.length < at + 2) return undefined;
    const n = plain.readUInt16BE(at);
    if (plain.length < at + 2 + n) return undefined;
    parts.push(Buffer.from(plain.subarray(at + 2, at + 2 + n)));
    at += 2 + n;
  }
  if (plain.length !== at + ANCHOR_DIGEST_LENGTH + VALID_UNTIL_BYTES) return undefined;
  const [leafDer, subject, spki] = parts;
  return {
    leafDer,
    subject: subject.toString("utf8"),
    spki,
    anchor: Buffer.from(plain.subarray(at, at + ANCHOR_DIGEST_LENGTH)),
    validUntil: plain.readUIntBE(at + ANCHOR_DIGEST_LENGTH, VALID_UNTIL_BYTES),
  };
}

/** RFC 5077 3.3 NewSessionTicket body: ticket_lifetime_hint (seconds), ticket<0..2^16-1>. */
export function buildNewSessionTicket(lifetimeHintSeconds: number, ticket: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + 2 + ticket.length);
  out.writeUInt32BE(lifetimeHintSeconds >>> 0, 0);
  out.writeUInt16BE(ticket.length, 4);
  ticket.copy(out, 6);
  return out;
}
