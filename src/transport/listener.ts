// The ISP side's one call-home listener (RFC 9066): DTLS on UDP and TLS on TCP on the same port
// number (default 4647), dual stack by default, with a drop-list of sources that keep failing
// their handshakes (RFC 9066 section 8).

import { EventEmitter } from "node:events";
import * as net from "node:net";
import type { Connection, TransportKind } from "./connection";
import { TransportError } from "./connection";
import { DropList, type DropListOptions } from "./drop-list";
import { diagnoseServerFailure, type AuthProblem } from "./auth-failure";
import { DtlsServer, type DtlsServerOptions, type HandshakeFailure as DtlsHandshakeFailure } from "./dtls/server";
import {
  createTlsServer,
  normalizeAddress,
  type TlsHandshakeFailure,
  type RemoteEndpoint,
  type TlsCertificateOptions,
  type TlsServer,
  type TlsServerOptions,
} from "./tls";

/** IANA port for DOTS call home (RFC 9066 section 9). */
export const DOTS_CALL_HOME_PORT = 4647;

export type PskLookup = (identity: string, remote: RemoteEndpoint) => Buffer | undefined;

export interface CallHomeTransportListenerOptions {
  /** Port for both UDP (DTLS) and TCP (TLS); 0 picks one free for both (default 4647). */
  port?: number;
  /** Address to bind (default "::", IPv6 and IPv4). */
  host?: string;
  /** Accept DTLS 1.2 on UDP: PSK (pskLookup) and/or certificates (ECDHE_ECDSA). The extra fields pass through to DtlsServer. */
  dtls?: {
    pskLookup?: DtlsServerOptions["pskLookup"];
    pskHint?: string;
  } & Partial<Omit<DtlsServerOptions, "pskLookup" | "pskHint" | "isDropped">>;
  /** Accept TLS 1.2/1.3 on TCP with certificates and/or PSK. */
  tls?: {
    certificate?: TlsCertificateOptions;
    pskLookup?: PskLookup;
    pskHint?: string;
  } & Omit<TlsServerOptions, "certificate" | "psk">;
  /** Drop-list settings; false turns it off (not recommended). */
  dropList?: DropListOptions | false;
  /**
   * Cap on simultaneous TCP connections (handshaking or established) from one source address, so
   * one source cannot fill the server while its stalled handshakes wait to time out (default 256;
   * generous because many homes may share one address behind carrier-grade NAT).
   */
  maxTcpPerAddress?: number;
  /** How often port-0 binding is retried when UDP finds the TCP port taken (default 20). */
  bindAttempts?: number;
}

export interface AuthFailure {
  address: string;
  port: number;
  transport: TransportKind;
  /** The technical reason: our DTLS server's word ("bad-finished") or node:tls's text. */
  reason: string;
  /** The cause in one code, when it is about credentials (see describeForListener). */
  problem?: AuthProblem;
  /** PSK identity the client presented (known to us or not). */
  identity?: string;
  /** Subject of the client's certificate, when it presented one. */
  subject?: string;
}

export interface DropEvent {
  address: string;
  /** End of the ban, ms since epoch. */
  until: number;
  /** Failed handshakes that led to the ban, and the window they fell in. */
  failures: number;
  windowMs: number;
  banMs: number;
  /** The last failure before the ban (its problem code and identity tell the operator why). */
  last: AuthFailure;
}

export interface DropEndEvent {
  address: string;
  /** When the ban started and ended, ms since epoch. */
  since: number;
  until: number;
}

/**
 * Events: 'connection' (Connection), 'auth-failure' (AuthFailure), 'drop' (DropEvent: a source is
 * banned), 'drop-end' (DropEndEvent: its ban is over, or the listener closed before),
 * 'error' (Error: a socket failed after listen; the listener keeps running if it can).
 */
