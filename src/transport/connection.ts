// The contract every transport offers to the CoAP layer: an authenticated message pipe.
// Over DTLS one 'message' is one decrypted datagram (an RFC 7252 CoAP message); over TLS one
// 'message' is one complete RFC 8323 frame cut from the byte stream. Nothing else leaks upward.

import type { EventEmitter } from "node:events";
import type { AuthProblem } from "./auth-failure";

export type TransportKind = "dtls" | "tls";

/** Who the peer proved to be during the (D)TLS handshake. */
export interface PeerIdentity {
  /** How the peer authenticated. */
  readonly method: "psk" | "certificate";
  /** The PSK identity the peer used (method "psk"). */
  readonly pskIdentity?: string;
  /** Subject of the peer's leaf certificate, e.g. "CN=home-1.example" (method "certificate"). */
  readonly subject?: string;
  /** DER SubjectPublicKeyInfo of the peer's leaf certificate (method "certificate"). */
  readonly spki?: Buffer;
  /** DER of the peer's leaf certificate (method "certificate"). */
  readonly certificate?: Buffer;
}

/** What this side presented, used for the DOTS cuid (RFC 9132 section 4.4.1.1). */
export interface LocalIdentity {
  readonly method: "psk" | "certificate";
  readonly pskIdentity?: string;
  readonly spki?: Buffer;
}

export interface ConnectionEvents {
  /** One whole CoAP message in the transport's framing. */
  message: [data: Buffer];
  /** The connection is gone; emitted exactly once. `error` is set when it ended abnormally. */
  close: [error?: Error];
  /** DTLS with a Connection ID (RFC 9146): the peer now sends from, and is answered at, another endpoint. */
  moved: [move: PeerMove];
}

export interface PeerMove {
  from: { address: string; port: number };
  to: { address: string; port: number };
}

export interface Connection extends EventEmitter {
  readonly transport: TransportKind;
  readonly peer: PeerIdentity;
  readonly local: LocalIdentity;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** Negotiated protocol and suite, for status displays, e.g. "DTLSv1.2 TLS_PSK_WITH_AES_128_CCM_8". */
  readonly cipher: string;
  /** True once close() was called or the peer went away. */
  readonly closed: boolean;
  /**
   * True when the transport itself discards duplicated datagrams (DTLS anti-replay, RFC 6347
   * section 4.1.2.6): a repeated NON message can then only be a new message, and the CoAP layer
   * keeps no message IDs for NON dedup.
   */
  readonly dropsDuplicates?: boolean;
  /** Send one CoAP message (already in this transport's framing). Returns false if the connection is closed. */
  send(data: Buffer): boolean;
  /** Close gracefully (close_notify); emits 'close' once. */
  close(): void;

  on<E extends keyof ConnectionEvents>(event: E, listener: (...args: ConnectionEvents[E]) => void): this;
  once<E extends keyof ConnectionEvents>(event: E, listener: (...args: ConnectionEvents[E]) => void): this;
  off<E extends keyof ConnectionEvents>(event: E, listener: (...args: ConnectionEvents[E]) => void): this;
  emit<E extends keyof ConnectionEvents>(event: E, ...args: ConnectionEvents[E]): boolean;
}

/** Transport-level failures carry a machine-readable code as well as a message. */
export class TransportError extends Error {
  constructor(
    readonly code:
      | "HANDSHAKE_TIMEOUT"
      | "HANDSHAKE_FAILED"
      | "AUTH_FAILED"
      | "ALPN_MISMATCH"
      | "FRAME_TOO_LARGE"
      | "FRAME_MALFORMED"
      | "CONNECT_FAILED"
      | "CLOSED"
      | "CONFIG",
    message: string,
  ) {
    super(message);
    this.name = "TransportError";
  }

  /** Set on AUTH_FAILED and kin when the cause is known: PSK_MISMATCH, CERT_EXPIRED, ... */
  problem?: AuthProblem;
  /** The library's own words when `message` was rewritten for people (OpenSSL text, alert names). */
  detail?: string;
}
