// Client side of RFC 5077 session tickets: what a client keeps to resume a session, the
// NewSessionTicket parser and the SessionTicket extension it offers.
// The value holds a master secret: keep it in memory only, never log or persist it.
import type { PeerIdentity } from "../connection";
import { ExtensionType, type DtlsCipherSuiteName } from "./constants";
import { DtlsDecodeError, Reader } from "./handshake";

/** A ticket the server issued and the session state needed to resume with it. */
export interface DtlsResumption {
  /** Opaque ticket (RFC 5077 3.3), sent back in the SessionTicket extension. */
  readonly ticket: Buffer;
  /** The session's 48-byte master secret. */
  readonly masterSecret: Buffer;
  /** The session's suite; offered again and required in the resumed ServerHello. */
  readonly suite: DtlsCipherSuiteName;
  /** The session used RFC 7627 extended master secret; a resumption must too (RFC 7627 5.3). */
  readonly extendedMasterSecret: boolean;
  /**
   * Who the session was authenticated as: the PSK identity, or for certificate sessions a key naming
   * our certificate and the ISP name checked; only a client with the same one resumes it.
   */
  readonly pskIdentity: string;
  /** Certificate sessions: the ISP's verified certificate identity, the peer of a resumed session. */
  readonly serverIdentity?: PeerIdentity;
  /** Date.now() when the ticket arrived. */
  readonly receivedAt: number;
  /** The server's ticket_lifetime_hint in seconds (0: unspecified). */
  readonly lifetimeHintS: number;
}

/** Our bound when the server gives no lifetime hint, and the cap on any hint (RFC 5077 3.3 suggests no more). */
export const MAX_TICKET_AGE_S = 7 * 24 * 3600;
const DEFAULT_TICKET_AGE_S = 24 * 3600;
/** RFC 5077 3.3: ticket<0..2^16-1>; we hold nothing larger. */
export const MAX_TICKET_LENGTH = 65535;

/** Why a stored resumption is not offered, or undefined when it can be. */
export function resumptionUnusable(
  r: DtlsResumption,
  identity: string,
  offered: readonly DtlsCipherSuiteName[],
  now = Date.now(),
): string | undefined {
  if (r.ticket.length === 0) return "empty ticket";
  if (r.masterSecret.length !== 48) return "bad master secret";
  if (r.pskIdentity !== identity) return "ticket of another PSK identity";
  if (!offered.includes(r.suite)) return `ticket suite ${r.suite} not offered`;
  const lifetime = r.lifetimeHintS > 0 ? Math.min(r.lifetimeHintS, MAX_TICKET_AGE_S) : DEFAULT_TICKET_AGE_S;
  if (now < r.receivedAt || now - r.receivedAt >= lifetime * 1000) return "ticket expired";
  return undefined;
}

/** RFC 5077 3.3 NewSessionTicket body: ticket_lifetime_hint u32, ticket<0..2^16-1>. */
export function parseNewSessionTicket(body: Buffer): { lifetimeHintS: number; ticket: Buffer } {
  const r = new Reader(body);
  const lifetimeHintS = r.bytes(4).readUInt32BE(0);
  const ticket = Buffer.from(r.bytes(r.u16()));
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after NewSessionTicket");
  return { lifetimeHintS, ticket };
}

/** The ClientHello SessionTicket extension (RFC 5077 3.2): empty to ask for a ticket, else the ticket. */
export function sessionTicketExtension(ticket: Buffer | undefined): Buffer {
  const t = ticket ?? Buffer.alloc(0);
  const out = Buffer.alloc(4 + t.length);
  out.writeUInt16BE(ExtensionType.SessionTicket, 0);
  out.writeUInt16BE(t.length, 2);
  t.copy(out, 4);
  return out;
}
