// DTLS 1.2 PSK server (RFC 6347, RFC 4279, and ECDHE_PSK from RFC 5489) for many peers on one UDP socket.
// No per-peer state exists before a ClientHello returns with a valid stateless cookie; every
// datagram is handled inside a guard so peer input can never throw out of the socket handler.
// Choices worth knowing:
// - Records that fail authentication are dropped without any state change, except a Finished-sized
//   handshake record while we wait for Finished: that is a PSK mismatch and ends the handshake with
//   decrypt_error (51), so the listener can count failed authentications.
// - A ClientHello with a valid cookie (return-routable) and a new random from the address and port
//   of an existing session replaces it: the client restarted (RFC 6347 4.2.8).
// - Renegotiation (a ClientHello inside the session) gets a no_renegotiation warning.
// - Plaintext alerts are believed only during the handshake; afterwards only protected ones.
// - ECDHE_PSK (forward secrecy) is preferred by default when the client offers it; the ephemeral
//   key pair exists only from the ClientHello to the ClientKeyExchange.
import * as dgram from "node:dgram";
import { EventEmitter } from "node:events";
import { lookup as dnsLookup, type LookupOneOptions } from "node:dns";
import { isIPv4 } from "node:net";
import { timingSafeEqual } from "node:crypto";
import { pooledRandomBytes } from "../random-pool";
import {
  AlertDescription,
  AlertLevel,
  CIPHER_SUITES,
  ContentType,
  DTLS_1_0,
  DTLS_1_2,
  HandshakeType,
  NamedGroup,
  DEFAULT_MAX_HANDSHAKING_PER_SOURCE,
  POINT_FORMAT_UNCOMPRESSED,
  certificateKeyKind,
  keyBlockLength,
  type CipherSuiteInfo,
  type DtlsCipherSuiteName,
  type DtlsNamedGroupName,
} from "./constants";
import { generateEphemeralKey, type EphemeralKey } from "./ecdhe";
import { aeadOverhead, openRecord, sealRecord } from "./cipher";
import { SecretSlab } from "./secret-slab";
import { sourceGroup } from "../drop-list";
import { CookieJar } from "./cookie";
import {
  DtlsDecodeError,
  HandshakeReassembler,
  buildEcdhePskServerKeyExchange,
  buildHelloVerifyRequest,
  buildPskServerKeyExchange,
  buildServerHello,
  encodeHandshake,
  fragmentHandshake,
  parseClientHello,
  parseHandshakeFragments,
  parseEcdhePskClientKeyExchange,
  parsePskClientKeyExchange,
  type ClientHello,
  type CompleteMessage,
  type HandshakeFragment,
} from "./handshake";
import { ecdhePskPremasterSecret, finishedVerifyData, keyExpansion, masterSecret, pskPremasterSecret } from "./prf";
import { encodeCidRecord, encodeRecord, innerPlaintext, openInnerPlaintext, parseDatagram, type DtlsRecord } from "./record";
import { ReplayWindow } from "./replay";
import { DtlsServerConnection, type DtlsConnectionOwner } from "./connection";
import type { X509Certificate } from "node:crypto";
import type { LocalIdentity } from "../connection";
import { certificateLocalIdentity } from "../identity";
import {
  buildCertificateRequest,
  buildSignedServerKeyExchange,
  encodeCertificateMessage,
  encodeEcdheParams,
  loadCertificateCredentials,
  loadTrustAnchors,
  parseCertificateMessage,
  parseCertificateVerify,
  keyKindLabel,
  parseEcdhClientKeyExchange,
  pickSignatureScheme,
  signParts,
  verifyParts,
  VerifiedCertificates,
  type AcceptedCertificate,
  type SealedCertificate,
  type CertificateCredentials,
  type CertificateKeyKind,
  type PemInput,
} from "./certificate";
import { Transcript } from "./transcript";
import { TicketKeys, buildNewSessionTicket, fitsTicket, pskDigest, type TicketState } from "./ticket";
import { PeerTable } from "./peer-table";

export type { DtlsCipherSuiteName, DtlsNamedGroupName } from "./constants";

/** Default preference: ECDHE_PSK first (forward secrecy), then the plain PSK suites node-dtls-client offers. */
export const DEFAULT_DTLS_CIPHER_SUITES: readonly DtlsCipherSuiteName[] = Object.freeze([
  "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_128_CCM_8",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
] as const);
/** With a certificate configured: the suites its key signs for, after ECDHE_PSK, before plain PSK. */
const CERTIFICATE_SUITES: Readonly<Record<CertificateKeyKind, readonly DtlsCipherSuiteName[]>> = {
  ec: ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
  rsa: ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
};
export const DEFAULT_DTLS_GROUPS: readonly DtlsNamedGroupName[] = Object.freeze(["x25519", "secp256r1"] as const);

/**
 * Certificate authentication (ECDHE_ECDSA or ECDHE_RSA suites, RFC 8422): our chain and key, and the
 * CAs homes' certificates (EC P-256 or RSA) must chain to.
 */
export interface DtlsServerCertificateOptions {
  /** PEM chain, leaf first; the key must be EC P-256 (ECDHE_ECDSA suites) or RSA >= 2048 bits (ECDHE_RSA). */
  cert: PemInput;
  key: PemInput;
  passphrase?: string;
  /** Trusted CA certificate(s) for client certificates. */
  ca?: PemInput | PemInput[];
  /** Ask for and require a client certificate (default true: mutual authentication, RFC 9132 7.1). */
  requireClientCert?: boolean;
}

export interface DtlsServerOptions {
  /** identity -> key; undefined = unknown identity (alert 115). May be async. Without it, no PSK suite is offered. */
  pskLookup?(identity: string, remote: { address: string; port: number }): Buffer | undefined | Promise<Buffer | undefined>;
  /** Serve certificate clients too (ECDHE_ECDSA or ECDHE_RSA suites, after the key). */
  certificate?: DtlsServerCertificateOptions;
  pskHint?: string;
  /**
   * Server preference order; the first one the client also offers wins. Default
   * DEFAULT_DTLS_CIPHER_SUITES: ECDHE_PSK ChaCha20-Poly1305, then PSK AES-128-CCM_8 and GCM.
   */
  cipherSuites?: DtlsCipherSuiteName[];
  /** ECDHE groups in preference order, matched against the client's supported_groups; default x25519, secp256r1. */
  ecdheGroups?: DtlsNamedGroupName[];
  /** Established + handshaking peers; default 10000. */
  maxPeers?: number;
  /** Concurrent handshakes after a valid cookie; default 1000. */
  maxHandshaking?: number;
  /**
   * Concurrent handshakes from one source: an IPv4 address, or an IPv6 /64 (a home's whole
   * delegated prefix); default 16. One address cannot take every handshake slot.
   */
  maxHandshakingPerSource?: number;
  /** Default 30000. */
  handshakeTimeoutMs?: number;
  /**
   * Under pressure (at least half of maxHandshaking in use) a handshake older than this fails as a
   * timeout; default 5000 (a real client's four flights take well under a second, retransmissions a few).
   */
  pressureHandshakeTimeoutMs?: number;
  /** Established session without any authenticated record; default 600000. Closed up to 1/16 of it (at most 30 s) late: the idle sweep walks every session. */
  idleTimeoutMs?: number;
  /** Default 60000. */
  cookieSecretRotationMs?: number;
  /**
   * A ClientHello whose session ticket opens is answered at once, without the cookie round (RFC 6347
   * 4.2.1 allows it for resumption): one round trip and about a quarter of the server's work less
   * per reconnect. Only while under a quarter of maxHandshaking and of maxHandshakingPerSource are in
   * use, never over an existing session at that address and port, and with the short deadline
   * (pressureHandshakeTimeoutMs) for the unproven address: our flight goes to it three times at most
   * with the default timers (0, 1, 3 s). Default true.
   */
  resumeWithoutCookie?: boolean;
  /** Default 16384; datagrams above this plus record overhead are dropped unread. */
  maxRecordPlaintext?: number;
  /** Checked before any processing of a datagram: true = silently ignore (drop-list). */
  isDropped?(address: string): boolean;
  /**
   * Socket receive buffer in bytes (SO_RCVBUF; the kernel caps it at net.core.rmem_max). Default
   * 4 MiB: tens of thousands of peers' heartbeats queue there through a GC pause instead of being dropped.
   */
  receiveBufferBytes?: number;
  /** First retransmission delay (RFC 6347 4.2.4: 1 s), doubled up to maxRetransmitMs (60 s). */
  initialRetransmitMs?: number;
  maxRetransmitMs?: number;
  /**
   * RFC 5077 session tickets (RFC 9132 7.1: resumption without server-side state): how long a ticket
   * resumes a session, in seconds; default 3600; 0 = no tickets. The identity's current PSK must still
   * be the one the ticket was issued under (a changed or revoked key means a full handshake).
   */
  sessionTicketLifetimeSeconds?: number;
  /**
   * Shared ticket secret (at least 32 bytes): ticket keys are derived from it per lifetime period,
   * so a restarted server, or another one holding the same secret, resumes the sessions this one
   * issued tickets for. Absent: random keys of this server only.
   */
  sessionTicketSecret?: Buffer;
}

export type HandshakeFailureReason =
  | "bad-finished"
  | "unknown-identity"
  | "no-shared-cipher"
  | "timeout"
  | "decode-error"
  | "unexpected-message"
  | "peer-alert"
  | "lookup-error"
  | "illegal-parameter"
  | "capacity"
  /** We asked for a client certificate and got none. */
  | "certificate-required"
  | "certificate-untrusted"
  | "certificate-expired"
  | "certificate-not-yet-valid"
  /** Malformed, unsupported key, not for clients, or a chain signature that does not verify. */
  | "bad-certificate"
  /** The CertificateVerify signature does not verify with the certificate's key. */
  | "bad-certificate-verify";

