// CoAP over TLS (RFC 8323) with node:tls, both roles. The home router dials (connectTls) and the
// ISP listens (createTlsServer). TLS 1.2 and 1.3, mutual certificate authentication or PSK,
// ALPN "coap" offered and required, RFC 8323 frames cut by StreamFramer with a size limit.

import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import * as net from "node:net";
import * as tls from "node:tls";
import type { Connection, LocalIdentity, PeerIdentity } from "./connection";
import { TransportError } from "./connection";
import { explainDialFailure } from "./auth-failure";
import { certificateLocalIdentity, certificatePeerIdentity, pskLocalIdentity, pskPeerIdentity } from "./identity";
import { DEFAULT_MAX_FRAME_SIZE, StreamFramer } from "./stream-framer";

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

export interface TlsConnectOptions {
  host: string;
  port: number;
  family?: 4 | 6;
  /** Source address to bind (e.g. 127.0.0.2 in tests). */
  localAddress?: string;
  psk?: TlsPskCredentials;
  certificate?: TlsCertificateOptions;
  /** Name sent as SNI and checked against the server certificate; defaults to host. */
  servername?: string;
  minVersion?: TlsVersion;
  maxVersion?: TlsVersion;
  /** A ticket from onSession, to resume a previous session. */
  session?: Buffer;
  /** Called with every session ticket the server issues (store it for resumption). */
  onSession?(ticket: Buffer): void;
  /** Whole connect + handshake budget (default 10 s). */
  timeoutMs?: number;
  maxFrameSize?: number;
  maxWriteBuffer?: number;
  /** Close unless the server selects ALPN "coap" (default true; RFC 8323 section 4.3). */
  requireAlpn?: boolean;
  /** Abort the connect: the socket is destroyed and the promise rejects with TransportError CLOSED. */
  signal?: AbortSignal;
}

export interface RemoteEndpoint {
  address: string;
  port: number;
}

export interface TlsServerOptions {
  certificate?: TlsCertificateOptions;
  psk?: {
    /** The key for a PSK identity, or undefined to refuse it. */
    lookup(identity: string, remote: RemoteEndpoint): Buffer | undefined;
    hint?: string;
  };
  /** Require and verify a client certificate (default true when certificate is set). */
  requireClientCert?: boolean;
  minVersion?: TlsVersion;
  maxVersion?: TlsVersion;
  maxFrameSize?: number;
  maxWriteBuffer?: number;
  /** Handshakes that take longer fail with 'handshake-failed' (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Cap on simultaneous TCP connections, handshaking or established (default 10,000). */
  maxConnections?: number;
  /**
   * Refuse clients that do not select ALPN "coap" (default true). Per authentication method if
   * given as an object: libcoap's PSK clients offer no ALPN, so `{ psk: false }` admits them while
   * certificate clients still must select it (an omitted method defaults to true).
   */
  requireAlpn?: boolean | { psk?: boolean; certificate?: boolean };
}

export interface TlsHandshakeFailure {
  address: string;
  port: number;
  reason: string;
  error: TransportError;
  /** PSK identity the client presented that we hold a key for. */
  identity?: string;
  /** PSK identity the client presented that we hold no key for. */
  unknownIdentity?: string;
  /** Subject of the client certificate, when one was presented. */
  subject?: string;
}

interface TlsConnectionSettings {
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

function checkCredentials(psk: unknown, certificate: unknown, who: string): void {
  if (psk === undefined && certificate === undefined) {
    throw new TransportError("CONFIG", `${who}: either psk or certificate is required`);
  }
}

function validatePort(port: number, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new TransportError("CONFIG", `invalid port ${port}`);
  }
}

/**
 * Dials a TLS server and resolves with an authenticated Connection once the handshake is done,
 * ALPN "coap" is selected and (TLS 1.3 with a client certificate) the server did not refuse the
 * certificate right after the handshake.
 */