export class CallHomeTransportListener extends EventEmitter {
  readonly dropList: DropList | undefined;
  private tcp: net.Server | undefined;
  private tlsServer: TlsServer | undefined;
  private dtlsServer: DtlsServer | undefined;
  private readonly live = new Set<Connection>();
  private readonly tcpPerAddress = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** One timer per banned address (at most the drop-list's maxTracked), to announce the ban's end. */
  private readonly banTimers = new Map<string, NodeJS.Timeout>();
  private boundPort: number | undefined;
  private boundHost: string | undefined;
  private state: "idle" | "listening" | "closed" = "idle";

  constructor(private readonly opts: CallHomeTransportListenerOptions) {
    super();
    if (!opts.dtls && !opts.tls) throw new TransportError("CONFIG", "listener needs dtls and/or tls settings");
    if (opts.tls && !opts.tls.certificate && !opts.tls.pskLookup) {
      throw new TransportError("CONFIG", "listener tls settings need a certificate and/or a pskLookup");
    }
    const port = opts.port ?? DOTS_CALL_HOME_PORT;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TransportError("CONFIG", `invalid port ${port}`);
    this.dropList = opts.dropList === false ? undefined : new DropList(opts.dropList ?? {});
  }

  /** The bound port, once listening. */
  get port(): number | undefined {
    return this.boundPort;
  }

  /** Established connections of both transports. */
  get connections(): ReadonlySet<Connection> {
    return this.live;
  }

  /**
   * Counts a failure found above the transport (e.g. an identity no home is registered for) in
   * the drop-list, like a failed handshake.
   */
  reportFailure(address: string, transport: TransportKind, reason: string, port = 0): void {
    this.onFailure({ address: normalizeAddress(address), port, transport, reason });
  }

  async listen(): Promise<{ port: number; host: string }> {
    if (this.state !== "idle") throw new TransportError("CONFIG", `listener is ${this.state}`);
    const host = this.opts.host ?? "::";
    const wanted = this.opts.port ?? DOTS_CALL_HOME_PORT;
    const attempts = wanted === 0 ? (this.opts.bindAttempts ?? 20) : 1;
    let lastError: Error | undefined;
    for (let i = 0; i < attempts; i++) {
      try {
        const port = await this.bindBoth(wanted, host);
        this.state = "listening";
        this.boundPort = port;
        this.boundHost = host;
        if (this.dropList) {
          const every = Math.max(1000, Math.min(60_000, this.dropList.windowMs));
          this.sweepTimer = setInterval(() => this.dropList?.sweep(), every);
          this.sweepTimer.unref();
        }
        return { port, host };
      } catch (e) {
        lastError = e as Error;
        await this.teardown();
        // Only an ephemeral port taken by someone else on the other protocol is worth a retry.
        if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE" || wanted !== 0) break;
      }
    }
    throw new TransportError("CONFIG", `cannot listen on [${host}]:${wanted}: ${lastError?.message ?? "unknown error"}`);
  }

  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.state = "closed";
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const t of this.banTimers.values()) clearTimeout(t);
    this.banTimers.clear();
    await this.teardown();
  }

  /** TCP first (it picks the port when 0 is asked for), then UDP on the same number. */
  private async bindBoth(port: number, host: string): Promise<number> {
    let actual = port;
    if (this.opts.tls) {
      const t = this.opts.tls;
      const tlsServer = createTlsServer({
        ...t,
        certificate: t.certificate,
        psk: t.pskLookup ? { lookup: t.pskLookup, hint: t.pskHint } : undefined,
      });
      this.tlsServer = tlsServer;
      tlsServer.on("connection", (conn: Connection) => this.adopt(conn));
      tlsServer.on("handshake-failed", (f: TlsHandshakeFailure) =>
        this.onFailure(withDiagnosis({ address: f.address, port: f.port, transport: "tls", reason: f.reason }, f)),
      );
      const tcp = net.createServer((socket) => this.onTcpSocket(socket));
      this.tcp = tcp;
      actual = await new Promise<number>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen({ port, host, ipv6Only: false, exclusive: true }, () => {
          tcp.off("error", reject);
          tcp.on("error", (err) => this.reportError(err));
          resolve((tcp.address() as net.AddressInfo).port);
        });
      });
    }
    if (this.opts.dtls) {
      const d = this.opts.dtls;
      const dtlsServer = new DtlsServer({
        ...d,
        isDropped: this.dropList ? (a: string) => this.dropList?.isDropped(a) ?? false : undefined,
      });
      this.dtlsServer = dtlsServer;
      dtlsServer.on("connection", (conn: Connection) => this.adopt(conn));
      dtlsServer.on("handshake-failed", (f: DtlsHandshakeFailure) => {
        // The server refusing work for lack of room is not the peer's fault; a handshake from an
        // address that never proved it sent it (a replayed ticket) is no one's we could name.
        if (f.reason !== "capacity" && !f.addressUnproven)
          this.onFailure(withDiagnosis({ address: f.address, port: f.port, transport: "dtls", reason: f.reason }, f));
      });
      dtlsServer.on("error", (err: Error) => this.reportError(err));
      const bound = await dtlsServer.listen(actual, host);
      actual = bound.port;
    }
    return actual;
  }

  private async teardown(): Promise<void> {
    const tcp = this.tcp;
    const tlsServer = this.tlsServer;
    const dtlsServer = this.dtlsServer;
    this.tcp = undefined;
    this.tlsServer = undefined;
    this.dtlsServer = undefined;
    const closing: Array<Promise<unknown>> = [];
    if (tcp?.listening) closing.push(new Promise<void>((r) => tcp.close(() => r())));
    if (tlsServer) closing.push(tlsServer.close());
    if (dtlsServer) closing.push(dtlsServer.close().catch(() => undefined));
    for (const conn of this.live) conn.close();
    await Promise.all(closing);
    this.live.clear();
  }

  private onTcpSocket(socket: net.Socket): void {
    const address = normalizeAddress(socket.remoteAddress ?? "");
    const count = this.tcpPerAddress.get(address) ?? 0;
    if (
      this.state !== "listening" ||
      !this.tlsServer ||
      this.dropList?.isDropped(address) ||
      count >= (this.opts.maxTcpPerAddress ?? 256)
    ) {
      socket.on("error", () => undefined);
      socket.destroy();
      return;
    }
    this.tcpPerAddress.set(address, count + 1);
    socket.once("close", () => {
      const left = (this.tcpPerAddress.get(address) ?? 1) - 1;
      if (left > 0) this.tcpPerAddress.set(address, left);
      else this.tcpPerAddress.delete(address);
    });
    this.tlsServer.acceptSocket(socket);
  }

  private adopt(conn: Connection): void {
    if (this.state !== "listening") {
      conn.close();
      return;
    }
    this.live.add(conn);
    conn.once("close", () => this.live.delete(conn));
    this.emit("connection", conn);
  }

  private reportError(err: Error): void {
    // An 'error' nobody listens for would throw; socket errors after listen are not fatal here.
    if (this.listenerCount("error") > 0) this.emit("error", err);
  }

  private onFailure(failure: AuthFailure): void {
    this.emit("auth-failure", failure);
    if (!this.dropList || !failure.address) return;
    const verdict = this.dropList.recordFailure(failure.address);
    if (verdict.newlyDropped && verdict.until !== undefined) {
      const list = this.dropList;
      const drop: DropEvent = {
        address: failure.address,
        until: verdict.until,
        failures: list.maxFailures,
        windowMs: list.windowMs,
        banMs: list.banMs,
        last: failure,
      };
      const since = verdict.until - list.banMs;
      const address = failure.address;
      clearTimeout(this.banTimers.get(address));
      const timer = setTimeout(
        () => {
          this.banTimers.delete(address);
          if (this.state === "closed") return;
          const end: DropEndEvent = { address, since, until: Math.min(verdict.until as number, Date.now()) };
          this.emit("drop-end", end);
        },
        Math.max(0, verdict.until - Date.now()) + 5,
      );
      timer.unref();
      this.banTimers.set(address, timer);
      this.emit("drop", drop);
    }
  }
}

/** Adds the problem code and the identity or subject involved to a failure. */
function withDiagnosis(failure: AuthFailure, facts: { identity?: string; unknownIdentity?: string; subject?: string }): AuthFailure {
  const d = diagnoseServerFailure({
    transport: failure.transport,
    detail: failure.reason,
    identity: facts.identity,
    unknownIdentity: facts.unknownIdentity,
    subject: facts.subject,
  });
  const identity = d?.identity ?? facts.identity ?? facts.unknownIdentity;
  return {
    ...failure,
    ...(d ? { problem: d.problem } : {}),
    ...(identity !== undefined ? { identity } : {}),
    ...((d?.subject ?? facts.subject) ? { subject: d?.subject ?? facts.subject } : {}),
  };
}
