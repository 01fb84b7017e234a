// DTLS 1.2 client role (RFC 6347) for PSK (RFC 4279) and ECDHE_PSK (RFC 5489) suites, on the same
// record layer, handshake framing, AEAD, PRF and ECDH code as the server. One handshake per
// instance: cookie exchange, flight retransmission with doubling timer (section 4.2.4), a total
// handshake deadline, reassembly of fragmented server messages, anti-replay window, alerts.
// Every datagram goes through one guarded handler: bad input is dropped or ends the handshake with
// an alert and a TransportError, never a throw into the socket.
import * as dgram from "node:dgram";
import { EventEmitter } from "node:events";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Connection, LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";
import { certificateLocalIdentity, certificatePeerIdentity, pskLocalIdentity, pskPeerIdentity } from "../identity";
import {
  VERIFIABLE_SIGNATURE_SCHEMES,
  certificateKeyKindOf,
  checkPeerChain,
  clientCertificateType,
  encodeCertificateMessage,
  encodeDigitallySigned,
  encodeEcdhClientKeyExchange,
  keyKindLabel,
  loadCertificateCredentials,
  loadTrustAnchors,
  parseCertificateMessage,
  parseCertificateRequest,
  parseSignedServerKeyExchange,
  pickSignatureScheme,
  signParts,
  verifyParts,
  type CertificateCredentials,
  type PemInput,
} from "./certificate";
import { AeadState } from "./cipher";
import {
  AlertDescription,
  AlertLevel,
  CIPHER_SUITES,
  ContentType,
  DTLS_1_0,
  DTLS_1_2,
  ExtensionType,
  HandshakeType,
  NamedGroup,
  POINT_FORMAT_UNCOMPRESSED,
  certificateKeyKind,
  type CipherSuiteInfo,
  type DtlsCipherSuiteName,
} from "./constants";
import { generateEphemeralKey, isSupportedGroup } from "./ecdhe";
import {
  DtlsDecodeError,
  HandshakeReassembler,
  Reader,
  encodeHandshake,
  fragmentHandshake,
  parseHandshakeFragments,
  type CompleteMessage,
} from "./handshake";
import { aeadKeyBlock, ecdhePskPremasterSecret, finishedVerifyData, masterSecret, pskPremasterSecret } from "./prf";
import { Transcript } from "./transcript";
import { encodeCidRecord, encodeRecord, innerPlaintext, parseDatagram } from "./record";
import { ReplayWindow } from "./replay";
import { parseNewSessionTicket, resumptionUnusable, sessionTicketExtension, type DtlsResumption } from "./resumption";

/** Client preference: ECDHE_PSK with ChaCha20-Poly1305 (forward secrecy), then plain PSK for old peers. */
export const DEFAULT_DTLS_CLIENT_SUITES: readonly DtlsCipherSuiteName[] = [
  "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_128_CCM_8",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
  "TLS_PSK_WITH_AES_128_CCM",
];
/**
 * With a certificate (and no PSK): ECDHE_ECDSA, then ECDHE_RSA for an ISP with an RSA key (our own
 * key may be either), ChaCha20-Poly1305 first.
 */
export const DEFAULT_DTLS_CLIENT_CERTIFICATE_SUITES: readonly DtlsCipherSuiteName[] = [
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
];

/** Our certificate, the CAs the ISP's must chain to, and the name it must carry (RFC 6125). */
export interface DtlsClientCertificateOptions {
  cert: PemInput;
  key: PemInput;
  passphrase?: string;
  ca: PemInput | PemInput[];
  /** DNS name or IP address the server certificate must name; default the dialled address. */
  servername?: string;
}

/** Alert numbers to names, for error text the connect diagnosis matches (auth-failure.ts). */
export const ALERT_NAMES: Readonly<Record<number, string>> = {
  0: "close_notify",
  10: "unexpected_message",
  20: "bad_record_mac",
  22: "record_overflow",
  40: "handshake_failure",
  42: "bad_certificate",
  43: "unsupported_certificate",
  44: "certificate_revoked",
  45: "certificate_expired",
  46: "certificate_unknown",
  47: "illegal_parameter",
  48: "unknown_ca",
  49: "access_denied",
  50: "decode_error",
  51: "decrypt_error",
  70: "protocol_version",
  71: "insufficient_security",
  80: "internal_error",
  90: "user_canceled",
  100: "no_renegotiation",
  110: "unsupported_extension",
  115: "unknown_psk_identity",
};

export function alertName(description: number): string {
  return ALERT_NAMES[description] ?? `alert_${description}`;
}

export interface DtlsClientOptions {
  /** IP address literal of the server. */
  address: string;
  port: number;
  /** One of psk and certificate is needed. */
  psk?: { identity: string; key: Buffer };
  certificate?: DtlsClientCertificateOptions;
  /** Suites offered, in preference order (default DEFAULT_DTLS_CLIENT_SUITES, or the certificate suites). */
  suites?: readonly DtlsCipherSuiteName[];
  /** Whole-handshake deadline (default 30 s). */
  handshakeTimeoutMs?: number;
  /** First retransmission timer (RFC 6347 4.2.4.1: 1 s); doubles on each expiry up to retransmitMaxMs (60 s). */
  retransmitInitialMs?: number;
  retransmitMaxMs?: number;
  /** Largest application message send() accepts (default 16384). */
  maxMessageSize?: number;
  /** Aborts the handshake (TransportError CLOSED). */
  signal?: AbortSignal;
  /** Local address to bind (default any of the family). */
  localAddress?: string;
  /**
   * A previous session's ticket (`client.resumption` of an earlier connection): offered for an
   * abbreviated handshake (RFC 5077 3.4). Ignored when expired, of another identity or of a suite not
   * offered; a server that refuses it gets a full handshake.
   */
  resumeFrom?: DtlsResumption;
}

/** Bounds on what a server can make us hold. */
const MAX_DATAGRAM_FRAGMENT = 16384 + 2048;
const REASSEMBLY_LIMITS = { maxMessageLength: 65536, maxAhead: 8, maxBufferedBytes: 131072 };
const MAX_SERVER_FLIGHT_MESSAGES = 8;
const MAX_QUEUED_MESSAGES = 64;
const MAX_COOKIE_EXCHANGES = 2;
/** As the server's: within an IPv6 minimum-MTU path; certificate messages are fragmented to fit. */
const FLIGHT_DATAGRAM_BYTES = 1200;
const FLIGHT_FRAGMENT_BODY = FLIGHT_DATAGRAM_BYTES - 13 - 12 - 64;

