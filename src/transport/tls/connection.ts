// What both TLS roles share (RFC 8323 over node:tls): ALPN, suites, option types, the framed
// Connection over one TLS socket, error classification.

import { EventEmitter } from "node:events";
import * as net from "node:net";
import type * as tls from "node:tls";
import type { Connection, LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";
import { StreamFramer } from "../stream-framer";

export const COAP_ALPN = "coap";

/**
 * Suites offered/accepted for PSK. TLS 1.3 external PSKs set through node's callbacks only work
 * with SHA-256 suites (transport-findings section 5); ECDHE-PSK first for forward secrecy.
 */
export const PSK_CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-PSK-CHACHA20-POLY1305",
  "ECDHE-PSK-AES128-CBC-SHA256",
  "PSK-AES128-GCM-SHA256",
  "PSK-AES256-GCM-SHA384",
  "PSK-CHACHA20-POLY1305",
  "PSK-AES128-CCM8",
  "PSK-AES128-CCM",
].join(":");

/** Cap on bytes queued for a peer that does not read; beyond it the connection is closed. */
export const DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024;
/** Frames held while nobody listens for 'message' before the socket is paused. */
const MAX_QUEUED_FRAMES = 64;
/** How long a graceful close waits for the peer before the socket is destroyed. */
const CLOSE_GRACE_MS = 2000;

export type TlsVersion = "TLSv1.2" | "TLSv1.3";

export interface TlsCertificateOptions {
  /** PEM certificate chain, leaf first. */
  cert: string | Buffer;
  /** PEM private key. */
  key: string | Buffer;
  /** Trusted CA certificate(s) used to verify the peer. */
  ca: string | Buffer | Array<string | Buffer>;
  passphrase?: string;
}

export interface TlsPskCredentials {
  identity: string;
  key: Buffer;
}

export interface RemoteEndpoint {
  address: string;
  port: number;
}

/** Per-connection limits, from either role's options. */
export interface TlsConnectionSettings {
  maxFrameSize: number;
  maxWriteBuffer: number;
}

/** A Connection over one TLS socket: one 'message' per RFC 8323 frame. */
export class TlsConnection extends EventEmitter implements Connection {
  readonly transport = "tls" as const;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly cipher: string;
  /** True when this session was resumed from a ticket. */
  readonly sessionReused: boolean;
  private readonly framer: StreamFramer;
  private readonly queue: Buffer[] = [];
  private pausedForQueue = false;
  private flushScheduled = false;
  private closing = false;
  private finished = false;
  private closeError: Error | undefined;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: tls.TLSSocket,
    readonly peer: PeerIdentity,
    readonly local: LocalIdentity,
    private readonly settings: TlsConnectionSettings,
  ) {
    super();
    this.remoteAddress = normalizeAddress(socket.remoteAddress ?? "");
    this.remotePort = socket.remotePort ?? 0;
    this.localAddress = normalizeAddress(socket.localAddress ?? "");
    this.localPort = socket.localPort ?? 0;
    const suite = socket.getCipher();
    this.cipher = `${socket.getProtocol() ?? "TLS"} ${suite?.standardName ?? suite?.name ?? "unknown"}`;
    this.sessionReused = socket.isSessionReused();
    this.framer = new StreamFramer(settings.maxFrameSize);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: Error) => {
      this.closeError ??= err;
    });
    socket.on("close", () => this.finish());
    socket.on("end", () => {
      // Peer sent close_notify/FIN: answer in kind, then the socket closes.
      if (!this.closing) this.close();
    });
    this.on("newListener", (event: string | symbol) => {
      if (event === "message") this.scheduleFlush();
    });
    if (socket.destroyed) process.nextTick(() => this.finish());
  }

  get closed(): boolean {
    return this.closing || this.finished;
  }

  send(data: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return false;
    if (this.socket.writableLength + data.length > this.settings.maxWriteBuffer) {
      this.abort(new TransportError("CLOSED", `peer is not reading: more than ${this.settings.maxWriteBuffer} bytes queued`));
      return false;
    }
    this.socket.write(data);
    return true;
  }

  close(): void {
    if (this.closing || this.finished) return;
    this.closing = true;
    this.queue.length = 0;
    this.socket.end(); // close_notify, then FIN
    this.graceTimer = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    this.graceTimer.unref();
  }

  /** Ends the connection at once, reporting err on 'close'. */
  abort(err: Error): void {
    this.closeError ??= err;
    this.closing = true;
    this.queue.length = 0;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    let frames: Buffer[];
    try {
      frames = this.framer.push(chunk);
    } catch (e) {
      this.abort(e as Error);
      return;
    }
    for (const frame of frames) this.queue.push(frame);
    this.flush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.closing && this.listenerCount("message") > 0) {
      const frame = this.queue.shift() as Buffer;
      try {
        this.emit("message", frame);
      } catch (e) {
        // A consumer bug must not escape into the socket handler; end this connection instead.
        this.abort(e as Error);
        return;
      }
    }
    if (this.queue.length >= MAX_QUEUED_FRAMES && !this.pausedForQueue) {
      this.pausedForQueue = true;
      this.socket.pause();
    } else if (this.queue.length === 0 && this.pausedForQueue) {
      this.pausedForQueue = false;
      this.socket.resume();
    }
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.closing = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.framer.reset();
    this.queue.length = 0;
    this.emit("close", this.closeError);
  }
}

/** "::ffff:127.0.0.1" -> "127.0.0.1" so one peer has one address on dual-stack sockets. */
export function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

const AUTH_ERROR = /CERT|UNABLE_TO_|SELF_SIGNED|ALTNAME|PSK|UNKNOWN_CA|BAD_CERTIFICATE|ACCESS_DENIED|CERTIFICATE_REQUIRED|BINDER/;
const PSK_AUTH_ERROR = /DECRYPT_ERROR|BAD_RECORD_MAC|ILLEGAL_PARAMETER|HANDSHAKE_FAILURE|DECRYPTION_FAILED/;
const CONNECT_ERROR = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EADDRNOTAVAIL", "EAI_AGAIN", "EADDRINUSE"]);

/** Maps a node:tls / net error to a TransportError with a stable code. */
export function classifyTlsError(err: Error, usingPsk: boolean): TransportError {
  if (err instanceof TransportError) return err;
  const code = String((err as NodeJS.ErrnoException).code ?? "");
  let kind: TransportError["code"] = "HANDSHAKE_FAILED";
  if (CONNECT_ERROR.has(code)) kind = "CONNECT_FAILED";
  else if (code === "ERR_TLS_HANDSHAKE_TIMEOUT") kind = "HANDSHAKE_TIMEOUT";
  else if (AUTH_ERROR.test(code) || (usingPsk && PSK_AUTH_ERROR.test(code))) kind = "AUTH_FAILED";
  else if (/NO_APPLICATION_PROTOCOL/.test(code)) kind = "ALPN_MISMATCH";
  const out = new TransportError(kind, `${err.message}${code && !err.message.includes(code) ? ` (${code})` : ""}`);
  (out as Error & { cause?: unknown }).cause = err;
  return out;
}

export function checkCredentials(psk: unknown, certificate: unknown, who: string): void {
  if (psk === undefined && certificate === undefined) {
    throw new TransportError("CONFIG", `${who}: either psk or certificate is required`);
  }
}

export function validatePort(port: number, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new TransportError("CONFIG", `invalid port ${port}`);
  }
}