export interface HandshakeFailure {
  address: string;
  port: number;
  reason: HandshakeFailureReason;
  /** The PSK identity the client presented, once its key exchange arrived. */
  identity?: string;
  /** Subject of the client certificate, when one was presented. */
  subject?: string;
  /** Words for people about a refused certificate. */
  detail?: string;
  /**
   * The handshake began without a cookie (a ticket resumption) and never proved that the address
   * is the sender's: anyone who saw the ticket can replay it from any address. Not a failure of
   * that address (a drop-list must not count it).
   */
  addressUnproven?: true;
}

/** Counters for diagnostics and tests; none of them grows without peer state behind it. */
export interface DtlsServerStats {
  datagrams: number;
  droppedDatagrams: number;
  helloVerifyRequests: number;
  /** Of handshakesResumed: answered without a cookie round (resumeWithoutCookie). */
  resumedWithoutCookie: number;
  badRecords: number;
  handshakesCompleted: number;
  /** Of handshakesCompleted: abbreviated handshakes resumed from a session ticket. */
  handshakesResumed: number;
  handshakesFailed: number;
  /** Handshake messages that arrived in more than one fragment and were reassembled. */
  reassembledMessages: number;
  /** Sessions that moved to a new address and port on an authenticated record with their CID (RFC 9146 6). */
  peersMoved: number;
  internalErrors: number;
}

type PeerState = "awaiting-key-exchange" | "looking-up" | "awaiting-certificate-verify" | "awaiting-finished" | "established" | "closed";

/** What only a handshake in progress needs; dropped as a whole once the session is established. */
interface HandshakeState {
  createdAt: number;
  /** sourceGroup() of the peer's address: the per-source handshake count this one is in. */
  source: string;
  serverRandom: Buffer;
  extendedMasterSecret: boolean;
  transcript: Transcript;
  reassembler: HandshakeReassembler;
  /** Next handshake message_seq the server sends. */
  serverMessageSeq: number;
  master: Buffer | undefined;
  /** ECDHE_PSK: our ephemeral key pair until the ClientKeyExchange, then the ECDH secret until the PSK is known. */
  ephemeral: EphemeralKey | undefined;
  ecdhSecret: Buffer | undefined;
  /** Flight 4 as first sent (datagrams); repeated byte for byte, see flight(). */
  flight: Buffer[];
  /** Abbreviated handshake: our ServerHello message, sent again in a new record before CCS and Finished. */
  resumedHello: Buffer | undefined;
  retransmitTimer: NodeJS.Timeout | undefined;
  retransmitDelay: number;
  /** Records that arrived while an async PSK lookup was pending. */
  pending: DtlsRecord[] | undefined;
  pendingBytes: number;
  /** Abbreviated handshake from a ticket: our flight (ServerHello, CCS, Finished) went first. */
  resumed: boolean;
  /** Started without a cookie (resumeWithoutCookie): the address is unproven until the client's Finished. */
  addressUnproven: boolean;
  /** The client offered the SessionTicket extension and we send it a NewSessionTicket. */
  issueTicket: boolean;
  /** pskDigest() of the key found for the identity, sealed into the ticket. */
  pskDigest: Buffer | undefined;
  /** Certificate suites: we sent a CertificateRequest; the client's Certificate must come first. */
  certificateRequested: boolean;
  certificateReceived: boolean;
  /** The client's accepted certificate, until its CertificateVerify proves it holds the key. */
  clientLeaf: AcceptedCertificate | undefined;
}

/**
 * One peer (address and port). An established idle session keeps only this object, its map key,
 * a replay window, its Connection and a slot in the server's secret slab (96 bytes with AES suites
 * only, 144 when ChaCha20-Poly1305 is enabled: its keys are 32 bytes and its IVs 12).
 */
interface Peer {
  key: string;
  /** Address as the socket reports it (used for sending). */
  socketAddress: string;
  /** Address as reported to the application (v4-mapped shown as IPv4). */
  address: string;
  port: number;
  state: PeerState;
  lastRecordAt: number;
  suite: CipherSuiteInfo;
  /**
   * Slot in the server's SecretSlab (-1 once released) for everything the session keeps: client
   * random (to recognise a repeated ClientHello), the AEAD key block, and our encoded Finished (to
   * rebuild the final flight if the client lost it). See the SECRETS_* offsets.
   */
  slot: number;
  /** Keys derived (after ClientKeyExchange): epoch-1 records can be read and written. */
  keysReady: boolean;
  writeSeq0: number;
  writeSeq1: number;
  writeEpoch: 0 | 1;
  replay: ReplayWindow | undefined;
  identity: string | undefined;
  /** Set once data at epoch 1 proved the client has our Finished: no final flight resends any more. */
  finishedDelivered: boolean;
  /** When the last flight was re-sent because the client repeated its own (rate limit). */
  lastOnDemandResendAt: number;
  connection: DtlsServerConnection | undefined;
  handshake: HandshakeState | undefined;
  /** Our NewSessionTicket message (before CCS in the final flight) until the client proves it has that flight. */
  finalTicket: Buffer | undefined;
  /** The client's certificate (certificate suites): the session's peer identity. */
  certificate: AcceptedCertificate | undefined;
  /**
   * RFC 9146: our CID, which the client puts in its records, as a latin1 string (the key of
   * peersByCid, so the session holds no Buffer for it); undefined = not negotiated.
   */
  cid: string | undefined;
  /** The client's CID, which we put in our records (its own memory); undefined = plain records. */
  peerCid: Buffer | undefined;
}

// Slot layout: client random, key block (sized for the largest enabled suite), encoded Finished.
const SECRETS_CLIENT_RANDOM = 0;
const SECRETS_KEY_BLOCK = 32;
/** Handshake header (12) + verify_data (12). */
const FINISHED_MESSAGE_LENGTH = 24;

const MAX_PENDING_RECORDS = 16;
const MAX_PENDING_BYTES = 16384;
const MAX_CLIENT_HELLO = 2048;
/** IPv6 sources share a handshake cap per /64: one subscriber's prefix (RFC 6177). */
const SOURCE_IPV6_PREFIX_LENGTH = 64;
/** At most one flight re-sent per this interval in answer to repeated client flights (anti-amplification). */
const ON_DEMAND_RESEND_INTERVAL_MS = 100;

function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * The socket's name lookup: peers are always address literals, answered at once. Node's default
 * (dns.lookup) answers them one tick later, an extra callback and closure per datagram sent.
 */
function addressLiteralLookup(
  address: string,
  options: LookupOneOptions | number,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  // Addresses from the socket: a ':' cannot be in a host name, and the kernel refuses a bad literal.
  const literal = address.includes(":") ? 6 : isIPv4(address) ? 4 : 0;
  if (literal !== 0) callback(null, address, literal);
  // Node 20 to 24 pass the family as a number here; the types say options.
  else dnsLookup(address, typeof options === "number" ? { family: options } : options, callback);
}

/**
 * A copy in its own memory, for what a session keeps: a slice of Node's shared 8 KB buffer pool
 * would keep the whole pool chunk alive with an idle session.
 */
function unpooledCopy(b: Buffer): Buffer {
  const own = Buffer.allocUnsafeSlow(b.length);
  b.copy(own);
  return own;
}

export class DtlsServer extends EventEmitter implements DtlsConnectionOwner {
  private socket: dgram.Socket | undefined;
  private readonly peers = new PeerTable<Peer>();
  /** Peers that negotiated a Connection ID, by it (latin1 string of the bytes). */
  private readonly peersByCid = new Map<string, Peer>();
  /** "DTLSv1.2 <suite>" per suite id, built once and shared by every connection. */
  private readonly cipherLabels = new Map<number, string>();
  /** Peers with a handshake in progress (their count is the global cap's); the sweep checks their timeouts without walking every session. */
  private readonly handshakingPeers = new Set<Peer>();
  /** When the sweep next walks the established sessions for idle ones. */
  private nextIdleSweepAt = 0;
  private idleSweepEveryMs = 0;
  /** Handshakes in progress per source group (entries removed at zero). */
  private readonly handshakingBySource = new Map<string, number>();
  private readonly cookies: CookieJar;
  private readonly resumeWithoutCookie: boolean;
  private readonly secrets: SecretSlab;
  /** Offset of the encoded Finished in a slot (after the largest key block). */
  private readonly secretsFinished: number;
  private readonly suites: CipherSuiteInfo[];
  private readonly groups: number[];
  private readonly hint: Buffer | undefined;
  private readonly maxPeers: number;
  private readonly maxHandshaking: number;
  private readonly maxHandshakingPerSource: number;
  private readonly handshakeTimeoutMs: number;
  private readonly pressureHandshakeTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  readonly maxRecordPlaintext: number;
  private readonly maxDatagram: number;
  private readonly initialRetransmitMs: number;
  private readonly maxRetransmitMs: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly ticketKeys: TicketKeys | undefined;
  private readonly credentials: CertificateCredentials | undefined;
  private readonly trustAnchors: X509Certificate[];
  private readonly verified: VerifiedCertificates;
  private readonly requireClientCert: boolean;
  private readonly certificateLocal: LocalIdentity | undefined;
  private localAddress = "";
  private localPort = 0;
  private closing = false;
  readonly stats: DtlsServerStats = {
    datagrams: 0,
    droppedDatagrams: 0,
    helloVerifyRequests: 0,
    resumedWithoutCookie: 0,
    badRecords: 0,
    handshakesCompleted: 0,
    handshakesResumed: 0,
    handshakesFailed: 0,
    reassembledMessages: 0,
    peersMoved: 0,
    internalErrors: 0,
  };