/** "resumed": the server accepted our ticket; waiting for its [NewSessionTicket], ChangeCipherSpec, Finished. */
type State = "hello" | "flight4" | "finished" | "resumed" | "connected" | "closed";

/** A record of our current flight; encoded with a fresh sequence number on each (re)transmission. */
interface FlightRecord {
  type: number;
  epoch: 0 | 1;
  body: Buffer;
}

/** A DTLS 1.2 client association; `handshake()` resolves once the server's Finished verified. */
export class DtlsClient extends EventEmitter implements Connection {
  readonly transport = "dtls" as const;
  /** Replayed records are dropped (anti-replay window). */
  readonly dropsDuplicates = true;
  /** The PSK identity, or the server's certificate once it verified. */
  peer: PeerIdentity;
  readonly local: LocalIdentity;
  readonly remoteAddress: string;
  readonly remotePort: number;
  localAddress = "";
  localPort = 0;
  /** "DTLSv1.2 <suite>" once negotiated. */
  cipher = "DTLSv1.2 (handshake)";
  suite: CipherSuiteInfo | undefined;
  extendedMasterSecret = false;
  /** Server ECDH group (ECDHE_PSK), for status and tests. */
  group: number | undefined;
  /** True once an abbreviated handshake (session resumed from `resumeFrom`) completed. */
  resumed = false;
  /** The server echoed our session_id: it took the ticket (the handshake may still fail). */
  ticketAccepted = false;
  /**
   * After the handshake: the ticket to resume this session with next time (a new one, or the one we
   * resumed with when the server issued none); undefined when the server issues no tickets.
   */
  resumption: DtlsResumption | undefined;
  /** Handshake message types in transcript order once connected (tests: a resumption has no key exchange). */
  handshakeTypes: number[] = [];

  /** Created by handshake(), so an instance that never dials holds no socket. */
  private socket: dgram.Socket | undefined;
  private readonly suites: CipherSuiteInfo[];
  private state: State = "hello";
  private readonly clientRandom = randomBytes(32);
  private serverRandom: Buffer | undefined;
  private cookie = Buffer.alloc(0);
  private cookieExchanges = 0;
  private clientMessageSeq = 0;
  private writeSeq: [number, number] = [0, 0];
  private write: AeadState | undefined;
  private read: AeadState | undefined;
  private readonly replay = new ReplayWindow();
  private reassembler = new HandshakeReassembler(0, REASSEMBLY_LIMITS);
  /** message_seq -> epoch of the record it arrived in, for messages the reassembler holds (at most maxAhead + 1). */
  private readonly messageEpochs = new Map<number, number>();
  private transcript = new Transcript();
  private serverFlight: CompleteMessage[] = [];
  private master: Buffer | undefined;
  private flight: FlightRecord[] = [];
  private retransmitMs: number;
  private retransmitTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private lastSent = 0;
  private readonly queue: Buffer[] = [];
  private settle: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** The ticket offered in this handshake, and the fresh session_id that signals it (RFC 5077 3.4). */
  private offer: { from: DtlsResumption; sessionId: Buffer } | undefined;
  /** The ServerHello carried SessionTicket: a NewSessionTicket precedes the server's ChangeCipherSpec (RFC 5077 3.3). */
  private ticketPromised = false;
  private newTicket: { ticket: Buffer; lifetimeHintS: number; receivedAt: number } | undefined;
  /** Abbreviated handshake: our last flight, repeated when the server repeats its Finished (RFC 6347 4.2.4). */
  private finalFlight: FlightRecord[] | undefined;
  private lastFinalResend = 0;
  private readonly credentials: CertificateCredentials | undefined;
  /** The server's Connection ID (RFC 9146), carried in every record we protect; undefined = plain records. */
  private peerCid: Buffer | undefined;
  private readonly trustAnchors: ReturnType<typeof loadTrustAnchors>;
  private readonly certificateLocal: LocalIdentity | undefined;
  private readonly onAbort = (): void => this.fail(new TransportError("CLOSED", "DTLS connect aborted"), undefined);
  /** Statistics for tests and status. */
  readonly stats = { retransmissions: 0, dropped: 0, replayed: 0 };

