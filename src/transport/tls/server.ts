// The ISP's side of CoAP over TLS: a TLS server for certificate and PSK homes, fed sockets by the
// shared-port listener after its drop-list check, or listening on its own.

import { EventEmitter } from "node:events";
import * as net from "node:net";
import * as tls from "node:tls";
import type { LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";
import { certificateLocalIdentity, certificatePeerIdentity, pskLocalIdentity, pskPeerIdentity } from "../identity";
import { DEFAULT_MAX_FRAME_SIZE } from "../stream-framer";
import {
  COAP_ALPN,
  DEFAULT_MAX_WRITE_BUFFER,
  PSK_CIPHERS,
  TlsConnection,
  checkCredentials,
  classifyTlsError,
  normalizeAddress,
  validatePort,
  type RemoteEndpoint,
  type TlsCertificateOptions,
  type TlsConnectionSettings,
  type TlsVersion,
} from "./connection";

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