  constructor(private readonly options: DtlsServerOptions) {
    super();
    if (!options.pskLookup && !options.certificate) throw new TypeError("DtlsServer needs pskLookup and/or certificate");
    const cert = options.certificate;
    this.credentials = cert ? loadCertificateCredentials(cert) : undefined;
    this.requireClientCert = cert?.requireClientCert ?? true;
    this.trustAnchors = cert?.ca !== undefined ? loadTrustAnchors(cert.ca) : [];
    if (cert && this.requireClientCert && this.trustAnchors.length === 0)
      throw new TypeError("certificate.ca is needed to verify client certificates (mutual authentication)");
    this.certificateLocal = cert ? certificateLocalIdentity(cert.cert) : undefined;
    this.verified = new VerifiedCertificates(this.trustAnchors);
    const names = options.cipherSuites ?? [
      ...(options.pskLookup ? DEFAULT_DTLS_CIPHER_SUITES.slice(0, 1) : []),
      ...(this.credentials ? CERTIFICATE_SUITES[this.credentials.kind] : []),
      ...(options.pskLookup ? DEFAULT_DTLS_CIPHER_SUITES.slice(1) : []),
    ];
    this.suites = names.map((n) => {
      const s = Object.prototype.hasOwnProperty.call(CIPHER_SUITES, n) ? CIPHER_SUITES[n] : undefined;
      if (!s) throw new TypeError(`unsupported DTLS cipher suite ${String(n)}`);
      const kind = certificateKeyKind(s);
      if (kind && !this.credentials) throw new TypeError(`${s.name} needs a certificate`);
      if (kind && this.credentials && kind !== this.credentials.kind)
        throw new TypeError(
          `${s.name} needs an ${keyKindLabel(kind)} certificate key; this certificate's key is ${keyKindLabel(this.credentials.kind)}`,
        );
      if (!kind && !options.pskLookup) throw new TypeError(`${s.name} needs pskLookup`);
      return s;
    });
    if (this.suites.length === 0) throw new TypeError("at least one cipher suite is needed");
    this.groups = (options.ecdheGroups ?? DEFAULT_DTLS_GROUPS).map((g) => {
      const id = Object.prototype.hasOwnProperty.call(NamedGroup, g) ? NamedGroup[g] : undefined;
      if (id === undefined) throw new TypeError(`unsupported ECDHE group ${String(g)}`);
      return id;
    });
    if (this.groups.length === 0 && this.suites.some((s) => s.keyExchange !== "psk"))
      throw new TypeError("ECDHE suites need at least one group");
    this.secretsFinished = SECRETS_KEY_BLOCK + Math.max(...this.suites.map(keyBlockLength));
    this.secrets = new SecretSlab(this.secretsFinished + FINISHED_MESSAGE_LENGTH);
    for (const suite of this.suites) this.cipherLabels.set(suite.id, `DTLSv1.2 ${suite.name}`);
    this.hint = options.pskHint !== undefined ? Buffer.from(options.pskHint, "utf8") : undefined;
    this.maxPeers = options.maxPeers ?? 10000;
    this.maxHandshaking = options.maxHandshaking ?? 1000;
    this.maxHandshakingPerSource = options.maxHandshakingPerSource ?? DEFAULT_MAX_HANDSHAKING_PER_SOURCE;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30000;
    this.pressureHandshakeTimeoutMs = Math.min(this.handshakeTimeoutMs, options.pressureHandshakeTimeoutMs ?? 5000);
    this.idleTimeoutMs = options.idleTimeoutMs ?? 600000;
    this.maxRecordPlaintext = options.maxRecordPlaintext ?? 16384;
    // Room for a few records' headers and AEAD overhead around one full plaintext record.
    this.maxDatagram = this.maxRecordPlaintext + 1024;
    this.initialRetransmitMs = options.initialRetransmitMs ?? 1000;
    this.maxRetransmitMs = options.maxRetransmitMs ?? 60000;
    this.cookies = new CookieJar(options.cookieSecretRotationMs ?? 60000);
    this.resumeWithoutCookie = options.resumeWithoutCookie ?? true;
    const ticketLifetime = options.sessionTicketLifetimeSeconds ?? 3600;
    this.ticketKeys =
      ticketLifetime > 0 ? new TicketKeys({ lifetimeSeconds: ticketLifetime, secret: options.sessionTicketSecret }) : undefined;
  }

  /** Established plus handshaking peers. */
  get sessionCount(): number {
    return this.peers.size;
  }

  get handshakingCount(): number {
    return this.handshakingPeers.size;
  }