  constructor(private readonly opts: DtlsClientOptions) {
    super();
    this.remoteAddress = opts.address;
    this.remotePort = opts.port;
    if (!opts.psk && !opts.certificate) throw new TransportError("CONFIG", "DTLS client: psk or certificate credentials are needed");
    try {
      const parsed = opts.certificate ? parsedClientCertificate(opts.certificate) : undefined;
      this.credentials = parsed?.credentials;
      this.trustAnchors = parsed?.anchors ?? [];
      this.certificateLocal = parsed?.local;
    } catch (e) {
      throw new TransportError("CONFIG", `DTLS client: ${(e as Error).message}`);
    }
    this.peer = opts.psk ? pskPeerIdentity(opts.psk.identity) : { method: "certificate" };
    this.local = opts.psk ? pskLocalIdentity(opts.psk.identity) : this.certificateLocal!;
    const names = opts.suites ?? [
      ...(opts.psk ? DEFAULT_DTLS_CLIENT_SUITES : []),
      ...(opts.certificate ? DEFAULT_DTLS_CLIENT_CERTIFICATE_SUITES : []),
    ];
    this.suites = names
      .map((n) => CIPHER_SUITES[n])
      .filter((s) => s !== undefined && (certificateKeyKind(s) ? opts.certificate !== undefined : opts.psk !== undefined));
    if (this.suites.length === 0) throw new TransportError("CONFIG", "DTLS client: no cipher suite to offer with these credentials");
    this.retransmitMs = opts.retransmitInitialMs ?? 1000;
    const from = opts.resumeFrom;
    if (
      from &&
      !resumptionUnusable(
        from,
        this.resumptionIdentity(),
        this.suites.map((s) => s.name),
      )
    ) {
      this.offer = { from, sessionId: randomBytes(32) };
    }
    this.on("newListener", (event: string | symbol) => {
      if (event === "message") setImmediate(() => this.flushQueue());
    });
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  /** What a ticket must have been issued to: our PSK identity, or our certificate and the ISP name we check. */
  private resumptionIdentity(): string {
    if (this.opts.psk) return this.opts.psk.identity;
    const spki = this.local.spki?.toString("base64") ?? "";
    return `certificate ${spki} ${this.opts.certificate?.servername ?? this.remoteAddress}`;
  }

  /** Read through a call so TypeScript does not narrow `state` across handlers that change it. */
  private done(): boolean {
    return this.state === "closed" || this.state === "connected";
  }

  /** Runs the handshake; rejects with a TransportError (alerts named as in auth-failure.ts). */
  handshake(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
      if (this.opts.signal?.aborted) return this.onAbort();
      this.opts.signal?.addEventListener("abort", this.onAbort, { once: true });
      const timeout = this.opts.handshakeTimeoutMs ?? 30_000;
      this.deadlineTimer = setTimeout(() => {
        // Timers run before pending I/O: after a busy spell the server's answer may already wait
        // in the socket. Read it first (setImmediate runs after this turn's poll phase).
        setImmediate(() => {
          if (this.done()) return;
          // OpenSSL drops a Finished it cannot verify without an alert: say where we were.
          const finished = this.state === "finished";
          const where = finished
            ? " waiting for the server's Finished (no answer to ours: a wrong PSK looks like this with some peers)"
            : "";
          // The server may hold this session as established (our Finished reached it): close it there.
          if (finished && this.write) this.sendAlert(AlertLevel.Warning, AlertDescription.CloseNotify);
          this.fail(
            new TransportError(
              "HANDSHAKE_TIMEOUT",
              `DTLS handshake with ${this.remoteAddress}:${this.remotePort} timed out after ${timeout} ms${where}`,
            ),
            undefined,
          );
        });
      }, timeout);
      const bindAddress = this.opts.localAddress;
      const socket = dgram.createSocket(this.opts.address.includes(":") ? "udp6" : "udp4");
      this.socket = socket;
      socket.on("message", (msg: Buffer) => this.onDatagram(msg));
      socket.on("error", (err: NodeJS.ErrnoException) => this.onSocketError(err));
      socket.bind({ port: 0, address: bindAddress }, () => {
        if (this.state === "closed") return;
        socket.connect(this.opts.port, this.opts.address, () => {
          if (this.state === "closed") return;
          try {
            const a = socket.address();
            this.localAddress = a.address;
            this.localPort = a.port;
          } catch {
            // closed meanwhile
          }
          this.sendClientHello();
        });
      });
    });
  }

  // ----------------------------------------------------------------------------- sending

  private sendClientHello(): void {
    const suiteIds = this.suites.map((s) => s.id);
    const ext: Buffer[] = [u16(ExtensionType.ExtendedMasterSecret), u16(0)];
    ext.push(u16(ExtensionType.RenegotiationInfo), u16(1), Buffer.from([0]));
    if (this.suites.some((s) => s.keyExchange !== "psk")) {
      const groups = [NamedGroup.x25519, NamedGroup.secp256r1];
      ext.push(u16(ExtensionType.SupportedGroups), u16(2 + 2 * groups.length), u16(2 * groups.length), ...groups.map(u16));
      ext.push(u16(ExtensionType.EcPointFormats), u16(2), Buffer.from([1, POINT_FORMAT_UNCOMPRESSED]));
    }
    if (this.suites.some((s) => certificateKeyKind(s) !== undefined)) {
      const schemes = VERIFIABLE_SIGNATURE_SCHEMES;
      ext.push(u16(ExtensionType.SignatureAlgorithms), u16(2 + 2 * schemes.length), u16(2 * schemes.length), ...schemes.map(u16));
    }
    // Always offered: empty asks for a ticket, else the ticket to resume with.
    ext.push(sessionTicketExtension(this.offer?.from.ticket));
    // RFC 9146: we send with the server's CID, so a NAT rebinding our port keeps the session; we ask
    // for none (empty) ourselves: our socket is connected and never moves.
    ext.push(u16(ExtensionType.ConnectionId), u16(1), Buffer.from([0]));
    const extBytes = Buffer.concat(ext);
    const sessionId = this.offer?.sessionId ?? Buffer.alloc(0);
    const body = Buffer.concat([
      u16(DTLS_1_2),
      this.clientRandom,
      Buffer.from([sessionId.length]),
      sessionId,
      Buffer.from([this.cookie.length]),
      this.cookie,
      u16(2 * suiteIds.length),
      ...suiteIds.map(u16),
      Buffer.from([1, 0]), // null compression
      u16(extBytes.length),
      extBytes,
    ]);
    const hello = encodeHandshake(HandshakeType.ClientHello, this.clientMessageSeq++, body);
    // The transcript starts at the ClientHello the server answers with ServerHello (RFC 6347 4.2.6).
    this.transcript = new Transcript(hello);
    this.startFlight([{ type: ContentType.Handshake, epoch: 0, body: hello }]);
  }

  private startFlight(records: FlightRecord[]): void {
    this.flight = records;
    this.retransmitMs = this.opts.retransmitInitialMs ?? 1000;
    this.transmitFlight();
  }

  private transmitFlight(): void {
    if (this.state === "closed" || this.state === "connected") return;
    this.sendRecords(this.flight);
    this.lastSent = Date.now();
    if (this.retransmitTimer) clearTimeout(this.retransmitTimer);
    this.retransmitTimer = setTimeout(() => {
      this.stats.retransmissions++;
      this.retransmitMs = Math.min(this.retransmitMs * 2, this.opts.retransmitMaxMs ?? 60_000);
      this.transmitFlight();
    }, this.retransmitMs);
  }

  private encodeRecordOut(type: number, epoch: 0 | 1, body: Buffer): Buffer {
    const seq = this.writeSeq[epoch]++;
    if (epoch === 0) return encodeRecord(type, DTLS_1_2, 0, seq, body);
    const cid = this.peerCid;
    if (cid) return encodeCidRecord(DTLS_1_2, 1, seq, cid, this.write!.encrypt(type, DTLS_1_2, 1, seq, innerPlaintext(type, body), cid));
    return encodeRecord(type, DTLS_1_2, 1, seq, this.write!.encrypt(type, DTLS_1_2, 1, seq, body));
  }

  private sendDatagram(datagram: Buffer): void {
    try {
      this.socket?.send(datagram);
    } catch {
      // socket closed: the close path reports
    }
  }

  private sendAlert(level: number, description: number): void {
    const epoch: 0 | 1 = this.write ? 1 : 0;
    this.sendDatagram(this.encodeRecordOut(ContentType.Alert, epoch, Buffer.from([level, description])));
  }

  // ----------------------------------------------------------------------------- receiving

  private onSocketError(err: NodeJS.ErrnoException): void {
    const code = err.code ?? "";
    if (this.state === "connected") {
      // ICMP unreachable on a connected socket: the peer is gone for now; CoAP's own timers decide.
      if (code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return;
      this.finish(new TransportError("CLOSED", `DTLS socket error: ${err.message}`));
      return;
    }
    const te = new TransportError("CONNECT_FAILED", `DTLS to ${this.remoteAddress}:${this.remotePort}: ${err.message}`);
    this.fail(te, undefined);
  }

  private onDatagram(msg: Buffer): void {
    try {
      this.handleDatagram(msg);
    } catch (e) {
      if (e instanceof DtlsDecodeError)
        this.fail(this.handshakeError(`malformed handshake message: ${e.message}`), AlertDescription.DecodeError);
      else
        this.fail(
          new TransportError("HANDSHAKE_FAILED", `DTLS client internal error: ${(e as Error).message}`),
          AlertDescription.InternalError,
        );
    }
  }

  private handleDatagram(msg: Buffer): void {
    if (this.state === "closed") return;
    const { records } = parseDatagram(msg, MAX_DATAGRAM_FRAGMENT);
    for (const r of records) {
      if (this.closed) return;
      if (r.version !== DTLS_1_2 && !(r.version === DTLS_1_0 && r.epoch === 0)) {
        this.stats.dropped++;
        continue;
      }
      let plaintext: Buffer;
      if (r.epoch === 0) {
        // After the handshake nothing unauthenticated is trusted (a forged plaintext alert must not end a session).
        if (this.state === "connected") {
          this.stats.dropped++;
          continue;
        }
        plaintext = r.fragment;
      } else if (r.epoch === 1 && this.read) {
        if (!this.replay.isFresh(r.sequence)) {
          this.stats.replayed++;
          continue;
        }
        const p = this.read.decrypt(r.type, r.version, r.epoch, r.sequence, r.fragment);
        if (!p) {
          this.stats.dropped++; // forged or corrupted: dropped silently (RFC 6347 4.1.2.7)
          continue;
        }
        this.replay.mark(r.sequence);
        plaintext = p;
      } else {
        this.stats.dropped++;
        continue;
      }
      this.handleRecord(r.type, r.epoch, plaintext);
    }
  }

  private handleRecord(type: number, epoch: number, plaintext: Buffer): void {
    switch (type) {
      case ContentType.Alert:
        return this.handleAlert(plaintext);
      case ContentType.Handshake:
        return this.handleHandshakeRecord(epoch, plaintext);
      case ContentType.ChangeCipherSpec:
        return; // the epoch number carries the switch; the message itself says nothing more
      case ContentType.ApplicationData:
        if (this.state !== "connected" || epoch !== 1) {
          this.stats.dropped++;
          return;
        }
        return this.deliver(plaintext);
    }
  }

  private handleAlert(p: Buffer): void {
    if (p.length !== 2) return;
    const [level, description] = [p[0], p[1]];
    if (description === AlertDescription.CloseNotify) {
      if (this.state === "connected") {
        this.sendAlert(AlertLevel.Warning, AlertDescription.CloseNotify);
        this.finish();
      } else this.fail(this.handshakeError("server sent close_notify during the handshake"), undefined);
      return;
    }
    if (level === AlertLevel.Warning) return; // e.g. no_renegotiation: nothing to do
    const text = `fatal alert: ${alertName(description)} (${description}) from ${this.remoteAddress}:${this.remotePort}`;
    if (this.state === "connected") this.finish(new TransportError("CLOSED", `DTLS connection ended: ${text}`));
    else this.fail(this.handshakeError(`DTLS handshake failed: ${text}`), undefined);
  }

  private handleHandshakeRecord(epoch: number, plaintext: Buffer): void {
    if (this.state === "connected") {
      // A late copy of the server's flight; renegotiation is not offered. After an abbreviated
      // handshake we sent the last flight: an authenticated repeat of the server's means ours was lost.
      if (epoch === 1 && this.finalFlight && Date.now() - this.lastFinalResend > this.retransmitMs / 4) {
        this.lastFinalResend = Date.now();
        this.stats.retransmissions++;
        this.sendRecords(this.finalFlight);
      }
      return;
    }
    for (const f of parseHandshakeFragments(plaintext)) {
      if (epoch === 0 && f.msgType === HandshakeType.Finished) throw new DtlsDecodeError("Finished in epoch 0");
      const fed = this.reassembler.feed(f);
      if (fed === "old") {
        // The server repeats its previous flight: ours was lost; answer it now rather than at the timer (4.2.4).
        if (this.state === "finished" && Date.now() - this.lastSent > this.retransmitMs / 4) this.transmitFlight();
        continue;
      }
      // A message keeps the epoch it came in: an epoch-1 Finished that arrived before the epoch-0
      // NewSessionTicket ahead of it is taken while that ticket's record is being read.
      if (fed === "accepted") this.messageEpochs.set(f.messageSeq, epoch);
      for (let m = this.reassembler.take(); m; m = this.reassembler.take()) {
        const messageEpoch = this.messageEpochs.get(m.messageSeq) ?? epoch;
        this.messageEpochs.delete(m.messageSeq);
        this.handleMessage(m, messageEpoch);
        if (this.done()) return;
      }
    }
  }

  private handleMessage(m: CompleteMessage, epoch: number): void {
    if (this.state === "hello" && m.msgType === HandshakeType.HelloVerifyRequest) return this.onHelloVerifyRequest(m);
    if (this.state === "hello" && epoch === 0 && m.msgType === HandshakeType.ServerHello && this.offer) {
      if (parseServerHello(m.body).sessionId.equals(this.offer.sessionId)) return this.onResumedServerHello(m);
      this.offer = undefined; // ticket refused: full handshake, the old ticket is dropped
    }
    if (this.state === "resumed") {
      if (epoch === 0 && m.msgType === HandshakeType.NewSessionTicket && this.ticketPromised && !this.newTicket) {
        return this.onNewSessionTicket(m);
      }
      if (epoch === 1 && m.msgType === HandshakeType.Finished && (!this.ticketPromised || this.newTicket)) return this.onServerFinished(m);
      return this.unexpected(m);
    }
    if (
      this.state === "finished" &&
      epoch === 0 &&
      m.msgType === HandshakeType.NewSessionTicket &&
      this.ticketPromised &&
      !this.newTicket
    ) {
      return this.onNewSessionTicket(m);
    }
    if ((this.state === "hello" || this.state === "flight4") && epoch === 0) {
      if (this.state === "hello" && m.msgType !== HandshakeType.ServerHello) return this.unexpected(m);
      this.state = "flight4";
      if (this.serverFlight.length >= MAX_SERVER_FLIGHT_MESSAGES) return this.unexpected(m);
      this.serverFlight.push(m);
      if (m.msgType === HandshakeType.ServerHelloDone) this.onServerHelloDone();
      return;
    }
    if (this.state === "finished" && epoch === 1 && m.msgType === HandshakeType.Finished && (!this.ticketPromised || this.newTicket)) {
      return this.onServerFinished(m);
    }
    this.unexpected(m);
  }

  private unexpected(m: CompleteMessage): void {
    this.fail(this.handshakeError(`unexpected handshake message ${m.msgType} in state ${this.state}`), AlertDescription.UnexpectedMessage);
  }

  private onHelloVerifyRequest(m: CompleteMessage): void {
    const b = m.body;
    if (b.length < 3 || b.length !== 3 + b[2] || b[2] > 255) throw new DtlsDecodeError("bad HelloVerifyRequest");
    if (++this.cookieExchanges > MAX_COOKIE_EXCHANGES) {
      this.fail(this.handshakeError("server keeps asking for a cookie"), AlertDescription.HandshakeFailure);
      return;
    }
    this.cookie = Buffer.from(b.subarray(3));
    // The server's next message follows the HelloVerifyRequest's sequence number.
    this.reassembler = new HandshakeReassembler(m.messageSeq + 1, REASSEMBLY_LIMITS);
    this.messageEpochs.clear();
    this.sendClientHello();
  }

  private onServerHelloDone(): void {
    if (this.retransmitTimer) clearTimeout(this.retransmitTimer);
    const msgs = this.serverFlight;
    const hello = msgs[0];
    const sh = parseServerHello(hello.body);
    const suite = this.suites.find((s) => s.id === sh.suite);
    if (!suite)
      return this.fail(
        this.handshakeError(`server chose suite 0x${sh.suite.toString(16)} that was not offered`),
        AlertDescription.IllegalParameter,
      );
    if (sh.version !== DTLS_1_2)
      return this.fail(this.handshakeError(`server version 0x${sh.version.toString(16)}`), AlertDescription.ProtocolVersion);
    if (sh.compression !== 0) return this.fail(this.handshakeError("server chose compression"), AlertDescription.IllegalParameter);
    this.suite = suite;
    this.serverRandom = sh.random;
    this.extendedMasterSecret = sh.extensions.has(ExtensionType.ExtendedMasterSecret);
    const extensionError = unofferedExtension(sh);
    if (extensionError) return this.fail(this.handshakeError(extensionError), AlertDescription.UnsupportedExtension);
    this.peerCid = serverCid(sh);
    this.ticketPromised = sh.extensions.has(ExtensionType.SessionTicket);
    const middle = msgs.slice(1, -1);
    if (certificateKeyKind(suite) !== undefined) return this.onCertificateFlight(msgs, middle, suite, sh.random);
    const ske = middle.find((m) => m.msgType === HandshakeType.ServerKeyExchange);
    const other = middle.find((m) => m.msgType !== HandshakeType.ServerKeyExchange);
    if (other) return this.unexpected(other); // Certificate / CertificateRequest: not in the PSK profile
    let ecdh: { secret: Buffer; point: Buffer } | undefined;
    if (suite.keyExchange === "ecdhe_psk") {
      if (!ske) return this.fail(this.handshakeError("no ServerKeyExchange for ECDHE_PSK"), AlertDescription.UnexpectedMessage);
      const params = parseEcdhePskServerKeyExchange(ske.body);
      if (!isSupportedGroup(params.group) || ![NamedGroup.x25519, NamedGroup.secp256r1].includes(params.group as 29)) {
        return this.fail(
          this.handshakeError(`server chose ECDH group ${params.group} that was not offered`),
          AlertDescription.IllegalParameter,
        );
      }
      const own = generateEphemeralKey(params.group);
      const secret = own.derive(params.point);
      if (!secret) return this.fail(this.handshakeError("server sent an invalid ECDH public value"), AlertDescription.IllegalParameter);
      this.group = params.group;
      ecdh = { secret, point: own.publicKey };
    } else if (ske) {
      parsePskServerKeyExchange(ske.body); // identity hint: validated, not used (one identity per dialer)
    }
    for (const m of msgs) this.transcript.add(encodeHandshake(m.msgType, m.messageSeq, m.body));

    const psk = this.opts.psk!;
    const identity = Buffer.from(psk.identity, "utf8");
    const ckeParts = [u16(identity.length), identity];
    if (ecdh) ckeParts.push(Buffer.from([ecdh.point.length]), ecdh.point);
    this.clientMessageSeq = Math.max(this.clientMessageSeq, 2);
    const cke = encodeHandshake(HandshakeType.ClientKeyExchange, this.clientMessageSeq++, Buffer.concat(ckeParts));
    this.transcript.add(cke);
    const premaster = ecdh ? ecdhePskPremasterSecret(ecdh.secret, psk.key) : pskPremasterSecret(psk.key);
    const master = masterSecret(premaster, this.clientRandom, sh.random, this.extendedMasterSecret ? this.transcript.digest() : undefined);
    premaster.fill(0);
    this.sendFinishedFlight(master, sh.random, suite, [{ type: ContentType.Handshake, epoch: 0, body: cke }]);
  }

  /**
   * The end of every full handshake: record keys from the master secret, our Finished over the
   * transcript, and flight 5 (`epoch0`, already in the transcript, then ChangeCipherSpec and Finished).
   */
  private sendFinishedFlight(master: Buffer, serverRandom: Buffer, suite: CipherSuiteInfo, epoch0: FlightRecord[]): void {
    this.master = master;
    const keys = aeadKeyBlock(master, this.clientRandom, serverRandom, suite.keyLength, suite.fixedIvLength);
    this.write = new AeadState(suite, keys.clientKey, keys.clientSalt);
    this.read = new AeadState(suite, keys.serverKey, keys.serverSalt);
    const finished = encodeHandshake(
      HandshakeType.Finished,
      this.clientMessageSeq++,
      finishedVerifyData(master, "client finished", this.transcript.digest()),
    );
    this.transcript.add(finished);
    this.cipher = `DTLSv1.2 ${suite.name}`;
    this.state = "finished";
    this.startFlight([
      ...epoch0,
      { type: ContentType.ChangeCipherSpec, epoch: 0, body: Buffer.from([1]) },
      { type: ContentType.Handshake, epoch: 1, body: finished },
    ]);
  }

  /**
   * ECDHE_ECDSA / ECDHE_RSA flight 4 (RFC 8422 5.2-5.6): the server's chain checked against our CAs and the name,
   * its signed ECDH point verified; then our Certificate (when asked), ClientKeyExchange,
   * CertificateVerify, ChangeCipherSpec and Finished.
   */
  private onCertificateFlight(msgs: CompleteMessage[], middle: CompleteMessage[], suite: CipherSuiteInfo, serverRandom: Buffer): void {
    const [certMsg, skeMsg, ...rest] = middle;
    const request = rest[0];
    if (certMsg?.msgType !== HandshakeType.Certificate) return this.unexpected(certMsg ?? msgs[msgs.length - 1]);
    if (skeMsg?.msgType !== HandshakeType.ServerKeyExchange) return this.unexpected(skeMsg ?? msgs[msgs.length - 1]);
    if (rest.length > 1 || (request && request.msgType !== HandshakeType.CertificateRequest)) return this.unexpected(rest[rest.length - 1]);
    const chain = parseCertificateMessage(certMsg.body);
    if (chain.length === 0) return this.fail(this.authError("the ISP sent no certificate"), AlertDescription.HandshakeFailure);
    const name = this.opts.certificate?.servername ?? this.remoteAddress;
    const check = checkPeerChain(chain, this.trustAnchors, { role: "server", name });
    if (!check.ok)
      return this.fail(this.authError(`ISP certificate${check.subject ? ` (${check.subject})` : ""}: ${check.detail}`), check.alert);
    // RFC 5246 7.4.2: the key must be the kind the chosen suite signs with.
    const serverKind = certificateKeyKindOf(check.leaf.publicKey);
    if (serverKind !== certificateKeyKind(suite))
      return this.fail(
        this.authError(`the ISP chose ${suite.name} but its certificate key is ${keyKindLabel(serverKind)}`),
        AlertDescription.UnsupportedCertificate,
      );
    const ske = parseSignedServerKeyExchange(skeMsg.body);
    if (ske.group !== NamedGroup.x25519 && ske.group !== NamedGroup.secp256r1)
      return this.fail(this.handshakeError(`server chose ECDH group ${ske.group} that was not offered`), AlertDescription.IllegalParameter);
    if (!verifyParts(check.leaf, [this.clientRandom, serverRandom, ske.params], ske.scheme, ske.signature))
      return this.fail(
        this.authError("the ISP's ServerKeyExchange signature does not verify with its certificate"),
        AlertDescription.DecryptError,
      );
    // Asked for a certificate: ours when the server takes its key type and one of its schemes; else an empty Certificate.
    let verifyScheme: number | undefined;
    if (request) {
      const req = parseCertificateRequest(request.body);
      const kind = this.credentials?.kind;
      if (kind && req.certificateTypes.includes(clientCertificateType(kind)))
        verifyScheme = pickSignatureScheme(kind, req.signatureAlgorithms);
    }
    const sendCertificate = verifyScheme !== undefined;
    const own = generateEphemeralKey(ske.group);
    const secret = own.derive(ske.point);
    if (!secret) return this.fail(this.handshakeError("server sent an invalid ECDH public value"), AlertDescription.IllegalParameter);
    this.group = ske.group;
    this.peer = certificatePeerIdentity(chain[0]);
    for (const m of msgs) this.transcript.add(encodeHandshake(m.msgType, m.messageSeq, m.body));
    this.clientMessageSeq = Math.max(this.clientMessageSeq, 2);
    const out: Buffer[] = [];
    if (request) {
      const certificate = encodeHandshake(
        HandshakeType.Certificate,
        this.clientMessageSeq++,
        encodeCertificateMessage(sendCertificate ? this.credentials!.chain : []),
      );
      out.push(certificate);
      this.transcript.add(certificate);
    }
    const cke = encodeHandshake(HandshakeType.ClientKeyExchange, this.clientMessageSeq++, encodeEcdhClientKeyExchange(own.publicKey));
    out.push(cke);
    this.transcript.add(cke);
    // The extended master secret's session hash ends with the ClientKeyExchange (RFC 7627 3).
    const master = masterSecret(secret, this.clientRandom, serverRandom, this.extendedMasterSecret ? this.transcript.digest() : undefined);
    secret.fill(0);
    if (verifyScheme !== undefined) {
      const verify = encodeHandshake(
        HandshakeType.CertificateVerify,
        this.clientMessageSeq++,
        encodeDigitallySigned(verifyScheme, signParts(this.credentials!.key, verifyScheme, this.transcript.messages)),
      );
      out.push(verify);
      this.transcript.add(verify);
    }
    this.sendFinishedFlight(
      master,
      serverRandom,
      suite,
      out
        .flatMap((m) => fragmentHandshake(m, FLIGHT_FRAGMENT_BODY))
        .map((body) => ({ type: ContentType.Handshake, epoch: 0 as const, body })),
    );
  }

  /** A refusal of the ISP's credentials: not retried (a wrong CA or name does not heal by itself). */
  private authError(message: string): TransportError {
    return new TransportError("AUTH_FAILED", `DTLS handshake failed: ${message}`);
  }

  /** The server echoed our session_id: it accepted the ticket (RFC 5077 3.4; RFC 5246 7.3 Figure 2). */
  private onResumedServerHello(m: CompleteMessage): void {
    const from = this.offer!.from;
    const sh = parseServerHello(m.body);
    const suite = this.suites.find((s) => s.id === sh.suite);
    if (sh.version !== DTLS_1_2)
      return this.fail(this.handshakeError(`server version 0x${sh.version.toString(16)}`), AlertDescription.ProtocolVersion);
    if (!suite || suite.name !== from.suite)
      return this.fail(
        this.handshakeError(`server resumed with suite 0x${sh.suite.toString(16)}, not the session's ${from.suite}`),
        AlertDescription.IllegalParameter,
      );
    if (sh.compression !== 0) return this.fail(this.handshakeError("server chose compression"), AlertDescription.IllegalParameter);
    const extensionError = unofferedExtension(sh);
    if (extensionError) return this.fail(this.handshakeError(extensionError), AlertDescription.UnsupportedExtension);
    this.peerCid = serverCid(sh); // RFC 9146 3: negotiated afresh on resumption
    // RFC 7627 5.3: the resumed session must agree with the original on extended master secret.
    if (sh.extensions.has(ExtensionType.ExtendedMasterSecret) !== from.extendedMasterSecret)
      return this.fail(
        this.handshakeError("server resumed a session with a different extended_master_secret state"),
        AlertDescription.HandshakeFailure,
      );
    // A certificate session resumes with the ISP it was made with: the one the ticket's master secret proves.
    if (from.serverIdentity) this.peer = from.serverIdentity;
    this.ticketAccepted = true;
    this.suite = suite;
    this.serverRandom = sh.random;
    this.extendedMasterSecret = from.extendedMasterSecret;
    this.ticketPromised = sh.extensions.has(ExtensionType.SessionTicket);
    this.transcript.add(encodeHandshake(m.msgType, m.messageSeq, m.body));
    const master = Buffer.alloc(48);
    from.masterSecret.copy(master);
    this.master = master;
    const keys = aeadKeyBlock(master, this.clientRandom, sh.random, suite.keyLength, suite.fixedIvLength);
    this.write = new AeadState(suite, keys.clientKey, keys.clientSalt);
    this.read = new AeadState(suite, keys.serverKey, keys.serverSalt);
    this.cipher = `DTLSv1.2 ${suite.name}`;
    // The ClientHello timer keeps running: a repeat makes the server repeat a flight we lost part of.
    this.state = "resumed";
  }

  private onNewSessionTicket(m: CompleteMessage): void {
    const t = parseNewSessionTicket(m.body);
    this.newTicket = { ...t, receivedAt: Date.now() };
    this.transcript.add(encodeHandshake(m.msgType, m.messageSeq, m.body));
  }

  private onServerFinished(m: CompleteMessage): void {
    const expected = finishedVerifyData(this.master!, "server finished", this.transcript.digest());
    if (m.body.length !== expected.length || !timingSafeEqual(m.body, expected)) {
      this.fail(
        this.handshakeError(
          this.state === "resumed"
            ? "server Finished of the resumed session did not verify"
            : this.opts.psk
              ? `server Finished did not verify (wrong PSK for identity ${JSON.stringify(this.opts.psk.identity)}?)`
              : "server Finished did not verify",
        ),
        AlertDescription.DecryptError,
      );
      return;
    }
    if (this.state === "resumed") {
      this.transcript.add(encodeHandshake(m.msgType, m.messageSeq, m.body));
      const finished = encodeHandshake(
        HandshakeType.Finished,
        this.clientMessageSeq++,
        finishedVerifyData(this.master!, "client finished", this.transcript.digest()),
      );
      this.transcript.add(finished);
      this.finalFlight = [
        { type: ContentType.ChangeCipherSpec, epoch: 0, body: Buffer.from([1]) },
        { type: ContentType.Handshake, epoch: 1, body: finished },
      ];
      this.lastFinalResend = Date.now();
      this.sendRecords(this.finalFlight);
      this.resumed = true;
    }
    this.resumption = this.sessionToKeep();
    this.handshakeTypes = this.transcript.messages.map((b) => b[0]);
    this.master?.fill(0);
    this.master = undefined;
    this.transcript = new Transcript();
    this.serverFlight = [];
    this.flight = [];
    this.state = "connected";
    this.clearTimers();
    const s = this.settle;
    this.settle = undefined;
    s?.resolve();
  }

  /** What `resumption` holds after the handshake (RFC 5077 3.3: an empty ticket withdraws the offer). */
  private sessionToKeep(): DtlsResumption | undefined {
    if (this.newTicket) {
      if (this.newTicket.ticket.length === 0) return undefined;
      const masterSecret = Buffer.alloc(48);
      this.master!.copy(masterSecret);
      return {
        ticket: this.newTicket.ticket,
        masterSecret,
        suite: this.suite!.name,
        extendedMasterSecret: this.extendedMasterSecret,
        pskIdentity: this.resumptionIdentity(),
        ...(this.peer.method === "certificate" ? { serverIdentity: this.peer } : {}),
        receivedAt: this.newTicket.receivedAt,
        lifetimeHintS: this.newTicket.lifetimeHintS,
      };
    }
    // Resumed without a new ticket: the one we used stays valid (RFC 5077 3.4).
    return this.state === "resumed" ? this.offer?.from : undefined;
  }

  /** A flight's records, packed into datagrams of at most FLIGHT_DATAGRAM_BYTES (one, without certificates). */
  private sendRecords(records: FlightRecord[]): void {
    let current: Buffer[] = [];
    let size = 0;
    for (const r of records) {
      const record = this.encodeRecordOut(r.type, r.epoch, r.body);
      if (size > 0 && size + record.length > FLIGHT_DATAGRAM_BYTES) {
        this.sendDatagram(Buffer.concat(current, size));
        current = [];
        size = 0;
      }
      current.push(record);
      size += record.length;
    }
    if (size > 0) this.sendDatagram(Buffer.concat(current, size));
  }

  private handshakeError(message: string): TransportError {
    const m = message.startsWith("DTLS") ? message : `DTLS handshake failed: ${message}`;
    const code =
      /fatal alert: (unknown_psk_identity|decrypt_error|bad_record_mac|access_denied|illegal_parameter|unknown_ca|bad_certificate|unsupported_certificate|certificate_revoked|certificate_expired|certificate_unknown)|Finished did not verify/.test(
        m,
      )
        ? "AUTH_FAILED"
        : "HANDSHAKE_FAILED";
    return new TransportError(code, m);
  }

  /** Ends the handshake: optional fatal alert, socket closed, the handshake promise rejected. */
  private fail(err: TransportError, alert: number | undefined): void {
    if (this.state === "closed") return;
    if (this.state === "connected") {
      this.finish(err);
      return;
    }
    if (alert !== undefined) this.sendAlert(AlertLevel.Fatal, alert);
    this.teardown();
    const s = this.settle;
    this.settle = undefined;
    s?.reject(err);
  }

  // ----------------------------------------------------------------------------- connection

  private deliver(data: Buffer): void {
    this.finalFlight = undefined; // the server is past its Finished: ours arrived
    if (this.listenerCount("message") === 0) {
      if (this.queue.length < MAX_QUEUED_MESSAGES) this.queue.push(data);
      else this.stats.dropped++;
      return;
    }
    this.emitMessage(data);
  }

  private emitMessage(data: Buffer): void {
    try {
      this.emit("message", data);
    } catch (e) {
      // A consumer bug must not escape into the UDP handler; end this connection instead.
      this.finish(e as Error);
    }
  }

  /** Hands queued messages to the first listener (datagrams that arrived right after the handshake). */
  private flushQueue(): void {
    while (this.queue.length > 0 && this.state === "connected" && this.listenerCount("message") > 0) this.emitMessage(this.queue.shift()!);
  }

  /** One datagram per call. Throws TransportError FRAME_TOO_LARGE above maxMessageSize. */
  send(data: Buffer): boolean {
    if (this.state !== "connected") return false;
    const max = this.opts.maxMessageSize ?? 16384;
    if (data.length > max) throw new TransportError("FRAME_TOO_LARGE", `${data.length} bytes exceed the DTLS message limit of ${max}`);
    this.sendDatagram(this.encodeRecordOut(ContentType.ApplicationData, 1, data));
    return true;
  }

  /** close_notify, then the socket closes; 'close' once. */
  close(): void {
    if (this.state === "closed") return;
    if (this.state === "connected") {
      const record = this.encodeRecordOut(ContentType.Alert, 1, Buffer.from([AlertLevel.Warning, AlertDescription.CloseNotify]));
      this.state = "closed";
      this.clearTimers();
      try {
        if (this.socket) this.socket.send(record, () => this.closeSocket());
      } catch {
        this.closeSocket();
      }
      // Asynchronously, as node's sockets do: the caller finishes its own close before 'close' runs.
      setImmediate(() => this.emit("close"));
      return;
    }
    this.fail(new TransportError("CLOSED", "DTLS connection closed during the handshake"), AlertDescription.UserCanceled);
  }

  private finish(err?: Error): void {
    if (this.state === "closed") return;
    this.teardown();
    this.emit("close", err);
  }

  private teardown(): void {
    this.state = "closed";
    this.clearTimers();
    this.master?.fill(0);
    this.master = undefined;
    this.closeSocket();
  }

  private clearTimers(): void {
    if (this.retransmitTimer) clearTimeout(this.retransmitTimer);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.retransmitTimer = this.deadlineTimer = undefined;
    this.opts.signal?.removeEventListener("abort", this.onAbort);
  }

  private closeSocket(): void {
    try {
      this.socket?.close();
    } catch {
      // already closed
    }
  }
}

