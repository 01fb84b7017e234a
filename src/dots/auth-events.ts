// What the ISP side reports about homes that fail to authenticate and about the drop-list
// (RFC 9066 section 8): one shape for the CLI's JSON lines and the listener node's session
// events, every time field ISO 8601, every message a sentence that names the identity or home.
import { describeForListener, type AuthProblem } from "../transport/auth-failure";
import type { AuthFailure, DropEndEvent, DropEvent } from "../transport/listener";

/** Event names on CallHomeListener (and the CLI's "event" field). */
export const LISTENER_AUTH_FAILURE_EVENT = "auth-failure";
/** A source address is banned: its handshakes are ignored until `until`. */
export const LISTENER_DROP_EVENT = "drop";
/** The ban of a source address is over: it may try again. */
export const LISTENER_DROP_END_EVENT = "drop-end";

/** `reason` of an auth-failure that is not about credentials. */
export type HandshakeReason = AuthProblem | "HANDSHAKE_TIMEOUT" | "HANDSHAKE_FAILED";

export interface AuthFailureEvent {
  remoteAddress: string;
  remotePort?: number;
  transport: "dtls" | "tls";
  /** PSK_MISMATCH, PSK_UNKNOWN_IDENTITY, CERT_EXPIRED, ... or HANDSHAKE_TIMEOUT / HANDSHAKE_FAILED. */
  reason: HandshakeReason;
  /** One sentence for the operator, naming the home or identity. */
  message: string;
  /** PSK identity presented (clipped to 128 characters: it is the peer's text). */
  identity?: string;
  /** Home name the identity is configured for. */
  home?: string;
  /** Subject of the certificate presented. */
  subject?: string;
  /** The handshake library's own words, e.g. "dtls: bad-finished". */
  detail: string;
}

export interface DropBanEvent {
  remoteAddress: string;
  /** Failed handshakes within windowSeconds that led to the ban. */
  failures: number;
  windowSeconds: number;
  banSeconds: number;
  /** Start and end of the ban, ISO 8601. */
  since: string;
  until: string;
  /** The last failure's reason and identity: why the home kept failing. */
  lastReason: HandshakeReason;
  identity?: string;
  home?: string;
  message: string;
}

export interface DropEndInfo {
  remoteAddress: string;
  since: string;
  until: string;
  message: string;
}

const MAX_IDENTITY_SHOWN = 128;

/** The peer's identity text, bounded for logs and events. */
export function clipIdentity(identity: string): string {
  return identity.length > MAX_IDENTITY_SHOWN ? `${identity.slice(0, MAX_IDENTITY_SHOWN)}...` : identity;
}

/** homeOf maps a configured PSK identity to its home name (undefined for unknown identities). */
export function authFailureEvent(f: AuthFailure, homeOf: (identity: string) => string | undefined): AuthFailureEvent {
  const identity = f.identity !== undefined ? clipIdentity(f.identity) : undefined;
  const home = f.identity !== undefined && f.problem !== "PSK_UNKNOWN_IDENTITY" ? homeOf(f.identity) : undefined;
  const reason: HandshakeReason =
    f.problem ?? (f.reason === "timeout" || /timed? ?out|TIMEOUT/i.test(f.reason) ? "HANDSHAKE_TIMEOUT" : "HANDSHAKE_FAILED");
  const message = f.problem
    ? describeForListener(
        { problem: f.problem, ...(identity !== undefined ? { identity } : {}), ...(f.subject ? { subject: f.subject } : {}) },
        { address: f.address, ...(home !== undefined ? { home } : {}) },
      )
    : reason === "HANDSHAKE_TIMEOUT"
      ? `a ${f.transport.toUpperCase()} handshake from ${f.address} did not complete in time`
      : `a ${f.transport.toUpperCase()} handshake from ${f.address} failed (${f.reason})`;
  return {
    remoteAddress: f.address,
    remotePort: f.port,
    transport: f.transport,
    reason,
    message,
    ...(identity !== undefined ? { identity } : {}),
    ...(home !== undefined ? { home } : {}),
    ...(f.subject ? { subject: f.subject } : {}),
    detail: `${f.transport}: ${f.reason}`,
  };
}

export function dropBanEvent(d: DropEvent, homeOf: (identity: string) => string | undefined): DropBanEvent {
  const last = authFailureEvent(d.last, homeOf);
  const since = new Date(d.until - d.banMs).toISOString();
  const until = new Date(d.until).toISOString();
  const who =
    last.home !== undefined
      ? `home ${JSON.stringify(last.home)} at ${d.address}`
      : last.identity !== undefined
        ? `${d.address} (identity ${JSON.stringify(last.identity)})`
        : d.address;
  return {
    remoteAddress: d.address,
    failures: d.failures,
    windowSeconds: d.windowMs / 1000,
    banSeconds: d.banMs / 1000,
    since,
    until,
    lastReason: last.reason,
    ...(last.identity !== undefined ? { identity: last.identity } : {}),
    ...(last.home !== undefined ? { home: last.home } : {}),
    message: `${who} is ignored until ${until} after ${d.failures} failed handshakes within ${d.windowMs / 1000} s (last: ${last.reason}: ${last.message})`,
  };
}

export function dropEndEvent(d: DropEndEvent): DropEndInfo {
  const until = new Date(d.until).toISOString();
  return {
    remoteAddress: d.address,
    since: new Date(d.since).toISOString(),
    until,
    message: `${d.address} may try again: its ban ended at ${until}`,
  };
}