  listen(port: number, host?: string): Promise<{ address: string; port: number }> {
    if (this.socket) return Promise.reject(new Error("DtlsServer is already listening"));
    const dualStack = host === undefined || host === "::" || host.includes(":");
    const sock = dgram.createSocket({ type: dualStack ? "udp6" : "udp4", ipv6Only: false, lookup: addressLiteralLookup });
    this.socket = sock;
    return new Promise((resolve, reject) => {
      const onListenError = (err: Error): void => {
        this.socket = undefined;
        reject(err);
      };
      sock.once("error", onListenError);
      sock.bind(port, host ?? "::", () => {
        sock.off("error", onListenError);
        sock.on("error", (err) => this.emit("error", err));
        sock.on("message", (msg, rinfo) => this.handleDatagram(msg, rinfo.address, rinfo.port));
        try {
          sock.setRecvBufferSize(this.options.receiveBufferBytes ?? 4 * 1024 * 1024);
        } catch {
          // not allowed here: the system default stays
        }
        const a = sock.address();
        this.localAddress = normalizeAddress(a.address);
        this.localPort = a.port;
        // Handshake timeouts are checked often (only the handshakes in progress are walked); idle
        // sessions rarely (all sessions are walked): at most 1/16 of the idle timeout late.
        const sweepEvery = Math.max(10, Math.min(1000, this.pressureHandshakeTimeoutMs / 4, this.idleTimeoutMs / 16));
        this.idleSweepEveryMs = Math.max(sweepEvery, Math.min(30_000, this.idleTimeoutMs / 16));
        this.nextIdleSweepAt = Date.now() + this.idleSweepEveryMs;
        this.sweepTimer = setInterval(() => this.sweep(), sweepEvery);
        this.sweepTimer.unref();
        resolve({ address: this.localAddress, port: this.localPort });
      });
    });
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const peer of [...this.peers.values()]) {
      if (peer.state === "established") this.sendAlert(peer, AlertLevel.Warning, AlertDescription.CloseNotify);
      this.removePeer(peer);
    }
    const sock = this.socket;
    // Let the close_notify alerts the kernel did not take at once leave before the socket goes (bounded wait).
    for (let i = 0; i < 100 && sock && sock.getSendQueueCount() > 0; i++) await new Promise((r) => setTimeout(r, 5));
    this.socket = undefined;
    if (sock) await new Promise<void>((resolve) => sock.close(() => resolve()));
  }

  /**
   * Entry point for one received datagram. Public for tests that drive the server without a
   * client socket; replies still go out through the server's socket.
   */
  handleDatagram(datagram: Buffer, socketAddress: string, port: number): void {
    try {
      this.stats.datagrams++;
      const address = normalizeAddress(socketAddress);
      if (this.options.isDropped?.(address) || datagram.length > this.maxDatagram || this.closing) {
        this.stats.droppedDatagrams++;
        return;
      }
      const parsed = parseDatagram(datagram, this.maxRecordPlaintext + 2048, CID_LENGTH);
      if (parsed.malformed) this.stats.badRecords++;
      for (const record of parsed.records) {
        if (record.cid) {
          this.handleCidRecord(record, socketAddress, address, port);
          continue;
        }
        const peer = this.peers.find(socketAddress, port);
        const hs = peer?.handshake;
        if (hs?.pending) {
          if (hs.pending.length < MAX_PENDING_RECORDS && hs.pendingBytes + record.fragment.length <= MAX_PENDING_BYTES) {
            hs.pending.push(copyRecord(record));
            hs.pendingBytes += record.fragment.length;
          }
          continue;
        }
        this.handleRecord(record, peer, socketAddress, address, port);
      }
    } catch (err) {
      // A defect, not peer input we failed to anticipate gracefully: count it, never throw.
      this.stats.internalErrors++;
      this.emit("internal-error", err);
    }
  }

  private handleRecord(record: DtlsRecord, peer: Peer | undefined, socketAddress: string, address: string, port: number): void {
    if (record.epoch === 0) {
      // The key string is built only here, off the established path.
      if (record.type === ContentType.Handshake) {
        this.handlePlainHandshake(record, peer, PeerTable.key(socketAddress, port), socketAddress, address, port);
      } else if (record.type === ContentType.Alert && peer && peer.state !== "established") {
        // Plaintext alerts are only believed during the handshake.
        if (record.fragment.length === 2 && record.fragment[0] === AlertLevel.Fatal) this.failHandshake(peer, "peer-alert");
      }
      // ChangeCipherSpec is implied by the epoch of the next record; epoch-0 application data is invalid.
      return;
    }
    if (!peer) {
      this.stats.badRecords++;
      return;
    }
    const opened = this.openProtected(peer, record, true);
    if (opened) this.dispatchProtected(peer, opened.type, opened.content);
  }

  /**
   * Checks, opens and marks an epoch-1 record of `peer` (plain, or tls12_cid with its real type
   * inside); undefined when it is not fresh or does not authenticate. `fromPeerAddress`: it came
   * from the address and port the peer handshakes from.
   */
  private openProtected(
    peer: Peer,
    record: DtlsRecord,
    fromPeerAddress: boolean,
  ): { type: number; content: Buffer; newest: boolean } | undefined {
    if (record.epoch !== 1 || !peer.keysReady || !peer.replay) {
      this.stats.badRecords++;
      return undefined;
    }
    if (!peer.replay.isFresh(record.sequence)) return undefined;
    const plaintext = this.open(peer, record);
    const inner = plaintext !== undefined && record.cid ? openInnerPlaintext(plaintext) : undefined;
    const type = inner ? inner.type : record.type;
    const content = record.cid ? inner?.content : plaintext;
    if (!content || content.length > this.maxRecordPlaintext) {
      this.stats.badRecords++;
      // A Finished-sized handshake record that does not authenticate while we wait for Finished
      // means the client derived other keys: a PSK mismatch. Fail now (decrypt_error) instead of
      // letting the client wait for a timeout; any other record is silently discarded (4.1.2.7).
      // (A tls12_cid record hides its type; its DTLSInnerPlaintext adds the type byte.)
      const finishedFragment = FINISHED_MESSAGE_LENGTH + (record.cid ? 1 : 0) + aeadOverhead(peer.suite);
      if (
        plaintext === undefined &&
        fromPeerAddress &&
        peer.state === "awaiting-finished" &&
        (record.cid !== undefined || record.type === ContentType.Handshake) &&
        record.fragment.length === finishedFragment
      ) {
        this.failHandshake(peer, "bad-finished", AlertDescription.DecryptError);
      }
      return undefined;
    }
    const newest = peer.replay.isNewest(record.sequence);
    peer.replay.mark(record.sequence);
    peer.lastRecordAt = Date.now();
    return { type, content, newest };
  }

  /**
   * A tls12_cid record (RFC 9146): found by our CID, whatever its address. Once it authenticates and is
   * the newest record of the session, a new address and port become the peer's (a NAT rebinding).
   */
  private handleCidRecord(record: DtlsRecord, socketAddress: string, address: string, port: number): void {
    const peer = this.peersByCid.get(record.cid!.toString("latin1"));
    if (!peer || peer.state === "closed") {
      this.stats.badRecords++;
      return;
    }
    const fromPeerAddress = socketAddress === peer.socketAddress && port === peer.port;
    const opened = this.openProtected(peer, record, fromPeerAddress);
    if (!opened) return;
    if (!fromPeerAddress && opened.newest) this.movePeer(peer, PeerTable.key(socketAddress, port), socketAddress, address, port);
    this.dispatchProtected(peer, opened.type, opened.content);
  }

  /** The session continues at a new address and port: later records and retransmissions go there. */
  private movePeer(peer: Peer, key: string, socketAddress: string, address: string, port: number): void {
    const occupant = this.peers.get(key);
    if (occupant && occupant !== peer) {
      // Another association at that address and port: one that is only handshaking is stale (the
      // rebinding NAT gave its port away); an established one stays, and this record moves nothing.
      if (occupant.state === "established") return;
      this.removePeer(occupant, new Error("address taken over by a session with a Connection ID"));
    }
    this.peers.delete(peer.key);
    peer.key = key;
    peer.socketAddress = socketAddress;
    peer.address = address;
    peer.port = port;
    this.peers.set(key, peer);
    this.stats.peersMoved++;
    peer.connection?.moved(address, port);
  }

  private dispatchProtected(peer: Peer, type: number, plaintext: Buffer): void {
    switch (type) {
      case ContentType.ApplicationData:
        if (peer.state === "established" && peer.connection) {
          // Data at epoch 1 proves the client has our Finished: the final flight is no longer needed.
          peer.finishedDelivered = true;
          peer.finalTicket = undefined;
          peer.connection.emit("message", plaintext);
        }
        return;
      case ContentType.Alert:
        this.handleProtectedAlert(peer, plaintext);
        return;
      case ContentType.Handshake:
        this.handleProtectedHandshake(peer, plaintext);
        return;
      default:
        return;
    }
  }

  // ---- epoch 0: ClientHello (stateless until the cookie verifies) and the key exchange ----

  private handlePlainHandshake(
    record: DtlsRecord,
    peer: Peer | undefined,
    key: string,
    socketAddress: string,
    address: string,
    port: number,
  ): void {
    let fragments: HandshakeFragment[];
    try {
      fragments = parseHandshakeFragments(record.fragment);
    } catch {
      // Unauthenticated and badly framed: discard (4.1.2.7) so a spoofed record cannot end a handshake.
      this.stats.badRecords++;
      return;
    }
    for (const f of fragments) {
      const current = this.peers.get(key);
      if (f.msgType === HandshakeType.ClientHello) {
        this.handleClientHello(record, f, current, key, socketAddress, address, port);
        continue;
      }
      if (!current) continue;
      if (current.state === "established") {
        // The client did not get our final flight and resent flight 5.
        this.resendLastFlight(current);
        continue;
      }
      if (
        current.state !== "awaiting-key-exchange" &&
        current.state !== "awaiting-certificate-verify" &&
        current.state !== "awaiting-finished"
      )
        continue;
      this.feedHandshake(current, f, false);
    }
  }

  private handleClientHello(
    record: DtlsRecord,
    f: HandshakeFragment,
    peer: Peer | undefined,
    key: string,
    socketAddress: string,
    address: string,
    port: number,
  ): void {
    // Without state we cannot reassemble: a ClientHello must arrive whole (as OpenSSL also requires).
    // Real hellos are a few hundred bytes; the cap bounds the transcript a handshaking peer holds.
    if (f.fragmentOffset !== 0 || f.fragmentLength !== f.length || f.length > MAX_CLIENT_HELLO) return;
    let hello: ClientHello;
    try {
      hello = parseClientHello(f.body);
    } catch {
      this.stats.badRecords++;
      return;
    }
    // DTLS 1.2 only: a lower version (numerically higher) cannot be served.
    if (hello.clientVersion > DTLS_1_2 || hello.clientVersion < 0xfe00) return;
    const cookieInput = {
      address: socketAddress,
      port,
      clientVersion: hello.clientVersion,
      random: hello.random,
      sessionId: hello.sessionId,
      suitesRaw: hello.suitesRaw,
    };
    if (!this.cookies.verify(hello.cookie, cookieInput)) {
      if (peer?.handshake?.addressUnproven && this.sameClientRandom(peer, hello)) {
        // The client repeats the ClientHello we answered without a cookie: our flight got lost.
        this.resendLastFlight(peer);
        return;
      }
      if (!peer && this.resumeWithoutCookie && this.ticketKeys && hello.sessionTicket) {
        const source = sourceGroup(address, SOURCE_IPV6_PREFIX_LENGTH);
        const resumption = this.mayResumeWithoutCookie(source) ? this.acceptTicket(hello, address, port) : undefined;
        if (resumption) return this.startResumed(record, f, hello, resumption, key, socketAddress, address, port, source, true);
      }
      // HelloVerifyRequest echoes the ClientHello's record sequence number (4.2.1) and message_seq.
      const hvr = encodeHandshake(HandshakeType.HelloVerifyRequest, f.messageSeq, buildHelloVerifyRequest(this.cookies.issue(cookieInput)));
      this.stats.helloVerifyRequests++;
      this.transmit(socketAddress, port, [encodeRecord(ContentType.Handshake, DTLS_1_0, 0, record.sequence, hvr)]);
      return;
    }
    if (peer) {
      if (this.sameClientRandom(peer, hello)) {
        // Retransmitted ClientHello of the handshake in progress: our flight 4 got lost.
        if (peer.state === "awaiting-key-exchange" || (peer.state === "awaiting-finished" && peer.handshake?.resumed))
          this.resendLastFlight(peer);
        return;
      }
      // Return-routable new handshake from the same address and port: the client restarted.
      this.removePeer(peer, new Error("peer started a new handshake"));
    }
    const source = sourceGroup(address, SOURCE_IPV6_PREFIX_LENGTH);
    if (
      this.peers.size >= this.maxPeers ||
      this.handshakingPeers.size >= this.maxHandshaking ||
      (this.handshakingBySource.get(source) ?? 0) >= this.maxHandshakingPerSource
    ) {
      this.stats.handshakesFailed++;
      this.emit("handshake-failed", { address, port, reason: "capacity" } satisfies HandshakeFailure);
      return;
    }
    const resumption = this.acceptTicket(hello, address, port);
    if (resumption) return this.startResumed(record, f, hello, resumption, key, socketAddress, address, port, source, false);
    const ecdheGroup = this.chooseGroup(hello);
    const suite = this.suites.find((s) => hello.cipherSuites.includes(s.id) && this.usable(s, hello, ecdheGroup));
    const nullCompression = hello.compressionMethods.includes(0);
    if (!suite || !nullCompression) {
      this.transmit(socketAddress, port, [
        encodeRecord(ContentType.Alert, DTLS_1_2, 0, record.sequence, Buffer.from([AlertLevel.Fatal, AlertDescription.HandshakeFailure])),
      ]);
      this.stats.handshakesFailed++;
      this.emit("handshake-failed", { address, port, reason: "no-shared-cipher" } satisfies HandshakeFailure);
      return;
    }
    const now = Date.now();
    const serverRandom = pooledRandomBytes(32);
    serverRandom.writeUInt32BE(Math.floor(now / 1000) >>> 0, 0);
    const ephemeral = suite.keyExchange !== "psk" ? generateEphemeralKey(ecdheGroup!) : undefined;
    const withCertificate = certificateKeyKind(suite) !== undefined;
    const slot = this.secrets.allocate();
    hello.random.copy(this.secrets.buffer(slot), this.secrets.offset(slot) + SECRETS_CLIENT_RANDOM);
    const handshake: HandshakeState = {
      createdAt: now,
      source,
      serverRandom,
      extendedMasterSecret: hello.extendedMasterSecret,
      transcript: new Transcript(encodeHandshake(HandshakeType.ClientHello, f.messageSeq, f.body)),
      reassembler: new HandshakeReassembler(f.messageSeq + 1, REASSEMBLY_LIMITS),
      // Stateless server: its message_seq continues from the ClientHello it answers (ServerHello = CH2's).
      serverMessageSeq: f.messageSeq,
      master: undefined,
      ephemeral,
      ecdhSecret: undefined,
      flight: [],
      resumedHello: undefined,
      retransmitTimer: undefined,
      retransmitDelay: this.initialRetransmitMs,
      pending: undefined,
      pendingBytes: 0,
      resumed: false,
      addressUnproven: false,
      issueTicket: this.ticketKeys !== undefined && hello.sessionTicket !== undefined,
      pskDigest: undefined,
      certificateRequested: withCertificate && this.trustAnchors.length > 0,
      certificateReceived: false,
      clientLeaf: undefined,
    };
    const cids = this.negotiateCid(hello);
    const newPeer: Peer = {
      key,
      socketAddress,
      address,
      port,
      state: "awaiting-key-exchange",
      lastRecordAt: now,
      suite,
      slot,
      keysReady: false,
      // Continue after the ClientHello's record sequence so no epoch-0 sequence repeats the HelloVerifyRequest's.
      writeSeq0: record.sequence + 1,
      writeSeq1: 0,
      writeEpoch: 0,
      replay: undefined,
      identity: undefined,
      finishedDelivered: false,
      lastOnDemandResendAt: 0,
      connection: undefined,
      handshake,
      finalTicket: undefined,
      certificate: undefined,
      cid: cids.cid,
      peerCid: cids.peerCid,
    };
    this.peers.set(key, newPeer);
    if (newPeer.cid !== undefined) this.peersByCid.set(newPeer.cid, newPeer);
    this.handshakingPeers.add(newPeer);
    this.handshakingBySource.set(source, (this.handshakingBySource.get(source) ?? 0) + 1);

    const messages = [
      encodeHandshake(
        HandshakeType.ServerHello,
        handshake.serverMessageSeq++,
        buildServerHello(
          serverRandom,
          suite.id,
          hello.secureRenegotiation,
          hello.extendedMasterSecret,
          ephemeral !== undefined && hello.ecPointFormats !== undefined,
          handshake.issueTicket,
          undefined,
          cids.cidBytes,
        ),
      ),
    ];
    if (withCertificate && ephemeral) {
      // RFC 8422 5.3-5.4: our chain, then the ephemeral point signed over both randoms.
      const credentials = this.credentials!;
      messages.push(encodeHandshake(HandshakeType.Certificate, handshake.serverMessageSeq++, encodeCertificateMessage(credentials.chain)));
      const params = encodeEcdheParams(ephemeral.group, ephemeral.publicKey);
      // usable() made sure the client accepts one of our key's schemes.
      const scheme = pickSignatureScheme(credentials.kind, hello.signatureAlgorithms)!;
      const signature = signParts(credentials.key, scheme, [hello.random, serverRandom, params]);
      messages.push(
        encodeHandshake(
          HandshakeType.ServerKeyExchange,
          handshake.serverMessageSeq++,
          buildSignedServerKeyExchange(params, scheme, signature),
        ),
      );
      if (handshake.certificateRequested)
        messages.push(encodeHandshake(HandshakeType.CertificateRequest, handshake.serverMessageSeq++, buildCertificateRequest()));
    } else if (ephemeral) {
      // ECDHE_PSK always sends ServerKeyExchange; the hint in it may be empty.
      const ske = buildEcdhePskServerKeyExchange(this.hint ?? EMPTY, ephemeral.group, ephemeral.publicKey);
      messages.push(encodeHandshake(HandshakeType.ServerKeyExchange, handshake.serverMessageSeq++, ske));
    } else if (this.hint) {
      messages.push(encodeHandshake(HandshakeType.ServerKeyExchange, handshake.serverMessageSeq++, buildPskServerKeyExchange(this.hint)));
    }
    messages.push(encodeHandshake(HandshakeType.ServerHelloDone, handshake.serverMessageSeq++, Buffer.alloc(0)));
    handshake.transcript.add(...messages);
    handshake.flight = this.packFlight(newPeer, messages);
    this.transmit(socketAddress, port, handshake.flight);
    this.armRetransmit(newPeer);
  }

  /**
   * RFC 9146: a client that offers connection_id gets a fresh random CID of ours (its records will
   * carry it, so a new address can be recognised); we use the client's CID in our records if it gave one.
   */
  private negotiateCid(hello: ClientHello): { cid: string | undefined; cidBytes: Buffer | undefined; peerCid: Buffer | undefined } {
    if (hello.connectionId === undefined) return { cid: undefined, cidBytes: undefined, peerCid: undefined };
    let cidBytes = pooledRandomBytes(CID_LENGTH);
    while (this.peersByCid.has(cidBytes.toString("latin1"))) cidBytes = pooledRandomBytes(CID_LENGTH);
    // cidBytes goes into the ServerHello only; the session keeps the string.
    return {
      cid: cidBytes.toString("latin1"),
      cidBytes,
      peerCid: hello.connectionId.length > 0 ? unpooledCopy(hello.connectionId) : undefined,
    };
  }

  /** Whether this server can run `suite` with this client. */
  private usable(suite: CipherSuiteInfo, hello: ClientHello, ecdheGroup: number | undefined): boolean {
    if (suite.keyExchange === "psk") return true;
    if (ecdheGroup === undefined) return false;
    if (suite.keyExchange === "ecdhe_psk") return true;
    // ECDHE_ECDSA / ECDHE_RSA: the client must take a signature scheme of our key (no SHA-1 default:
    // RFC 5246 7.4.1.4.1) and, for ECDSA, our certificate's curve (RFC 8422 5.1).
    const kind = certificateKeyKind(suite);
    return (
      this.credentials !== undefined &&
      this.credentials.kind === kind &&
      pickSignatureScheme(kind, hello.signatureAlgorithms) !== undefined &&
      (kind === "rsa" || hello.supportedGroups === undefined || hello.supportedGroups.includes(NamedGroup.secp256r1))
    );
  }

  /**
   * Epoch-0 flight as datagrams of at most FLIGHT_DATAGRAM_BYTES: messages longer than a fragment
   * (certificate chains) are fragmented (RFC 6347 4.2.3), records packed into as few datagrams as fit.
   */
  private packFlight(peer: Peer, messages: Buffer[]): Buffer[] {
    const datagrams: Buffer[] = [];
    let current: Buffer[] = [];
    let size = 0;
    for (const message of messages) {
      for (const fragment of fragmentHandshake(message, FLIGHT_FRAGMENT_BODY)) {
        const record = encodeRecord(ContentType.Handshake, DTLS_1_2, 0, peer.writeSeq0++, fragment);
        if (size > 0 && size + record.length > FLIGHT_DATAGRAM_BYTES) {
          datagrams.push(Buffer.concat(current, size));
          current = [];
          size = 0;
        }
        current.push(record);
        size += record.length;
      }
    }
    if (size > 0) datagrams.push(Buffer.concat(current, size));
    return datagrams;
  }

  /**
   * Our first group the client supports, or undefined when ECDHE cannot be used with this client.
   * Without supported_groups the server may choose (RFC 8422 5.1): secp256r1, the one every ECC
   * implementation has, if enabled. The client must accept uncompressed points if it lists formats.
   */
  private chooseGroup(hello: ClientHello): number | undefined {
    if (hello.ecPointFormats && !hello.ecPointFormats.includes(POINT_FORMAT_UNCOMPRESSED)) return undefined;
    if (!hello.supportedGroups) return this.groups.includes(NamedGroup.secp256r1) ? NamedGroup.secp256r1 : this.groups[0];
    return this.groups.find((g) => hello.supportedGroups!.includes(g));
  }

  /** Whether this ClientHello repeats the one that started the peer's handshake (same client random). */
  private sameClientRandom(peer: Peer, hello: ClientHello): boolean {
    if (peer.slot < 0) return false;
    const at = this.secrets.offset(peer.slot) + SECRETS_CLIENT_RANDOM;
    return this.secrets.buffer(peer.slot).compare(hello.random, 0, hello.random.length, at, at + 32) === 0;
  }

  /**
   * Room for a resumption without a cookie: under a quarter of the handshake caps in use, overall and
   * for this source. A flood of replayed tickets from spoofed addresses fills that quarter at most;
   * from there on every handshake needs a cookie again, as all handshakes do without a ticket.
   */
  private mayResumeWithoutCookie(source: string): boolean {
    if (this.peers.size >= this.maxPeers || this.handshakingPeers.size * 4 >= this.maxHandshaking) return false;
    return (this.handshakingBySource.get(source) ?? 0) * 4 < this.maxHandshakingPerSource;
  }

  /**
   * The session in the client's ticket, when it can be resumed: sealed by us and within its lifetime,
   * its suite still enabled and offered, the same extended-master-secret choice (RFC 7627 5.3), and
   * the identity's key unchanged. Anything else means a full handshake (RFC 5077 3.4).
   */
  private acceptTicket(
    hello: ClientHello,
    address: string,
    port: number,
  ): { state: TicketState; suite: CipherSuiteInfo; certificate?: AcceptedCertificate } | undefined {
    if (!this.ticketKeys || !hello.sessionTicket || hello.sessionTicket.length === 0 || hello.sessionId.length === 0) return undefined;
    const state = this.ticketKeys.open(hello.sessionTicket);
    if (!state) return undefined;
    const suite = this.suites.find((s) => s.id === state.suiteId);
    if (!suite || !hello.cipherSuites.includes(suite.id) || state.extendedMasterSecret !== hello.extendedMasterSecret) return forget(state);
    if (state.certificate || certificateKeyKind(suite) !== undefined) {
      // The chain must not have expired and its trust anchor must still be one of ours.
      if (!state.certificate || certificateKeyKind(suite) === undefined) return forget(state);
      const accepted = this.verified.resume(state.certificate);
      if (!accepted) return forget(state);
      return { state, suite, certificate: accepted };
    }
    let psk: Buffer | undefined | Promise<Buffer | undefined>;
    try {
      psk = this.options.pskLookup?.(state.identity, { address, port });
    } catch {
      return forget(state);
    }
    if (isThenable(psk)) {
      // An asynchronous key store cannot answer within this datagram: resume only with a synchronous one.
      Promise.resolve(psk).catch(() => undefined);
      return forget(state);
    }
    if (!psk || psk.length === 0 || !timingSafeEqual(pskDigest(psk), state.pskDigest)) return forget(state);
    return { state, suite };
  }

  /** Abbreviated handshake (RFC 5246 7.3, RFC 5077 3.1): ServerHello, ChangeCipherSpec, Finished. */
  private startResumed(
    record: DtlsRecord,
    f: HandshakeFragment,
    hello: ClientHello,
    resumption: { state: TicketState; suite: CipherSuiteInfo; certificate?: AcceptedCertificate },
    key: string,
    socketAddress: string,
    address: string,
    port: number,
    source: string,
    addressUnproven: boolean,
  ): void {
    const { state, suite } = resumption;
    const now = Date.now();
    const serverRandom = pooledRandomBytes(32);
    serverRandom.writeUInt32BE(Math.floor(now / 1000) >>> 0, 0);
    const slot = this.secrets.allocate();
    const slab = this.secrets.buffer(slot);
    const at = this.secrets.offset(slot);
    hello.random.copy(slab, at + SECRETS_CLIENT_RANDOM);
    const keyBlock = keyExpansion(state.master, hello.random, serverRandom, keyBlockLength(suite));
    keyBlock.copy(slab, at + SECRETS_KEY_BLOCK);
    keyBlock.fill(0);
    const handshake: HandshakeState = {
      createdAt: now,
      source,
      serverRandom,
      extendedMasterSecret: state.extendedMasterSecret,
      transcript: new Transcript(encodeHandshake(HandshakeType.ClientHello, f.messageSeq, f.body)),
      reassembler: new HandshakeReassembler(f.messageSeq + 1, REASSEMBLY_LIMITS),
      serverMessageSeq: f.messageSeq,
      master: state.master,
      ephemeral: undefined,
      ecdhSecret: undefined,
      flight: [],
      resumedHello: undefined,
      retransmitTimer: undefined,
      retransmitDelay: this.initialRetransmitMs,
      pending: undefined,
      pendingBytes: 0,
      resumed: true,
      addressUnproven,
      issueTicket: false, // the client keeps using its ticket until it expires
      pskDigest: undefined,
      certificateRequested: false,
      certificateReceived: false,
      clientLeaf: undefined,
    };
    const cids = this.negotiateCid(hello);
    const peer: Peer = {
      key,
      socketAddress,
      address,
      port,
      state: "awaiting-finished",
      lastRecordAt: now,
      suite,
      slot,
      keysReady: true,
      writeSeq0: record.sequence + 1,
      writeSeq1: 0,
      writeEpoch: 0,
      replay: new ReplayWindow(),
      identity: state.certificate ? undefined : state.identity,
      finishedDelivered: false,
      lastOnDemandResendAt: 0,
      connection: undefined,
      handshake,
      finalTicket: undefined,
      certificate: undefined,
      cid: cids.cid,
      peerCid: cids.peerCid,
    };
    peer.certificate = resumption.certificate;
    this.peers.set(key, peer);
    if (peer.cid !== undefined) this.peersByCid.set(peer.cid, peer);
    this.handshakingPeers.add(peer);
    this.handshakingBySource.set(source, (this.handshakingBySource.get(source) ?? 0) + 1);
    const serverHello = encodeHandshake(
      HandshakeType.ServerHello,
      handshake.serverMessageSeq++,
      buildServerHello(
        serverRandom,
        suite.id,
        hello.secureRenegotiation,
        state.extendedMasterSecret,
        suite.keyExchange !== "psk" && hello.ecPointFormats !== undefined,
        false,
        hello.sessionId,
        cids.cidBytes,
      ),
    );
    handshake.transcript.add(serverHello);
    const finished = encodeHandshake(
      HandshakeType.Finished,
      handshake.serverMessageSeq++,
      finishedVerifyData(state.master, "server finished", handshake.transcript.digest()),
    );
    finished.copy(slab, at + this.secretsFinished);
    handshake.transcript.add(finished);
    handshake.resumedHello = serverHello;
    this.transmit(socketAddress, port, this.flight(peer, handshake));
    peer.writeEpoch = 1;
    this.armRetransmit(peer);
  }

  private feedHandshake(peer: Peer, f: HandshakeFragment, protectedRecord: boolean): void {
    const reassembler = peer.handshake?.reassembler;
    if (!reassembler) return;
    let result;
    try {
      result = reassembler.feed(f);
    } catch (err) {
      if (err instanceof DtlsDecodeError) return this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
      throw err;
    }
    if (result === "old") {
      if (peer.state === "awaiting-key-exchange") this.resendLastFlight(peer);
      return;
    }
    for (let msg = reassembler.take(); msg; msg = peer.handshake ? reassembler.take() : undefined) {
      this.handleHandshakeMessage(peer, msg, protectedRecord);
      if (peer.state === "closed" || peer.state === "looking-up") return;
    }
  }

  private handleHandshakeMessage(peer: Peer, msg: CompleteMessage, protectedRecord: boolean): void {
    if (msg.fragments > 1) this.stats.reassembledMessages++;
    const hs = peer.handshake!;
    if (peer.state === "awaiting-key-exchange" && !protectedRecord) {
      const certificateFirst = hs.certificateRequested && !hs.certificateReceived;
      if (certificateFirst && msg.msgType === HandshakeType.Certificate) return this.handleClientCertificate(peer, msg);
      if (!certificateFirst && msg.msgType === HandshakeType.ClientKeyExchange) return this.handleClientKeyExchange(peer, msg);
    }
    if (peer.state === "awaiting-certificate-verify" && msg.msgType === HandshakeType.CertificateVerify && !protectedRecord) {
      this.handleCertificateVerify(peer, msg);
      return;
    }
    if (peer.state === "awaiting-finished" && msg.msgType === HandshakeType.Finished && protectedRecord) {
      this.handleFinished(peer, msg);
      return;
    }
    this.failHandshake(peer, "unexpected-message", AlertDescription.UnexpectedMessage);
  }

  /** Certificate suites: the client's chain, checked against our CAs before anything else of it is used. */
  private handleClientCertificate(peer: Peer, msg: CompleteMessage): void {
    const handshake = peer.handshake!;
    let chain: Buffer[];
    try {
      chain = parseCertificateMessage(msg.body);
    } catch {
      return this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
    }
    this.disarmRetransmit(peer); // flight 5 has started
    handshake.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    handshake.certificateReceived = true;
    if (chain.length === 0) {
      // RFC 5246 7.4.6: without a certificate the server may go on or refuse with handshake_failure.
      if (this.requireClientCert) return this.failHandshake(peer, "certificate-required", AlertDescription.HandshakeFailure);
      return;
    }
    const check = this.verified.check(chain);
    if (!check.ok) {
      const reason = check.reason === "certificate-name-mismatch" ? "bad-certificate" : check.reason;
      return this.failHandshake(peer, reason, check.alert, { subject: check.subject, detail: check.detail });
    }
    handshake.clientLeaf = check.accepted;
    peer.certificate = check.accepted;
  }

  /** The client proves it holds its certificate's key: a signature over the handshake so far (RFC 5246 7.4.8). */
  private handleCertificateVerify(peer: Peer, msg: CompleteMessage): void {
    const handshake = peer.handshake!;
    const leaf = handshake.clientLeaf!;
    let verify: { scheme: number; signature: Buffer };
    try {
      verify = parseCertificateVerify(msg.body);
    } catch {
      return this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
    }
    if (!verifyParts(leaf, handshake.transcript.messages, verify.scheme, verify.signature)) {
      return this.failHandshake(peer, "bad-certificate-verify", AlertDescription.DecryptError, {
        subject: leaf.subject,
        detail: "CertificateVerify signature does not verify with the certificate's key",
      });
    }
    handshake.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    handshake.clientLeaf = undefined;
    peer.state = "awaiting-finished";
  }

  private handleClientKeyExchange(peer: Peer, msg: CompleteMessage): void {
    const handshake = peer.handshake!;
    if (certificateKeyKind(peer.suite) !== undefined) return this.handleEcdhClientKeyExchange(peer, msg);
    let identityBytes: Buffer;
    let point: Buffer | undefined;
    try {
      if (peer.suite.keyExchange === "ecdhe_psk") ({ identity: identityBytes, point } = parseEcdhePskClientKeyExchange(msg.body));
      else identityBytes = parsePskClientKeyExchange(msg.body);
    } catch {
      return this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
    }
    if (point) {
      const secret = handshake.ephemeral?.derive(point);
      // The private key is not needed again either way (flight 4 is already encoded).
      handshake.ephemeral = undefined;
      if (!secret) return this.failHandshake(peer, "illegal-parameter", AlertDescription.IllegalParameter);
      handshake.ecdhSecret = secret;
    }
    // Flight 5 has started: our flight 4 arrived, stop retransmitting it.
    this.disarmRetransmit(peer);
    handshake.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const identity = identityBytes.toString("utf8");
    peer.identity = identity;
    let result: Buffer | undefined | Promise<Buffer | undefined>;
    try {
      result = this.options.pskLookup?.(identity, { address: peer.address, port: peer.port });
    } catch {
      return this.failHandshake(peer, "lookup-error", AlertDescription.InternalError);
    }
    if (isThenable(result)) {
      peer.state = "looking-up";
      handshake.pending = [];
      handshake.pendingBytes = 0;
      Promise.resolve(result).then(
        (psk) => this.resumeAfterLookup(peer, psk, undefined),
        (err: unknown) => this.resumeAfterLookup(peer, undefined, err ?? new Error("lookup failed")),
      );
      return;
    }
    this.completeKeyExchange(peer, result);
  }

  /** ECDHE_ECDSA / ECDHE_RSA ClientKeyExchange: the client's point; the premaster secret is the ECDH secret (RFC 8422 5.10). */
  private handleEcdhClientKeyExchange(peer: Peer, msg: CompleteMessage): void {
    const handshake = peer.handshake!;
    let point: Buffer;
    try {
      point = parseEcdhClientKeyExchange(msg.body);
    } catch {
      return this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
    }
    const secret = handshake.ephemeral?.derive(point);
    handshake.ephemeral = undefined;
    if (!secret) return this.failHandshake(peer, "illegal-parameter", AlertDescription.IllegalParameter);
    this.disarmRetransmit(peer);
    handshake.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    // The extended master secret's session hash ends with the ClientKeyExchange (RFC 7627 3).
    this.deriveKeys(peer, secret);
    secret.fill(0);
    // A client with a certificate must prove it next; one without (when allowed) goes to Finished.
    peer.state = handshake.clientLeaf ? "awaiting-certificate-verify" : "awaiting-finished";
  }

  private resumeAfterLookup(peer: Peer, psk: Buffer | undefined, error: unknown): void {
    try {
      if (this.peers.get(peer.key) !== peer || peer.state !== "looking-up") return;
      const handshake = peer.handshake!;
      const queued = handshake.pending ?? [];
      handshake.pending = undefined;
      if (error !== undefined) return this.failHandshake(peer, "lookup-error", AlertDescription.InternalError);
      this.completeKeyExchange(peer, psk);
      if ((peer.state as PeerState) !== "awaiting-finished") return;
      for (const record of queued) {
        const current = this.peers.get(peer.key);
        if (current?.handshake?.pending) {
          current.handshake.pending.push(record);
          continue;
        }
        this.handleRecord(record, current, peer.socketAddress, peer.address, peer.port);
      }
    } catch (err) {
      this.stats.internalErrors++;
      this.emit("internal-error", err);
    }
  }

  private completeKeyExchange(peer: Peer, psk: Buffer | undefined): void {
    if (!psk || psk.length === 0 || psk.length > 0xffff) {
      return this.failHandshake(peer, "unknown-identity", AlertDescription.UnknownPskIdentity);
    }
    const handshake = peer.handshake!;
    if (handshake.issueTicket) handshake.pskDigest = pskDigest(psk);
    let premaster: Buffer;
    if (peer.suite.keyExchange === "ecdhe_psk") {
      if (!handshake.ecdhSecret) return this.failHandshake(peer, "unexpected-message", AlertDescription.InternalError); // a defect
      premaster = ecdhePskPremasterSecret(handshake.ecdhSecret, psk);
      handshake.ecdhSecret.fill(0);
      handshake.ecdhSecret = undefined;
    } else {
      premaster = pskPremasterSecret(psk);
    }
    this.deriveKeys(peer, premaster);
    premaster.fill(0);
    peer.state = "awaiting-finished";
  }

  /** Master secret and key block from the premaster secret; epoch-1 records can be read and written. */
  private deriveKeys(peer: Peer, premaster: Buffer): void {
    const handshake = peer.handshake!;
    const slab = this.secrets.buffer(peer.slot);
    const at = this.secrets.offset(peer.slot);
    const clientRandom = slab.subarray(at + SECRETS_CLIENT_RANDOM, at + SECRETS_CLIENT_RANDOM + 32);
    const sessionHash = handshake.extendedMasterSecret ? handshake.transcript.digest() : undefined;
    handshake.master = masterSecret(premaster, clientRandom, handshake.serverRandom, sessionHash);
    const keyBlock = keyExpansion(handshake.master, clientRandom, handshake.serverRandom, keyBlockLength(peer.suite));
    keyBlock.copy(slab, at + SECRETS_KEY_BLOCK);
    keyBlock.fill(0);
    peer.keysReady = true;
    peer.replay = new ReplayWindow();
  }

  private handleFinished(peer: Peer, msg: CompleteMessage): void {
    const handshake = peer.handshake!;
    const transcript = handshake.transcript;
    const expected = finishedVerifyData(handshake.master!, "client finished", transcript.digest());
    if (msg.body.length !== expected.length || !timingSafeEqual(msg.body, expected)) {
      return this.failHandshake(peer, "bad-finished", AlertDescription.DecryptError);
    }
    if (handshake.resumed) {
      // Abbreviated handshake: the client's Finished was the last flight; our Finished is in the slot.
      handshake.master!.fill(0);
      peer.finishedDelivered = true;
      this.stats.handshakesResumed++;
      if (handshake.addressUnproven) this.stats.resumedWithoutCookie++;
      return this.established(peer, handshake);
    }
    transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    // A PSK session's ticket names its identity and key; a certificate session's carries the client's
    // leaf with what its chain check found (the anchor, the expiry), so resuming needs no check again.
    const c = peer.certificate;
    const sealedCertificate: SealedCertificate | undefined =
      c && c.identity.spki
        ? { leafDer: c.leafDer, subject: c.subject, spki: c.identity.spki, anchor: c.anchor, validUntil: Math.floor(c.validUntil / 1000) }
        : undefined;
    const ticketCertificate = sealedCertificate && fitsTicket(sealedCertificate) ? sealedCertificate : undefined;
    if (handshake.issueTicket && this.ticketKeys) {
      // Promised in the ServerHello: a ticket, or an empty one when this session has nothing to seal
      // (a client without a certificate where none is required; RFC 5077 3.3).
      const ticket =
        handshake.pskDigest || ticketCertificate
          ? this.ticketKeys.seal({
              suiteId: peer.suite.id,
              extendedMasterSecret: handshake.extendedMasterSecret,
              identity: peer.identity ?? "",
              master: handshake.master!,
              issuedAt: Math.floor(Date.now() / 1000),
              pskDigest: handshake.pskDigest ?? NO_PSK_DIGEST,
              ...(ticketCertificate ? { certificate: ticketCertificate } : {}),
            })
          : EMPTY;
      const message = encodeHandshake(
        HandshakeType.NewSessionTicket,
        handshake.serverMessageSeq++,
        buildNewSessionTicket(ticket.length > 0 ? this.ticketKeys.lifetimeSeconds : 0, ticket),
      );
      peer.finalTicket = unpooledCopy(message); // kept until the client sends data
      transcript.add(message);
    }
    const serverVerify = finishedVerifyData(handshake.master!, "server finished", transcript.digest());
    encodeHandshake(HandshakeType.Finished, handshake.serverMessageSeq++, serverVerify).copy(
      this.secrets.buffer(peer.slot),
      this.secrets.offset(peer.slot) + this.secretsFinished,
    );
    handshake.master!.fill(0);
    peer.writeEpoch = 1;
    this.transmit(peer.socketAddress, peer.port, [this.finalFlight(peer)]);
    this.established(peer, handshake);
  }

  private established(peer: Peer, handshake: HandshakeState): void {
    // Free everything the established session no longer needs (transcript, master secret, flights, reassembler).
    this.disarmRetransmit(peer);
    this.handshakeEnded(peer, handshake);
    peer.handshake = undefined;
    peer.state = "established";
    this.stats.handshakesCompleted++;
    const conn = new DtlsServerConnection(
      this,
      peer,
      peer.certificate ? peer.certificate.identity : { method: "psk", pskIdentity: peer.identity ?? "" },
      peer.address,
      peer.port,
      this.localAddress,
      this.localPort,
      this.cipherLabels.get(peer.suite.id) ?? `DTLSv1.2 ${peer.suite.name}`,
      peer.certificate ? this.certificateLocal : undefined,
    );
    peer.certificate = undefined; // the connection holds the identity now
    peer.connection = conn;
    this.emit("connection", conn);
  }

  /**
   * Our current flight, to send or send again. An abbreviated handshake's flight is built afresh in
   * new records: the client's last flight has no timer and goes again only when our repeated
   * Finished passes its replay window, so a repeat with the same sequence number would stall it.
   * Flight 4 (plaintext, epoch 0) repeats the records as first sent, as a duplicated datagram would:
   * the client's own timer covers its flight 5, and node-dtls-client takes handshake messages it
   * has already processed, in new records, as a new flight and stalls.
   */
  private flight(peer: Peer, handshake: HandshakeState): Buffer[] {
    if (!handshake.resumedHello) return handshake.flight;
    const hello = encodeRecord(ContentType.Handshake, DTLS_1_2, 0, peer.writeSeq0++, handshake.resumedHello);
    const rest = this.finalFlight(peer);
    return [Buffer.concat([hello, rest], hello.length + rest.length)];
  }

  /**
   * ChangeCipherSpec + our Finished in one datagram, built afresh each time in new records with
   * fresh sequence numbers, so nothing but the 24-byte Finished message is stored.
   */
  private finalFlight(peer: Peer): Buffer {
    // NewSessionTicket goes before ChangeCipherSpec, so in epoch 0 (RFC 5077 3.3).
    const ticket = peer.finalTicket ? encodeRecord(ContentType.Handshake, DTLS_1_2, 0, peer.writeSeq0++, peer.finalTicket) : EMPTY;
    const ccs = encodeRecord(ContentType.ChangeCipherSpec, DTLS_1_2, 0, peer.writeSeq0++, CHANGE_CIPHER_SPEC_BODY);
    const at = this.secrets.offset(peer.slot) + this.secretsFinished;
    const finished = this.protect(peer, ContentType.Handshake, this.secrets.buffer(peer.slot).subarray(at, at + FINISHED_MESSAGE_LENGTH));
    return Buffer.concat([ticket, ccs, finished], ticket.length + ccs.length + finished.length);
  }

  // ---- epoch 1 ----

  private handleProtectedHandshake(peer: Peer, plaintext: Buffer): void {
    let fragments: HandshakeFragment[];
    try {
      fragments = parseHandshakeFragments(plaintext);
    } catch {
      if (peer.state === "awaiting-finished") this.failHandshake(peer, "decode-error", AlertDescription.DecodeError);
      return;
    }
    for (const f of fragments) {
      if (peer.state === "established") {
        if (f.msgType === HandshakeType.ClientHello) {
          // Renegotiation is refused (RFC 5246 7.2.2 warning, the session continues).
          this.sendAlert(peer, AlertLevel.Warning, AlertDescription.NoRenegotiation);
        } else if (f.msgType === HandshakeType.Finished) {
          this.resendLastFlight(peer); // client lost our Finished and resent its flight
        }
        continue;
      }
      // Finished may arrive before the CertificateVerify ahead of it: the reassembler keeps it in order.
      if (peer.state !== "awaiting-finished" && peer.state !== "awaiting-certificate-verify") return;
      this.feedHandshake(peer, f, true);
      if (this.peers.get(peer.key) !== peer) return;
    }
  }

  private handleProtectedAlert(peer: Peer, plaintext: Buffer): void {
    if (plaintext.length !== 2) return;
    const [level, description] = [plaintext[0], plaintext[1]];
    if (description === AlertDescription.CloseNotify) {
      if (peer.state === "established") this.sendAlert(peer, AlertLevel.Warning, AlertDescription.CloseNotify);
      if (peer.state !== "established") this.failHandshake(peer, "peer-alert");
      else this.removePeer(peer);
      return;
    }
    if (level === AlertLevel.Fatal) {
      if (peer.state === "established") this.removePeer(peer, new Error(`peer sent fatal alert ${description}`));
      else this.failHandshake(peer, "peer-alert");
    }
  }

  // ---- sending ----

  // The key block in the slot (RFC 5246 6.3, AEAD suites) is client key, server key, client IV,
  // server IV (16/16/4/4 bytes for AES, 32/32/12/12 for ChaCha20-Poly1305): records are written
  // with the server's, read with the client's.

  private protect(peer: Peer, type: number, plaintext: Buffer): Buffer {
    if (!peer.keysReady || peer.slot < 0) throw new Error("no keys for this session"); // a defect: callers check the state
    const seq = peer.writeSeq1++;
    const at = this.secrets.offset(peer.slot) + SECRETS_KEY_BLOCK;
    const k = peer.suite.keyLength;
    const sealed = sealRecord(
      peer.suite,
      this.secrets.buffer(peer.slot),
      at + k,
      at + 2 * k + peer.suite.fixedIvLength,
      type,
      DTLS_1_2,
      1,
      seq,
      peer.peerCid ? innerPlaintext(type, plaintext) : plaintext,
      peer.peerCid,
    );
    return peer.peerCid ? encodeCidRecord(DTLS_1_2, 1, seq, peer.peerCid, sealed) : encodeRecord(type, DTLS_1_2, 1, seq, sealed);
  }

  private open(peer: Peer, record: DtlsRecord): Buffer | undefined {
    const at = this.secrets.offset(peer.slot) + SECRETS_KEY_BLOCK;
    const k = peer.suite.keyLength;
    return openRecord(
      peer.suite,
      this.secrets.buffer(peer.slot),
      at,
      at + 2 * k,
      record.type,
      record.version,
      record.epoch,
      record.sequence,
      record.fragment,
      record.cid,
    );
  }

  private sendAlert(peer: Peer, level: number, description: number): void {
    const body = Buffer.from([level, description]);
    const record =
      peer.writeEpoch === 1
        ? this.protect(peer, ContentType.Alert, body)
        : encodeRecord(ContentType.Alert, DTLS_1_2, 0, peer.writeSeq0++, body);
    this.transmit(peer.socketAddress, peer.port, [record]);
  }

  sendApplicationData(session: object, conn: DtlsServerConnection, data: Buffer): boolean {
    const peer = session as Peer;
    if (peer.connection !== conn || peer.state !== "established") return false;
    if (peer.writeSeq1 >= 0xffffffffffff) {
      this.removePeer(peer, new Error("sequence numbers exhausted"));
      return false;
    }
    // No completion callback for data: Node would queue one tick per datagram for it. A datagram
    // the kernel refuses is lost like any other; CoAP retransmits what matters.
    this.socket?.send(this.protect(peer, ContentType.ApplicationData, data), peer.port, peer.socketAddress);
    return true;
  }

  closeByApplication(session: object, conn: DtlsServerConnection): void {
    const peer = session as Peer;
    if (peer.connection === conn && peer.state === "established") {
      this.sendAlert(peer, AlertLevel.Warning, AlertDescription.CloseNotify);
      this.removePeer(peer);
    } else {
      conn.markClosed();
    }
  }

  /**
   * No completion callback, as for data: Node queues a tick per datagram for one. A datagram the
   * kernel refuses (an unreachable peer) is lost like any other; the peer's timers cover it.
   */
  private transmit(address: string, port: number, datagrams: Buffer[]): void {
    const sock = this.socket;
    if (!sock) return;
    for (const d of datagrams) sock.send(d, port, address);
  }

  /** Answer to a repeated client flight; rate-limited because epoch-0 records are unauthenticated. */
  private resendLastFlight(peer: Peer): void {
    const now = Date.now();
    if (now - peer.lastOnDemandResendAt < ON_DEMAND_RESEND_INTERVAL_MS) return;
    peer.lastOnDemandResendAt = now;
    if (peer.handshake) this.transmit(peer.socketAddress, peer.port, this.flight(peer, peer.handshake));
    else if (peer.state === "established" && !peer.finishedDelivered)
      this.transmit(peer.socketAddress, peer.port, [this.finalFlight(peer)]);
  }

  private armRetransmit(peer: Peer): void {
    const handshake = peer.handshake;
    if (!handshake) return;
    handshake.retransmitTimer = setTimeout(() => {
      handshake.retransmitTimer = undefined;
      const waiting = peer.state === "awaiting-key-exchange" || (handshake.resumed && peer.state === "awaiting-finished");
      if (this.peers.get(peer.key) !== peer || !waiting || peer.handshake !== handshake) return;
      // Nothing goes to an unproven address after its short deadline (the sweep may end it a little later).
      if (handshake.addressUnproven && Date.now() - handshake.createdAt >= this.pressureHandshakeTimeoutMs) return;
      this.transmit(peer.socketAddress, peer.port, this.flight(peer, handshake));
      handshake.retransmitDelay = Math.min(handshake.retransmitDelay * 2, this.maxRetransmitMs);
      this.armRetransmit(peer);
    }, handshake.retransmitDelay);
    handshake.retransmitTimer.unref();
  }

  private disarmRetransmit(peer: Peer): void {
    const handshake = peer.handshake;
    if (handshake?.retransmitTimer) clearTimeout(handshake.retransmitTimer);
    if (handshake) handshake.retransmitTimer = undefined;
  }

  // ---- ending ----

  private failHandshake(peer: Peer, reason: HandshakeFailureReason, alert?: number, about?: { subject?: string; detail?: string }): void {
    const addressUnproven = peer.handshake?.addressUnproven === true;
    if (alert !== undefined) this.sendAlert(peer, AlertLevel.Fatal, alert);
    this.removePeer(peer);
    this.stats.handshakesFailed++;
    this.emit("handshake-failed", {
      address: peer.address,
      port: peer.port,
      reason,
      ...(peer.identity !== undefined ? { identity: peer.identity } : {}),
      ...(about?.subject !== undefined ? { subject: about.subject } : {}),
      ...(about?.detail !== undefined ? { detail: about.detail } : {}),
      ...(addressUnproven ? { addressUnproven: true as const } : {}),
    } satisfies HandshakeFailure);
  }

  private removePeer(peer: Peer, error?: Error): void {
    if (peer.state === "closed") return;
    const wasHandshaking = peer.state !== "established";
    peer.state = "closed";
    this.disarmRetransmit(peer);
    if (this.peers.get(peer.key) === peer) this.peers.delete(peer.key);
    if (peer.cid !== undefined && this.peersByCid.get(peer.cid) === peer) this.peersByCid.delete(peer.cid);
    if (wasHandshaking) this.handshakeEnded(peer, peer.handshake);
    peer.handshake?.ecdhSecret?.fill(0);
    peer.handshake?.master?.fill(0);
    peer.handshake = undefined;
    peer.finishedDelivered = true;
    peer.finalTicket = undefined;
    peer.keysReady = false;
    if (peer.slot >= 0) this.secrets.release(peer.slot);
    peer.slot = -1;
    peer.connection?.markClosed(error);
  }

  private handshakeEnded(peer: Peer, handshake: HandshakeState | undefined): void {
    this.handshakingPeers.delete(peer);
    if (!handshake) return;
    const n = (this.handshakingBySource.get(handshake.source) ?? 1) - 1;
    if (n > 0) this.handshakingBySource.set(handshake.source, n);
    else this.handshakingBySource.delete(handshake.source);
  }

  private sweep(): void {
    try {
      const now = Date.now();
      const handshakeTimeoutMs =
        this.handshakingPeers.size * 2 >= this.maxHandshaking ? this.pressureHandshakeTimeoutMs : this.handshakeTimeoutMs;
      // Deleting the current entry while iterating a Map or Set is safe; nothing is copied per tick.
      for (const peer of this.handshakingPeers) {
        const handshake = peer.handshake;
        if (!handshake) continue;
        // A resumption answered without a cookie always has the short deadline: its address is unproven.
        const limit = handshake.addressUnproven ? this.pressureHandshakeTimeoutMs : handshakeTimeoutMs;
        if (now - handshake.createdAt >= limit) this.failHandshake(peer, "timeout");
      }
      if (now < this.nextIdleSweepAt) return;
      this.nextIdleSweepAt = now + this.idleSweepEveryMs;
      for (const peer of this.peers.values()) {
        if (peer.state === "established" && now - peer.lastRecordAt >= this.idleTimeoutMs) {
          this.sendAlert(peer, AlertLevel.Warning, AlertDescription.CloseNotify);
          this.removePeer(peer, new Error("idle timeout"));
        }
      }
    } catch (err) {
      this.stats.internalErrors++;
      this.emit("internal-error", err);
    }
  }
}