/**
 * Parsed certificate credentials by their PEM text: a home reconnecting (or a bench dialling a
 * thousand times) does not parse its key, chain and CAs again (about 1 ms each time). Bounded.
 */
const parsedCertificates = new Map<
  string,
  { credentials: CertificateCredentials; anchors: ReturnType<typeof loadTrustAnchors>; local: LocalIdentity }
>();
const MAX_PARSED_CERTIFICATES = 16;

function parsedClientCertificate(c: DtlsClientCertificateOptions): {
  credentials: CertificateCredentials;
  anchors: ReturnType<typeof loadTrustAnchors>;
  local: LocalIdentity;
} {
  const h = createHash("sha256");
  for (const part of [c.cert, c.key, ...(Array.isArray(c.ca) ? c.ca : [c.ca]), c.passphrase ?? ""]) h.update(part).update("\0");
  const key = h.digest("base64");
  let hit = parsedCertificates.get(key);
  if (!hit) {
    hit = { credentials: loadCertificateCredentials(c), anchors: loadTrustAnchors(c.ca), local: certificateLocalIdentity(c.cert) };
    parsedCertificates.set(key, hit);
    if (parsedCertificates.size > MAX_PARSED_CERTIFICATES) parsedCertificates.delete(parsedCertificates.keys().next().value as string);
  }
  return hit;
}

