// The home router's side of CoAP over TLS: dials the ISP (connectTls), checks ALPN "coap", and
// for TLS 1.3 with a client certificate waits briefly for the server's verdict on it.

import { createHash } from "node:crypto";
import * as net from "node:net";
import * as tls from "node:tls";
import type { LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";
import { explainDialFailure } from "../auth-failure";
import { certificateLocalIdentity, certificatePeerIdentity, pskLocalIdentity, pskPeerIdentity } from "../identity";
import { DEFAULT_MAX_FRAME_SIZE } from "../stream-framer";
import {
  COAP_ALPN,
  DEFAULT_MAX_WRITE_BUFFER,
  PSK_CIPHERS,
  TlsConnection,
  checkCredentials,
  classifyTlsError,
  validatePort,
  type TlsCertificateOptions,
  type TlsConnectionSettings,
  type TlsPskCredentials,
  type TlsVersion,
} from "./connection";

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