/** A client's flight 5 with a certificate chain is the largest message we reassemble. */
const REASSEMBLY_LIMITS = Object.freeze({ maxMessageLength: 12288, maxAhead: 4, maxBufferedBytes: 16384 });
/**
 * Flight datagrams stay within an IPv6 minimum-MTU path (1280 - 40 - 8) with room for tunnels;
 * handshake fragments are cut so a record fits in one.
 */
const FLIGHT_DATAGRAM_BYTES = 1200;
const FLIGHT_FRAGMENT_BODY = FLIGHT_DATAGRAM_BYTES - 13 - 12;
/** Our Connection IDs (RFC 9146): random, 8 bytes, so a client cannot guess another session's. */
const CID_LENGTH = 8;
const CHANGE_CIPHER_SPEC_BODY = Buffer.from([1]);
/** The digest field of a certificate session's ticket (no PSK behind it). */
const NO_PSK_DIGEST = Buffer.alloc(16);
const EMPTY = Buffer.alloc(0);

/** Wipes a ticket's master secret that will not be used; for `return forget(state)`. */
function forget(state: TicketState): undefined {
  state.master.fill(0);
  return undefined;
}

function isThenable(v: unknown): v is PromiseLike<Buffer | undefined> {
  return typeof v === "object" && v !== null && typeof (v as { then?: unknown }).then === "function";
}

function copyRecord(r: DtlsRecord): DtlsRecord {
  return { ...r, fragment: Buffer.from(r.fragment) };
}