/** Dials and completes one handshake; the socket is freed on failure. */
export async function dtlsClientConnect(opts: DtlsClientOptions): Promise<DtlsClient> {
  const c = new DtlsClient(opts);
  await c.handshake();
  return c;
}

// ----------------------------------------------------------------------------- parsers

/** An error text when the ServerHello carries an extension we did not offer, or one with bad content. */
function unofferedExtension(sh: ServerHello): string | undefined {
  for (const [t, data] of sh.extensions) {
    if (t === ExtensionType.SessionTicket) {
      if (data.length !== 0) return "server sent a SessionTicket extension with data";
      continue;
    }
    if (t === ExtensionType.ConnectionId) {
      if (data.length < 1 || data.length !== 1 + data[0]) return "server sent a malformed connection_id extension";
      continue;
    }
    if (![ExtensionType.ExtendedMasterSecret, ExtensionType.RenegotiationInfo, ExtensionType.EcPointFormats].includes(t as 0x17)) {
      return `server sent extension ${t} that was not offered`;
    }
  }
  return undefined;
}

/** The CID the server wants in our records (RFC 9146 3), or undefined (none, or empty: plain records). */
function serverCid(sh: ServerHello): Buffer | undefined {
  const data = sh.extensions.get(ExtensionType.ConnectionId);
  if (!data || data[0] === 0) return undefined;
  return Buffer.from(data.subarray(1));
}