export function connectTls(opts: TlsConnectOptions): Promise<TlsConnection> {
  return new Promise<TlsConnection>((resolve, reject) => {
    try {
      checkCredentials(opts.psk, opts.certificate, "connectTls");
      if (opts.psk && opts.certificate) throw new TransportError("CONFIG", "connectTls: give psk or certificate, not both");
      validatePort(opts.port, false);
    } catch (e) {
      reject(e);
      return;
    }
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const settings: TlsConnectionSettings = {
      maxFrameSize: opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
      maxWriteBuffer: opts.maxWriteBuffer ?? DEFAULT_MAX_WRITE_BUFFER,
    };
    let local: LocalIdentity;
    // family and localAddress reach net.Socket#connect through tls.connect; the typings omit them.
    const tlsOptions: tls.ConnectionOptions & { family?: number; localAddress?: string } = {
      host: opts.host,
      port: opts.port,
      family: opts.family,
      localAddress: opts.localAddress,
      ALPNProtocols: [COAP_ALPN],
      minVersion: opts.minVersion ?? "TLSv1.2",
      maxVersion: opts.maxVersion,
      session: opts.session,
      rejectUnauthorized: true,
    };
    try {
      if (opts.certificate) {
        const c = opts.certificate;
        local = certificateLocalIdentity(c.cert);
        Object.assign(tlsOptions, { cert: c.cert, key: c.key, ca: c.ca, passphrase: c.passphrase });
        const name = opts.servername ?? opts.host;
        if (!net.isIP(name)) tlsOptions.servername = name;
        tlsOptions.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(name, cert);
      } else {
        const psk = opts.psk as TlsPskCredentials;
        if (!Buffer.isBuffer(psk.key) || psk.key.length === 0 || typeof psk.identity !== "string" || psk.identity.length === 0) {
          throw new TransportError("CONFIG", "connectTls: psk needs a non-empty identity and key Buffer");
        }
        local = pskLocalIdentity(psk.identity);
        tlsOptions.ciphers = PSK_CIPHERS;
        tlsOptions.pskCallback = () => ({ psk: psk.key, identity: psk.identity });
        // The PSK authenticates the server; there is no certificate whose name could be checked.
        tlsOptions.checkServerIdentity = () => undefined;
        if (opts.servername && !net.isIP(opts.servername)) tlsOptions.servername = opts.servername;
      }
    } catch (e) {
      reject(e);
      return;
    }

    let settled = false;
    let confirming = false; // handshake done, waiting for the TLS 1.3 server's verdict
    let socket: tls.TLSSocket;
    const onAbort = () => fail(new TransportError("CLOSED", "TLS connect aborted"));
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      socket?.destroy();
      if (confirming && !(err instanceof TransportError)) {
        err = new TransportError("AUTH_FAILED", `server refused the connection right after the handshake: ${err.message}`);
      }
      const facts = {
        transport: "tls" as const,
        identity: opts.psk?.identity,
        certificate: opts.certificate !== undefined,
        servername: opts.servername ?? opts.host,
      };
      reject(explainDialFailure(classifyTlsError(err, opts.psk !== undefined), facts));
    };
    const timer = setTimeout(() => {
      const connected = socket && !socket.connecting;
      fail(
        new TransportError(
          connected ? "HANDSHAKE_TIMEOUT" : "CONNECT_FAILED",
          `TLS connect to ${opts.host}:${opts.port} timed out after ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);

    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      socket = tls.connect(tlsOptions);
    } catch (e) {
      fail(e as Error);
      return;
    }
    // Tickets may arrive before the peer is known (TLS 1.2); remember them once it is.
    let ticketPeer: PeerIdentity | undefined;
    const earlyTickets: Buffer[] = [];
    socket.on("session", (ticket: Buffer) => {
      if (ticketPeer) rememberTicketPeer(ticket, ticketPeer);
      else if (earlyTickets.length < 4) earlyTickets.push(ticket);
      try {
        opts.onSession?.(ticket);
      } catch {
        // A failing ticket store must not break the connection.
      }
    });
    socket.on("error", (err) => fail(err));
    socket.on("close", () =>
      fail(
        new TransportError(
          confirming ? "AUTH_FAILED" : "HANDSHAKE_FAILED",
          confirming
            ? "server closed the connection right after the handshake (certificate refused?)"
            : "connection closed during the TLS handshake",
        ),
      ),
    );
    socket.once("secureConnect", () => {
      if (settled) return;
      if (socket.alpnProtocol !== COAP_ALPN && opts.requireAlpn !== false) {
        fail(new TransportError("ALPN_MISMATCH", `server did not select ALPN "${COAP_ALPN}" (got ${socket.alpnProtocol || "none"})`));
        return;
      }
      let peer: PeerIdentity | undefined;
      if (opts.psk) peer = pskPeerIdentity(opts.psk.identity);
      else if (socket.isSessionReused() && opts.session) {
        // node exposes no peer certificate on a resumed session: use the one seen when the
        // ticket was issued. Unknown ticket (e.g. from another process): redo a full handshake.
        peer = ticketPeers.get(ticketKey(opts.session));
        if (!peer) {
          settled = true;
          clearTimeout(timer);
          socket.destroy();
          connectTls({ ...opts, session: undefined }).then(resolve, reject);
          return;
        }
      } else {
        const cert = socket.getPeerX509Certificate();
        if (!socket.authorized || !cert) {
          fail(
            new TransportError("AUTH_FAILED", `server certificate not verified: ${String(socket.authorizationError ?? "no certificate")}`),
          );
          return;
        }
        peer = certificatePeerIdentity(cert.raw);
      }
      ticketPeer = peer;
      for (const t of earlyTickets.splice(0)) rememberTicketPeer(t, peer);
      const conn = new TlsConnection(socket, peer, local, settings);
      // Resolve from a fresh macrotask: a write made while node is inside its ticket callback
      // (TLS 1.3) is lost, and callers write as soon as the promise resolves.
      const accept = () =>
        setImmediate(() => {
          if (settled) return;
          if (conn.closed) {
            fail(new TransportError(confirming ? "AUTH_FAILED" : "HANDSHAKE_FAILED", "connection closed right after the handshake"));
            return;
          }
          settled = true;
          clearTimeout(timer);
          opts.signal?.removeEventListener("abort", onAbort);
          resolve(conn);
        });
      // In TLS 1.3 the server checks our certificate after our handshake completes; its verdict
      // (a ticket, data, or an alert) arrives one round trip later. Wait for it, briefly.
      if (opts.certificate && socket.getProtocol() === "TLSv1.3" && !socket.isSessionReused()) {
        confirming = true;
        const settle = setTimeout(accept, Math.min(1000, timeoutMs));
        settle.unref();
        const verdict = () => {
          clearTimeout(settle);
          accept();
        };
        socket.once("session", verdict);
        socket.once("data", verdict);
        conn.once("close", (err?: Error) => {
          clearTimeout(settle);
          fail(err ?? new TransportError("AUTH_FAILED", "server closed the connection right after the handshake (certificate refused?)"));
        });
      } else accept();
    });
  });
}

/** Peer identities of issued tickets, so a resumed session still knows who the server is. */
const ticketPeers = new Map<string, PeerIdentity>();
const MAX_TICKET_PEERS = 1024;

function ticketKey(ticket: Buffer): string {
  return createHash("sha256").update(ticket).digest("hex");
}

function rememberTicketPeer(ticket: Buffer, peer: PeerIdentity): void {
  const key = ticketKey(ticket);
  ticketPeers.delete(key);
  ticketPeers.set(key, peer);
  if (ticketPeers.size > MAX_TICKET_PEERS) ticketPeers.delete(ticketPeers.keys().next().value as string);
}

/**
 * The ISP-side TLS server. Either listen() on its own, or feed it raw TCP sockets accepted
 * elsewhere with acceptSocket() (the shared-port listener does that after its drop-list check).
 */
export class TlsServer extends EventEmitter {
  private readonly tlsServer: tls.Server;
  private netServer: net.Server | undefined;
  private readonly live = new Set<net.Socket>();
  private readonly connections = new Set<TlsConnection>();
  private readonly pskIdentities = new WeakMap<tls.TLSSocket, string>();
  /** Identities we had no key for, to name them when the handshake then fails. */
  private readonly refusedIdentities = new WeakMap<tls.TLSSocket, string>();
  private readonly endpoints = new WeakMap<net.Socket, RemoteEndpoint>();
  private readonly settings: TlsConnectionSettings;
  private readonly local: LocalIdentity;
  private readonly maxConnections: number;
  private readonly requireAlpnPsk: boolean;
  private readonly requireAlpnCertificate: boolean;
  private closed = false;

  constructor(private readonly opts: TlsServerOptions) {
    super();
    checkCredentials(opts.psk, opts.certificate, "createTlsServer");
    this.settings = {
      maxFrameSize: opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
      maxWriteBuffer: opts.maxWriteBuffer ?? DEFAULT_MAX_WRITE_BUFFER,
    };
    this.maxConnections = opts.maxConnections ?? 10_000;
    const alpn = opts.requireAlpn;
    this.requireAlpnPsk = typeof alpn === "object" ? alpn.psk !== false : alpn !== false;
    this.requireAlpnCertificate = typeof alpn === "object" ? alpn.certificate !== false : alpn !== false;
    const requireCert = opts.certificate !== undefined && opts.requireClientCert !== false;
    const serverOptions: tls.TlsOptions = {
      ALPNProtocols: [COAP_ALPN],
      minVersion: opts.minVersion ?? "TLSv1.2",
      maxVersion: opts.maxVersion,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      requestCert: requireCert,
      rejectUnauthorized: requireCert,
    };
    if (opts.certificate) {
      const c = opts.certificate;
      this.local = certificateLocalIdentity(c.cert);
      Object.assign(serverOptions, { cert: c.cert, key: c.key, ca: c.ca, passphrase: c.passphrase });
    } else {
      this.local = pskLocalIdentity(opts.psk?.hint ?? "");
    }
    if (opts.psk) {
      const psk = opts.psk;
      // node's default list ends in "!PSK", which would delete the PSK suites for good.
      const certCiphers = tls.DEFAULT_CIPHERS.split(":")
        .filter((c) => c !== "!PSK")
        .join(":");
      serverOptions.ciphers = opts.certificate ? `${PSK_CIPHERS}:${certCiphers}` : PSK_CIPHERS;
      if (psk.hint !== undefined) serverOptions.pskIdentityHint = psk.hint;
      serverOptions.pskCallback = (socket: tls.TLSSocket, identity: string) => {
        let key: Buffer | undefined;
        try {
          key = psk.lookup(identity, { address: normalizeAddress(socket.remoteAddress ?? ""), port: socket.remotePort ?? 0 });
        } catch {
          key = undefined; // a throwing lookup refuses the identity
        }
        if (!key || key.length === 0) {
          this.refusedIdentities.set(socket, identity);
          return null;
        }
        this.pskIdentities.set(socket, identity);
        return key;
      };
    }
    try {
      this.tlsServer = tls.createServer(serverOptions);
    } catch (e) {
      throw new TransportError("CONFIG", `TLS server options rejected: ${(e as Error).message}`);
    }
    this.tlsServer.on("secureConnection", (socket: tls.TLSSocket) => this.onSecure(socket));
    this.tlsServer.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
      // node destroys a socket whose client certificate failed verification and then reports only
      // a hang-up; the verification error is left on the socket.
      const refusedCert = socket.authorizationError;
      // A peer that leaves before sending a byte made no handshake attempt: a load balancer's TCP
      // health check. Counting it would get the prober drop-listed. Silence until the timeout still counts.
      const raw = (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
      if (!refusedCert && (raw ?? socket).bytesRead === 0 && (err as NodeJS.ErrnoException).code !== "ERR_TLS_HANDSHAKE_TIMEOUT") {
        socket.destroy();
        return;
      }
      const error = refusedCert
        ? new TransportError("AUTH_FAILED", `client certificate refused: ${String(refusedCert)}`)
        : classifyTlsError(err, opts.psk !== undefined && !opts.certificate);
      this.reportFailure(socket, error);
      socket.destroy();
    });
  }

  /** Live TLS connections (established). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts the TLS handshake on a raw TCP socket accepted by someone else. */
  acceptSocket(socket: net.Socket): void {
    if (this.closed || this.live.size >= this.maxConnections) {
      socket.destroy();
      return;
    }
    this.live.add(socket);
    // Read the peer's address now: once node destroys a refused socket it is gone.
    this.endpoints.set(socket, { address: normalizeAddress(socket.remoteAddress ?? ""), port: socket.remotePort ?? 0 });
    socket.on("error", () => undefined); // reported through tlsClientError or close
    socket.once("close", () => this.live.delete(socket));
    this.tlsServer.emit("connection", socket);
  }

  listen(port = 0, host = "::"): Promise<{ port: number; host: string }> {
    validatePort(port, true);
    return new Promise((resolve, reject) => {
      const server = net.createServer((socket) => this.acceptSocket(socket));
      server.once("error", (err) => reject(new TransportError("CONFIG", `cannot listen on ${host}:${port}: ${err.message}`)));
      server.listen({ port, host, ipv6Only: false }, () => {
        this.netServer = server;
        const addr = server.address() as net.AddressInfo;
        resolve({ port: addr.port, host: addr.address });
      });
    });
  }

  address(): net.AddressInfo | undefined {
    return (this.netServer?.address() as net.AddressInfo | null) ?? undefined;
  }

  /** Stops listening and ends every connection, handshaking or established. */
  async close(): Promise<void> {
    this.closed = true;
    for (const conn of this.connections) conn.close();
    for (const socket of this.live) socket.destroy();
    const server = this.netServer;
    this.netServer = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  private onSecure(socket: tls.TLSSocket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    let peer: PeerIdentity;
    let identity = this.pskIdentities.get(socket);
    if (identity === undefined && this.opts.psk && socket.isSessionReused()) {
      // A resumed TLS 1.2 PSK session skips the PSK callback; the identity travels inside the
      // session (sealed in our own ticket). Check it is still a known identity before trusting it.
      const resumed = pskIdentityFromSession(socket.getSession());
      if (resumed !== undefined) {
        let key: Buffer | undefined;
        try {
          key = this.opts.psk.lookup(resumed, { address: normalizeAddress(socket.remoteAddress ?? ""), port: socket.remotePort ?? 0 });
        } catch {
          key = undefined;
        }
        if (!key || key.length === 0) {
          this.reportFailure(socket, new TransportError("AUTH_FAILED", `resumed session for PSK identity no longer known`));
          socket.destroy();
          return;
        }
        identity = resumed;
      }
    }
    const alpnRequired = identity !== undefined ? this.requireAlpnPsk : this.requireAlpnCertificate;
    if (alpnRequired && socket.alpnProtocol !== COAP_ALPN) {
      this.reportFailure(socket, new TransportError("ALPN_MISMATCH", `client did not negotiate ALPN "${COAP_ALPN}"`));
      socket.destroy();
      return;
    }
    if (identity !== undefined) peer = pskPeerIdentity(identity);
    else {
      const cert = socket.getPeerX509Certificate();
      if (!socket.authorized || !cert) {
        this.reportFailure(
          socket,
          new TransportError("AUTH_FAILED", `client not authenticated: ${String(socket.authorizationError ?? "no certificate")}`),
        );
        socket.destroy();
        return;
      }
      peer = certificatePeerIdentity(cert.raw);
    }
    const conn = new TlsConnection(socket, peer, this.local, this.settings);
    this.connections.add(conn);
    conn.once("close", () => this.connections.delete(conn));
    this.emit("connection", conn);
  }

  private reportFailure(socket: tls.TLSSocket, error: TransportError): void {
    // node keeps the accepted TCP socket as _parent of the TLS socket it wraps around it.
    const raw = (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
    const endpoint = (raw && this.endpoints.get(raw)) ?? {
      address: normalizeAddress(socket.remoteAddress ?? ""),
      port: socket.remotePort ?? 0,
    };
    const failure: TlsHandshakeFailure = {
      address: endpoint.address,
      port: endpoint.port,
      reason: error.message,
      error,
    };
    const identity = this.pskIdentities.get(socket);
    const unknownIdentity = this.refusedIdentities.get(socket);
    if (identity !== undefined) failure.identity = identity;
    if (unknownIdentity !== undefined) failure.unknownIdentity = unknownIdentity;
    try {
      const subject = socket.getPeerX509Certificate?.()?.subject;
      if (subject) failure.subject = subject.split("\n").join(",");
    } catch {
      // no certificate left on a destroyed socket
    }
    this.emit("handshake-failed", failure);
  }
}

/**
 * The psk_identity field ([8] OCTET STRING) of an OpenSSL SSL_SESSION in DER, if present.
 * Minimal DER walk over the top-level SEQUENCE; anything unexpected yields undefined.
 */
export function pskIdentityFromSession(der: Buffer | undefined): string | undefined {
  if (!der || der.length < 2 || der[0] !== 0x30) return undefined;
  const header = (at: number): { tag: number; start: number; end: number } | undefined => {
    if (at + 2 > der.length) return undefined;
    const tag = der[at];
    let len = der[at + 1];
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || start + n > der.length) return undefined;
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | der[start + i];
      start += n;
    }
    const end = start + len;
    return end <= der.length ? { tag, start, end } : undefined;
  };
  const outer = header(0);
  if (!outer) return undefined;
  for (let at = outer.start; at < outer.end;) {
    const el = header(at);
    if (!el) return undefined;
    if (el.tag === 0xa8) {
      const inner = header(el.start);
      return inner && inner.tag === 0x04 && inner.end <= el.end ? der.subarray(inner.start, inner.end).toString("utf8") : undefined;
    }
    at = el.end;
  }
  return undefined;
}

export function createTlsServer(opts: TlsServerOptions): TlsServer {
  return new TlsServer(opts);
}