interface ServerHello {
  version: number;
  random: Buffer;
  sessionId: Buffer;
  suite: number;
  compression: number;
  extensions: Map<number, Buffer>;
}

function parseServerHello(body: Buffer): ServerHello {
  const r = new Reader(body);
  const version = r.u16();
  const random = Buffer.from(r.bytes(32));
  const sessionId = r.bytes(r.u8());
  if (sessionId.length > 32) throw new DtlsDecodeError("session_id longer than 32");
  const suite = r.u16();
  const compression = r.u8();
  const extensions = new Map<number, Buffer>();
  if (r.remaining > 0) {
    const ext = new Reader(r.bytes(r.u16()));
    while (ext.remaining > 0) {
      const type = ext.u16();
      const data = ext.bytes(ext.u16());
      if (extensions.has(type)) throw new DtlsDecodeError(`duplicate extension ${type}`);
      extensions.set(type, data);
    }
  }
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ServerHello");
  const emsData = extensions.get(ExtensionType.ExtendedMasterSecret);
  if (emsData && emsData.length !== 0) throw new DtlsDecodeError("extended_master_secret with data");
  const reneg = extensions.get(ExtensionType.RenegotiationInfo);
  if (reneg && (reneg.length !== 1 || reneg[0] !== 0)) throw new DtlsDecodeError("renegotiation_info not empty");
  return { version, random, sessionId, suite, compression, extensions };
}

function parsePskServerKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body);
  const hint = r.bytes(r.u16());
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after psk_identity_hint");
  return hint;
}

function parseEcdhePskServerKeyExchange(body: Buffer): { hint: Buffer; group: number; point: Buffer } {
  const r = new Reader(body);
  const hint = r.bytes(r.u16());
  if (r.u8() !== 3) throw new DtlsDecodeError("ServerKeyExchange: not a named curve");
  const group = r.u16();
  const point = r.bytes(r.u8());
  if (point.length === 0) throw new DtlsDecodeError("empty ECDH public value");
  if (r.remaining !== 0) throw new DtlsDecodeError("trailing bytes after ServerECDHParams");
  return { hint, group, point };
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n, 0);
  return b;
}
