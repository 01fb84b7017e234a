// One CoAP endpoint per Connection, client and server at once (RFC 8323 section 3 lets either side
// serve). Over DTLS it speaks RFC 7252 (types, message IDs, retransmission, dedup); over TLS it
// speaks RFC 8323 (CSM, Ping/Pong, Release, Abort). Observe (RFC 7641) and Block2 (RFC 7959) on top.
import { EventEmitter } from "node:events";
import { createHash, randomInt } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Connection } from "../transport/connection";
import { pooledRandomBytes } from "../transport/random-pool";
import { SparseMap } from "../transport/sparse-map";
import {
  Code,
  CONTENT_FORMAT_TEXT,
  OptionNumber,
  codeFromString,
  codeToString,
  type CoapMessage,
  type CoapOption,
  type CoapType,
} from "./message";
import { CoapFormatError } from "./errors";
import { decodeUdp, encodeUdp } from "./udp-codec";
import { decodeTcp, encodeTcp } from "./tcp-codec";
import {
  block2Option,
  blockSize,
  contentFormatOption,
  etagOption,
  getBlock2,
  getContentFormat,
  getETag,
  getMaxAge,
  getObserve,
  getUriPath,
  getUriQuery,
  isCritical,
  maxAgeOption,
  observeOption,
  size2Option,
  szxForSize,
  uriPathOptions,
  uriQueryOptions,
  withoutOption,
  type BlockValue,
} from "./options";
import {
  BASE_MAX_MESSAGE_SIZE,
  abortMessage,
  csmMessage,
  isSignalCode,
  parseSignal,
  pingMessage,
  pongMessage,
  releaseMessage,
  type Signal,
} from "./signalling";

export interface TransmissionParameters {
  ackTimeoutMs: number;
  ackRandomFactor: number;
  maxRetransmit: number;
}

export interface EndpointOptions {
  transmission?: TransmissionParameters;
  /** Largest message we accept (and announce in our CSM over TCP). Default 65536. */
  maxMessageSize?: number;
  /** Per-peer incoming request rate limit. Default 100/s, burst 200. */
  rateLimit?: { requestsPerSecond: number; burst: number };
  nonLifetimeMs?: number;
  exchangeLifetimeMs?: number;
  /** A request the handler has not answered within this bound gets 5.00. Default 30 s. */
  handlerTimeoutMs?: number;
  /** Critical option numbers the handler understands beyond the ones the endpoint knows. */
  extraCriticalOptions?: number[];
  /** Limits on state (defaults in ENDPOINT_LIMITS). */
  limits?: Partial<EndpointLimits>;
  /**
   * Keep each answer to a NON request (other than GET) for NON_LIFETIME and send it again to a
   * repeat (RFC 9132 resends NON requests until answered), so a repeated PUT is not applied twice.
   * Default true. An endpoint that serves only idempotent resources (the ISP side's /hb) turns it
   * off: answering a repeat afresh gives the same answer and nothing is held per heartbeat.
   */
  replayNonAnswers?: boolean;
}

export interface EndpointLimits {
  /** Outstanding outgoing requests (observations included). */
  pendingRequests: number;
  /** Remembered incoming message IDs (UDP dedup). */
  dedupEntries: number;
  /** Active observers of our resources. */
  observers: number;
  /** Incoming requests the handler is working on at once. */
  concurrentRequests: number;
  /** Largest Block2 body we reassemble as a client. */
  reassemblyBytes: number;
  /** Representations kept to serve later Block2 blocks. */
  blockCacheEntries: number;
}

export const ENDPOINT_LIMITS: EndpointLimits = {
  pendingRequests: 256,
  dedupEntries: 2048,
  observers: 128,
  concurrentRequests: 128,
  reassemblyBytes: 4 * 1024 * 1024,
  blockCacheEntries: 32,
};

export interface OutgoingRequest {
  method: "GET" | "PUT" | "DELETE" | "POST";
  path: readonly string[];
  query?: string[];
  /** UDP only: CON (default) or NON. */
  confirmable?: boolean;
  payload?: Buffer;
  contentFormat?: number;
  options?: CoapOption[];
  observe?: 0 | 1;
  /** NON only: resend until a response arrives, every repeatMs. */
  repeatMs?: number;
  timeoutMs?: number;
}

export interface CoapResponse {
  code: number;
  options: CoapOption[];
  payload: Buffer;
  contentFormat?: number;
  observe?: number;
  maxAge?: number;
  message: CoapMessage;
}

export interface ResponseSpec {
  code: number;
  payload?: Buffer;
  contentFormat?: number;
  options?: CoapOption[];
  maxAge?: number;
}

export interface IncomingRequest {
  method: string;
  code: number;
  path: string[];
  query: string[];
  options: CoapOption[];
  payload: Buffer;
  contentFormat?: number;
  observe?: number;
  confirmable: boolean;
  token: Buffer;
  respond(res: ResponseSpec): void;
  /**
   * Ends the exchange without a response (e.g. RFC 9132 4.4.3: an efficacy update for an unknown
   * mid is silently ignored). A CON still gets its empty ACK so the peer stops retransmitting.
   */
  ignore(): void;
  /** When observe===0: register; returns a handle to send notifications (NON 2.05 with increasing Observe numbers). */
  acceptObserve(): ObserverHandle;
}

export interface ObserverHandle {
  notify(res: ResponseSpec): void;
  readonly active: boolean;
  onCancel(cb: () => void): void;
  cancel(): void;
}

export type CoapEndpointErrorCode =
  "TIMEOUT" | "RESET" | "CLOSED" | "TOO_LARGE" | "LIMIT" | "RELEASED" | "BLOCK" | "ABORTED" | "BAD_RESPONSE";

/** Why an outgoing request, ping or observation failed. */
export class CoapEndpointError extends Error {
  constructor(
    readonly code: CoapEndpointErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "CoapEndpointError";
  }
}

/** RFC 9132 section 4.5 defaults (max-retransmit 3), which DOTS peers start from. */
export const DOTS_TRANSMISSION_DEFAULTS: TransmissionParameters = { ackTimeoutMs: 2000, ackRandomFactor: 1.5, maxRetransmit: 3 };
const MAX_LATENCY_MS = 100_000;
/** UDP: blocks of 1024 keep a message under the 1152-byte budget of a 1280 PMTU. */
const UDP_BLOCK_SZX = 6;
const UDP_MAX_UNBLOCKED_PAYLOAD = 1024;
/** RFC 7641 section 3.4: notifications older than this no longer compete on sequence numbers. */
const OBSERVE_REORDER_WINDOW_MS = 128_000;
const BLOCK_CACHE_TTL_MS = 120_000;

export function maxTransmitSpanMs(p: TransmissionParameters): number {
  return p.ackTimeoutMs * (2 ** p.maxRetransmit - 1) * p.ackRandomFactor;
}

export function maxTransmitWaitMs(p: TransmissionParameters): number {
  return p.ackTimeoutMs * (2 ** (p.maxRetransmit + 1) - 1) * p.ackRandomFactor;
}

const METHODS: Record<string, number> = { GET: Code.GET, POST: Code.POST, PUT: Code.PUT, DELETE: Code.DELETE };
const METHOD_NAMES: Record<number, string> = { [Code.GET]: "GET", [Code.POST]: "POST", [Code.PUT]: "PUT", [Code.DELETE]: "DELETE" };
const KNOWN_CRITICAL = new Set<number>([
  OptionNumber.IfMatch,
  OptionNumber.UriHost,
  OptionNumber.IfNoneMatch,
  OptionNumber.UriPort,
  OptionNumber.UriPath,
  OptionNumber.UriQuery,
  OptionNumber.Accept,
  OptionNumber.Block2,
]);

interface Transmission {
  mid: number;
  bytes: Buffer;
  retransmissions: number;
  timeoutMs: number;
  /** performance.now() of the first send, for RTT samples. */
  sentAt: number;
  timer?: NodeJS.Timeout;
  onAck(msg: CoapMessage): void;
  onReset(): void;
  onGiveUp(): void;
}

interface ClientObservation {
  onNotification(res: CoapResponse): void;
  lastSeq?: number;
  lastTime: number;
}

interface PendingExchange {
  key: string;
  token: Buffer;
  message: CoapMessage;
  resolve(res: CoapResponse): void;
  reject(err: Error): void;
  settled: boolean;
  timeout?: NodeJS.Timeout;
  repeatTimer?: NodeJS.Timeout;
  /** UDP NON request message IDs, so a RST can find us. */
  nonMids: number[];
  /** UDP CON request message ID, to stop retransmitting once any response arrives. */
  conMid?: number;
  observation?: ClientObservation;
}

interface DedupEntry {
  expires: number;
  /** The ACK or RST we answered with, sent again for a duplicate CON. */
  reply?: Buffer;
}

interface InProgress {
  key: string;
  mid?: number;
  confirmable: boolean;
  responded: boolean;
  ackSent: boolean;
  separateTimer?: NodeJS.Timeout;
  handlerTimer?: NodeJS.Timeout;
  observer?: ServerObserver;
  /** Block2 the client asked for (in its request), if any. */
  requestedBlock?: BlockValue;
  cacheKey: string;
  /** UDP NON: identity of the request (token, code, options, payload) for the repeat cache. */
  nonKey?: string;
}

interface ServerObserver {
  key: string;
  token: Buffer;
  cacheKey: string;
  seq: number;
  active: boolean;
  cancelCallbacks: Array<() => void>;
  handle: ObserverHandle;
}

interface BlockCacheEntry {
  code: number;
  payload: Buffer;
  etag: Buffer;
  options: CoapOption[];
  expires: number;
}

function hexKey(token: Buffer): string {
  return token.toString("hex");
}

/** Above this many key bytes a NON request is remembered by a SHA-256 of them instead. */
const SMALL_NON_KEY_BYTES = 96;

/** Everything that makes two NON requests the same request, except the message ID. */
function nonRequestKey(msg: CoapMessage): string {
  // Small requests (heartbeats) keyed by their exact bytes: no hash per request. The encoding is
  // the one hashed below, so both are unambiguous; the first character keeps the two kinds apart.
  let size = 2 + msg.token.length + msg.payload.length;
  for (const o of msg.options) size += 6 + o.value.length;
  if (size <= SMALL_NON_KEY_BYTES) {
    const b = Buffer.allocUnsafe(size);
    b[0] = msg.code;
    b[1] = msg.token.length;
    let at = 2 + msg.token.copy(b, 2);
    for (const o of msg.options) {
      b.writeUInt16BE(o.number, at);
      b.writeUInt32BE(o.value.length, at + 2);
      at += 6 + o.value.copy(b, at + 6);
    }
    msg.payload.copy(b, at);
    return `=${b.toString("latin1")}`;
  }
  const h = createHash("sha256");
  h.update(Buffer.from([msg.code, msg.token.length]));
  h.update(msg.token);
  for (const o of msg.options) {
    const head = Buffer.alloc(6);
    head.writeUInt16BE(o.number, 0);
    head.writeUInt32BE(o.value.length, 2);
    h.update(head);
    h.update(o.value);
  }
  h.update(msg.payload);
  return h.digest("base64");
}

/** Diagnostic payloads stay far below one 1280-byte datagram (RFC 9132 section 7.3). */
export const MAX_DIAGNOSTIC_BYTES = 512;

/** UTF-8 diagnostic text cut to maxBytes on a character boundary, marked with "..." when cut. */
export function diagnosticPayload(text: string, maxBytes = MAX_DIAGNOSTIC_BYTES): Buffer {
  const full = Buffer.from(text, "utf8");
  if (full.length <= maxBytes) return full;
  let end = Math.max(0, maxBytes - 3);
  while (end > 0 && (full[end] & 0xc0) === 0x80) end--; // never split a multi-byte character
  return Buffer.concat([full.subarray(0, end), Buffer.from("...")]);
}

/**
 * The answer "code + diagnostic" both engines give to a request they refuse: the code as a byte
 * or in dotted form ("4.00"), the text as a capped text/plain payload.
 */
export function diagnosticResponse(c: number | string, text: string): { code: number; payload: Buffer; contentFormat: number } {
  return { code: typeof c === "string" ? codeFromString(c) : c, payload: diagnosticPayload(text), contentFormat: CONTENT_FORMAT_TEXT };
}

function diagnostic(text: string): Buffer {
  return diagnosticPayload(text);
}

/**
 * Events:
 * - 'activity' (): any valid message from the peer (liveness for heartbeats / session loss).
 * - 'protocol-error' (Error): malformed input dropped (UDP) or answered with Abort (TCP).
 * - 'handler-error' (Error): the request handler threw, rejected, or answered twice.
 * - 'csm' ({maxMessageSize, blockWiseTransfer}): TCP, the peer's CSM arrived.
 * - 'release' (Signal): TCP, the peer sent Release; we finish pending requests, then close.
 * - 'peer-abort' (Signal): TCP, the peer sent Abort; 'close' follows.
 * - 'close' (CoapEndpointError): once, when the endpoint or its connection ended.
 * close() also closes the connection; pending requests reject with code CLOSED.
 */
export class CoapEndpoint extends EventEmitter {
  readonly isTcp: boolean;
  private params: TransmissionParameters;
  private readonly maxMessageSize: number;
  private readonly limits: EndpointLimits;
  private readonly handlerTimeoutMs: number;
  private readonly knownCritical: ReadonlySet<number>;
  private nonLifetimeMs: number;
  private exchangeLifetimeMs: number;
  private readonly fixedLifetimes: { non?: number; exchange?: number };

  private handler?: (req: IncomingRequest) => void | Promise<void>;
  private closed = false;
  private released = false;
  private releaseTimer?: NodeJS.Timeout;
  private nextMid = randomInt(0, 0x10000);
  private srttMs: number | undefined;

  // Client side
  private readonly pending = new SparseMap<string, PendingExchange>();
  private readonly transmissions = new SparseMap<number, Transmission>();
  private readonly nonRequestMids = new SparseMap<number, string>();
  private readonly tcpPings = new SparseMap<string, { resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout }>();

  // Server side
  private readonly dedup = new SparseMap<number, DedupEntry>();
  private readonly inProgress = new SparseMap<string, InProgress>();
  private readonly inProgressByMid = new SparseMap<number, InProgress>();
  private readonly observers = new SparseMap<string, ServerObserver>();
  private readonly notificationMids = new SparseMap<number, string>();
  private readonly blockCache = new SparseMap<string, BlockCacheEntry>();
  /** UDP: answers to recent NON requests, by request identity, for repeats with fresh message IDs. */
  private readonly nonAnswers = new SparseMap<string, { expires: number; response: CoapMessage }>();
  private readonly replayNonAnswers: boolean;
  private readonly rate: { perMs: number; burst: number; tokens: number; last: number };

  // TCP
  private peerCsmSeen = false;
  private peerMaxMessageSize = BASE_MAX_MESSAGE_SIZE;

  private readonly onConnMessage = (data: Buffer) => this.receive(data);
  private readonly onConnClose = (err?: Error) =>
    this.shutdown(new CoapEndpointError("CLOSED", err ? `connection closed: ${err.message}` : "connection closed"));

  constructor(
    readonly connection: Connection,
    options: EndpointOptions = {},
  ) {
    super();
    this.isTcp = connection.transport === "tls";
    this.params = { ...(options.transmission ?? DOTS_TRANSMISSION_DEFAULTS) };
    this.maxMessageSize = options.maxMessageSize ?? 65536;
    this.limits = { ...ENDPOINT_LIMITS, ...options.limits };
    this.handlerTimeoutMs = options.handlerTimeoutMs ?? 30_000;
    // Shared unless this endpoint knows more options: one Set less per session.
    this.knownCritical = options.extraCriticalOptions?.length
      ? new Set([...KNOWN_CRITICAL, ...options.extraCriticalOptions])
      : KNOWN_CRITICAL;
    this.fixedLifetimes = { non: options.nonLifetimeMs, exchange: options.exchangeLifetimeMs };
    this.replayNonAnswers = options.replayNonAnswers ?? true;
    this.nonLifetimeMs = 0;
    this.exchangeLifetimeMs = 0;
    this.computeLifetimes();
    const rl = options.rateLimit ?? { requestsPerSecond: 100, burst: 200 };
    this.rate = { perMs: rl.requestsPerSecond / 1000, burst: rl.burst, tokens: rl.burst, last: Date.now() };
    connection.on("message", this.onConnMessage);
    connection.once("close", this.onConnClose);
    if (connection.closed) {
      queueMicrotask(() => this.shutdown(new CoapEndpointError("CLOSED", "connection already closed")));
      return;
    }
    // RFC 8323 section 5.3: CSM is our first message, sent without waiting for the peer's.
    if (this.isTcp) this.sendMessage(csmMessage({ maxMessageSize: this.maxMessageSize }));
  }

  get transmissionParameters(): TransmissionParameters {
    return { ...this.params };
  }

  /** TCP: what the peer's CSM allows us to send (1152 until it says otherwise). */
  get peerMaxMessageSizeBytes(): number {
    return this.peerMaxMessageSize;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Smoothed round-trip time in ms from unretransmitted CON exchanges and pings (RFC 6298
   * weights), or undefined before the first sample. RFC 9132 section 4.4.2.1 lets a server pace
   * NON notifications by it instead of one per 3 s.
   */
  get rttEstimateMs(): number | undefined {
    return this.srttMs;
  }

  private sampleRtt(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    this.srttMs = this.srttMs === undefined ? ms : 0.875 * this.srttMs + 0.125 * ms;
  }

  setTransmissionParameters(p: TransmissionParameters): void {
    if (
      !(p.ackTimeoutMs > 0) ||
      !(p.ackRandomFactor >= 1) ||
      !Number.isInteger(p.maxRetransmit) ||
      p.maxRetransmit < 0 ||
      p.maxRetransmit > 15
    ) {
      throw new RangeError(`invalid transmission parameters ${JSON.stringify(p)}`);
    }
    this.params = { ...p };
    this.computeLifetimes();
  }

  private computeLifetimes(): void {
    const span = maxTransmitSpanMs(this.params);
    this.nonLifetimeMs = this.fixedLifetimes.non ?? span + MAX_LATENCY_MS;
    this.exchangeLifetimeMs = this.fixedLifetimes.exchange ?? span + 2 * MAX_LATENCY_MS + this.params.ackTimeoutMs;
  }

  onRequest(handler: (req: IncomingRequest) => void | Promise<void>): void {
    this.handler = handler;
  }

  // ------------------------------------------------------------------------------------------
  // Sending

  private allocMid(): number {
    const mid = this.nextMid;
    this.nextMid = (this.nextMid + 1) & 0xffff;
    return mid;
  }

  private newToken(): Buffer {
    for (;;) {
      const t = pooledRandomBytes(8);
      if (!this.pending.has(hexKey(t))) return t;
    }
  }

  /** Encodes in this connection's framing and sends; returns the bytes (for dedup caches). */
  private sendMessage(msg: CoapMessage): Buffer | undefined {
    if (this.closed) return undefined;
    const bytes = this.isTcp ? encodeTcp(msg) : encodeUdp(msg);
    this.connection.send(bytes);
    return bytes;
  }

  private sendEmpty(type: CoapType, mid: number): Buffer | undefined {
    return this.sendMessage({ type, code: Code.Empty, messageId: mid, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) });
  }

  /** UDP: send a CON and retransmit with exponential back-off until ACK, RST or give-up. */
  private sendConfirmable(msg: CoapMessage, handlers: Pick<Transmission, "onAck" | "onReset" | "onGiveUp">): number {
    const mid = this.allocMid();
    const bytes = encodeUdp({ ...msg, type: "CON", messageId: mid });
    const initial = this.params.ackTimeoutMs * (1 + Math.random() * (this.params.ackRandomFactor - 1));
    const t: Transmission = { mid, bytes, retransmissions: 0, timeoutMs: initial, sentAt: performance.now(), ...handlers };
    const arm = () => {
      t.timer = setTimeout(() => {
        if (this.closed) return;
        if (t.retransmissions >= this.params.maxRetransmit) {
          // As for the request deadline: an ACK or RST already waiting is read first.
          setImmediate(() => {
            if (this.closed || this.transmissions.get(mid) !== t) return;
            this.transmissions.delete(mid);
            t.onGiveUp();
          });
          return;
        }
        t.retransmissions++;
        t.timeoutMs *= 2;
        this.connection.send(t.bytes);
        arm();
      }, t.timeoutMs);
    };
    this.stopTransmission(mid); // a 16-bit wrap onto a still-open exchange: the old one loses
    this.transmissions.set(mid, t);
    this.connection.send(bytes);
    arm();
    return mid;
  }

  private stopTransmission(mid: number): Transmission | undefined {
    const t = this.transmissions.get(mid);
    if (t) {
      clearTimeout(t.timer);
      this.transmissions.delete(mid);
    }
    return t;
  }

  // ------------------------------------------------------------------------------------------
  // Client side

  request(req: OutgoingRequest): Promise<CoapResponse> {
    return new Promise((resolve, reject) =>
      this.requestWithCallback(req, (err, res) => (err === undefined ? resolve(res as CoapResponse) : reject(err))),
    );
  }

  /**
   * request() answered through `done` instead of a promise: the heartbeat path sends one per
   * session and interval, and a promise chain per heartbeat was a measurable part of its cost.
   * `done` runs once, never inside this call.
   */
  requestWithCallback(req: OutgoingRequest, done: (err: Error | undefined, res?: CoapResponse) => void): void {
    let inCall = true;
    this.startExchange(
      req,
      (first) => {
        let block: BlockValue | undefined;
        try {
          block = this.firstBlock2(first);
        } catch (e) {
          done(e as Error);
          return;
        }
        if (!block?.more) done(undefined, first);
        else this.completeBlocks(req, first).then((full) => done(undefined, full), done);
      },
      (err) => {
        if (inCall) queueMicrotask(() => done(err));
        else done(err);
      },
    );
    inCall = false;
  }

  async observe(
    req: OutgoingRequest,
    onNotification: (res: CoapResponse) => void,
  ): Promise<{ first: CoapResponse; cancel(): Promise<void> }> {
    let token: Buffer | undefined;
    const observation: ClientObservation = {
      lastTime: 0,
      onNotification: (res) => {
        // Block2 notifications: only the first block arrives; fetch the rest before handing it out.
        this.completeBlocks(req, res).then(onNotification, (e: Error) => this.emit("protocol-error", e));
      },
    };
    const first = await this.exchange({ ...req, observe: 0 }, observation, (t) => (token = t));
    let full: CoapResponse;
    try {
      full = await this.completeBlocks(req, first);
    } catch (e) {
      // Without its first representation the observation is useless: drop it locally.
      const entry = token && this.pending.get(hexKey(token));
      if (entry && entry.observation === observation) this.finishPending(entry);
      throw e;
    }
    const registered = first.observe !== undefined && first.code >> 5 === 2 && token !== undefined && this.pending.has(hexKey(token));
    return {
      first: full,
      cancel: async () => {
        if (!registered || token === undefined) return;
        const entry = this.pending.get(hexKey(token));
        if (entry?.observation !== observation) return; // already ended
        this.finishPending(entry);
        if (this.closed) return;
        // RFC 7641 section 3.6: GET with Observe=1 and the observation's token.
        try {
          await this.exchange({ ...req, method: "GET", observe: 1, payload: undefined }, undefined, undefined, token);
        } catch {
          // The observation is gone on our side either way; the server drops it on the next RST.
        }
      },
    };
  }

  private buildRequestMessage(req: OutgoingRequest, token: Buffer): CoapMessage {
    const code = METHODS[req.method];
    if (code === undefined) throw new CoapEndpointError("LIMIT", `unsupported method ${String(req.method)}`);
    const options: CoapOption[] = [...uriPathOptions(req.path), ...uriQueryOptions(req.query ?? [])];
    if (req.contentFormat !== undefined) options.push(contentFormatOption(req.contentFormat));
    if (req.observe !== undefined) options.push(observeOption(req.observe));
    if (req.options) options.push(...req.options);
    return { code, token, options, payload: req.payload ?? Buffer.alloc(0) };
  }

  /** One token, one response (or, with an observation, a stream of notifications after it). */
  private exchange(
    req: OutgoingRequest,
    observation?: ClientObservation,
    onToken?: (t: Buffer) => void,
    forcedToken?: Buffer,
  ): Promise<CoapResponse> {
    return new Promise<CoapResponse>((resolve, reject) => this.startExchange(req, resolve, reject, observation, onToken, forcedToken));
  }

  /** Sends the request; `resolve` gets the first response, `reject` why there is none. */
  private startExchange(
    req: OutgoingRequest,
    resolve: (res: CoapResponse) => void,
    reject: (err: Error) => void,
    observation?: ClientObservation,
    onToken?: (t: Buffer) => void,
    forcedToken?: Buffer,
  ): void {
    if (this.closed) return reject(new CoapEndpointError("CLOSED", "CoAP endpoint closed"));
    if (this.released) return reject(new CoapEndpointError("RELEASED", "peer released the connection; no new requests"));
    if (this.pending.size >= this.limits.pendingRequests) {
      return reject(new CoapEndpointError("LIMIT", `too many outstanding requests (${this.limits.pendingRequests})`));
    }
    const token = forcedToken ?? this.newToken();
    let message: CoapMessage;
    try {
      message = this.buildRequestMessage(req, token);
    } catch (e) {
      return reject(e as Error);
    }
    if (this.isTcp) {
      const size = encodeTcp(message).length;
      if (size > this.peerMaxMessageSize) {
        return reject(
          new CoapEndpointError("TOO_LARGE", `request of ${size} bytes exceeds the peer's Max-Message-Size ${this.peerMaxMessageSize}`),
        );
      }
    }
    const key = hexKey(token);
    const entry: PendingExchange = { key, token, message, resolve, reject, settled: false, nonMids: [], observation };
    this.pending.set(key, entry);
    onToken?.(token);
    const timeoutMs = req.timeoutMs ?? maxTransmitWaitMs(this.params);
    entry.timeout = setTimeout(() => {
      // After a busy spell Node runs due timers before the I/O that waited meanwhile: read what is
      // already there (the answer, perhaps) before deciding that nothing came.
      setImmediate(() => {
        if (entry.settled) return;
        this.failPending(
          entry,
          new CoapEndpointError("TIMEOUT", `no response to ${req.method} /${req.path.join("/")} within ${timeoutMs} ms`),
        );
      });
    }, timeoutMs);
    const confirmable = req.confirmable ?? true;
    if (this.isTcp) {
      this.sendMessage(message);
    } else if (confirmable) {
      entry.conMid = this.sendConfirmable(message, {
        onAck: (ack) => {
          if (ack.code !== Code.Empty) this.handleResponse(ack, "ACK");
        },
        onReset: () => this.failPending(entry, new CoapEndpointError("RESET", `peer reset ${req.method} /${req.path.join("/")}`)),
        onGiveUp: () =>
          this.failPending(
            entry,
            new CoapEndpointError(
              "TIMEOUT",
              `no acknowledgement for ${req.method} /${req.path.join("/")} after ${this.params.maxRetransmit} retransmissions`,
            ),
          ),
      });
    } else {
      const sendNon = () => {
        const mid = this.allocMid();
        entry.nonMids.push(mid);
        if (entry.nonMids.length > 8) this.nonRequestMids.delete(entry.nonMids.shift() as number);
        this.nonRequestMids.set(mid, key);
        this.sendMessage({ ...message, type: "NON", messageId: mid });
      };
      sendNon();
      // Repeats reuse the token with a fresh message ID, so the peer's dedup does not swallow them.
      if (req.repeatMs !== undefined && req.repeatMs > 0) entry.repeatTimer = setInterval(sendNon, req.repeatMs);
    }
  }

  private finishPending(entry: PendingExchange): void {
    this.stopRequestTransmission(entry);
    clearTimeout(entry.timeout);
    clearInterval(entry.repeatTimer);
    entry.repeatTimer = undefined;
    for (const mid of entry.nonMids) this.nonRequestMids.delete(mid);
    if (this.pending.get(entry.key) === entry) this.pending.delete(entry.key);
  }

  /** A separate response can overtake a lost empty ACK: stop retransmitting the request then. */
  private stopRequestTransmission(entry: PendingExchange): void {
    if (entry.conMid === undefined) return;
    const t = this.transmissions.get(entry.conMid);
    if (t && t.bytes.subarray(4, 4 + entry.token.length).equals(entry.token)) this.stopTransmission(entry.conMid);
    entry.conMid = undefined;
  }

  private failPending(entry: PendingExchange, err: Error): void {
    this.finishPending(entry);
    if (!entry.settled) {
      entry.settled = true;
      entry.reject(err);
    }
  }

  private toResponse(msg: CoapMessage): CoapResponse {
    return {
      code: msg.code,
      options: msg.options,
      payload: msg.payload,
      contentFormat: getContentFormat(msg.options),
      observe: getObserve(msg.options),
      maxAge: getMaxAge(msg.options),
      message: msg,
    };
  }

  /** A response (piggybacked, separate, NON, TCP, or a notification) for one of our tokens. */
  private handleResponse(msg: CoapMessage, via: CoapType | "TCP"): boolean {
    const entry = this.pending.get(hexKey(msg.token));
    if (!entry) return false;
    // RFC 7252 section 5.4.1: a response with an unrecognized critical option is rejected.
    const unknown = msg.options.find((o) => isCritical(o.number) && !this.knownCritical.has(o.number));
    if (unknown) {
      if (via === "CON") this.reply(msg.messageId ?? 0, "RST");
      const err = new CoapEndpointError("BAD_RESPONSE", `response carries unrecognized critical option ${unknown.number}`);
      this.emit("protocol-error", err);
      this.failPending(entry, err);
      return true;
    }
    let res: CoapResponse;
    try {
      res = this.toResponse(msg);
    } catch (e) {
      this.emit("protocol-error", e as Error);
      return true;
    }
    if (via === "CON") this.reply(msg.messageId ?? 0, "ACK");
    const obs = entry.observation;
    if (!entry.settled) {
      entry.settled = true;
      this.stopRequestTransmission(entry);
      clearTimeout(entry.timeout);
      clearInterval(entry.repeatTimer);
      entry.repeatTimer = undefined;
      if (obs && res.observe !== undefined && res.code >> 5 === 2) {
        obs.lastSeq = this.isTcp ? undefined : res.observe;
        obs.lastTime = Date.now();
      } else {
        this.finishPending(entry);
      }
      entry.resolve(res);
      return true;
    }
    if (!obs) return true;
    // A later notification. RFC 7641 section 3.4 freshness check (TCP keeps order by itself).
    const now = Date.now();
    if (!this.isTcp && res.observe !== undefined && obs.lastSeq !== undefined) {
      const v1 = obs.lastSeq;
      const v2 = res.observe;
      const fresh = (v1 < v2 && v2 - v1 < 2 ** 23) || (v1 > v2 && v1 - v2 > 2 ** 23) || now > obs.lastTime + OBSERVE_REORDER_WINDOW_MS;
      if (!fresh) return true;
    }
    obs.lastSeq = res.observe;
    obs.lastTime = now;
    // A non-2.xx notification or one without Observe ends the observation (RFC 7641 section 3.2).
    if (res.code >> 5 !== 2 || res.observe === undefined) this.finishPending(entry);
    obs.onNotification(res);
    return true;
  }

  /** The Block2 option of a first response, if any; a malformed one is a BLOCK error. */
  private firstBlock2(first: CoapResponse): BlockValue | undefined {
    try {
      return getBlock2(first.options);
    } catch (e) {
      throw new CoapEndpointError("BLOCK", `bad Block2 option: ${(e as Error).message}`);
    }
  }

  /** Fetches the remaining Block2 blocks of `first` and returns the reassembled response. */
  private async completeBlocks(req: OutgoingRequest, first: CoapResponse): Promise<CoapResponse> {
    let block = this.firstBlock2(first);
    if (!block || !block.more) return first;
    if (block.num !== 0) throw new CoapEndpointError("BLOCK", `first response carries block ${block.num}, expected 0`);
    const etag = getETag(first.options);
    const parts = [first.payload];
    let received = first.payload.length;
    while (block.more) {
      if (received > this.limits.reassemblyBytes)
        throw new CoapEndpointError("BLOCK", `Block2 body exceeds ${this.limits.reassemblyBytes} bytes`);
      const szx = Math.min(block.szx, 6);
      const num = Math.floor(received / blockSize(szx));
      const next = await this.exchange({
        method: "GET",
        path: req.path,
        query: req.query,
        confirmable: req.confirmable,
        timeoutMs: req.timeoutMs,
        options: [
          ...withoutOption(withoutOption(req.options ?? [], OptionNumber.Observe), OptionNumber.Block2),
          block2Option({ num, more: false, szx }),
        ],
      });
      if (next.code >> 5 !== 2) throw new CoapEndpointError("BLOCK", `block ${num} answered ${codeToString(next.code)}`);
      const nextEtag = getETag(next.options);
      if (etag && nextEtag && !etag.equals(nextEtag))
        throw new CoapEndpointError("BLOCK", "representation changed during the Block2 transfer (ETag differs)");
      const b = getBlock2(next.options);
      if (!b || b.num * blockSize(Math.min(b.szx, 6)) !== received)
        throw new CoapEndpointError("BLOCK", `peer answered block ${b?.num ?? "none"} for block ${num}`);
      parts.push(next.payload);
      received += next.payload.length;
      block = b;
    }
    const payload = Buffer.concat(parts);
    const options = withoutOption(first.options, OptionNumber.Block2);
    return { ...first, options, payload, message: { ...first.message, options, payload } };
  }

  ping(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.closed) return reject(new CoapEndpointError("CLOSED", "CoAP endpoint closed"));
      const start = performance.now();
      const done = () => resolve(performance.now() - start);
      if (this.isTcp) {
        const token = pooledRandomBytes(4);
        const key = hexKey(token);
        const timer = setTimeout(() => {
          this.tcpPings.delete(key);
          reject(new CoapEndpointError("TIMEOUT", "no Pong"));
        }, maxTransmitWaitMs(this.params));
        if (this.tcpPings.size >= 16) {
          clearTimeout(timer);
          return reject(new CoapEndpointError("LIMIT", "too many outstanding pings"));
        }
        const pong = () => {
          this.sampleRtt(performance.now() - start);
          done();
        };
        this.tcpPings.set(key, { resolve: pong, reject, timer });
        this.sendMessage(pingMessage(token));
        return;
      }
      // RFC 7252 section 4.3: an empty CON is answered with RST.
      this.sendConfirmable(
        { code: Code.Empty, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) },
        { onAck: done, onReset: done, onGiveUp: () => reject(new CoapEndpointError("TIMEOUT", "no answer to CoAP ping")) },
      );
    });
  }

  // ------------------------------------------------------------------------------------------
  // Receiving

  private receive(data: Buffer): void {
    if (this.closed) return;
    try {
      if (this.isTcp) this.receiveTcp(data);
      else this.receiveUdp(data);
    } catch (e) {
      // A bug or a malformed message must never escape into the transport's event handler.
      this.emit("protocol-error", e instanceof Error ? e : new Error(String(e)));
    }
  }

  private receiveUdp(data: Buffer): void {
    let msg: CoapMessage;
    try {
      msg = decodeUdp(data, { maxMessageSize: this.maxMessageSize });
    } catch (e) {
      // A format error in a CON is rejected with RST (RFC 7252 section 4.2); anything else is dropped.
      if (data.length >= 4 && data[0] >> 6 === 1 && ((data[0] >> 4) & 3) === 0) this.sendEmpty("RST", data.readUInt16BE(2));
      this.emit("protocol-error", e as Error);
      return;
    }
    this.emit("activity");
    const mid = msg.messageId ?? 0;
    if (msg.type === "ACK" || msg.type === "RST") {
      const t = this.stopTransmission(mid);
      // Karn's rule: only a message sent once gives an unambiguous round-trip sample.
      if (t && t.retransmissions === 0) this.sampleRtt(performance.now() - t.sentAt);
      if (msg.type === "RST") {
        if (t) t.onReset();
        else this.handleReset(mid);
        return;
      }
      if (t) t.onAck(msg);
      return;
    }
    if (msg.code === Code.Empty) {
      if (msg.type === "CON") this.sendEmpty("RST", mid); // CoAP ping
      return;
    }
    // Deduplication (RFC 7252 section 4.5): a duplicate CON gets the same ACK/RST again. A NON
    // needs none when the transport drops duplicated datagrams (nothing kept per heartbeat).
    if (msg.type === "NON" && this.connection.dropsDuplicates === true) {
      this.dispatchUdp(msg, mid);
      return;
    }
    const now = Date.now();
    const seen = this.dedup.get(mid);
    if (seen && seen.expires > now) {
      if (msg.type === "CON") {
        if (seen.reply) this.connection.send(seen.reply);
        else {
          const ip = this.inProgressByMid.get(mid);
          if (ip && !ip.ackSent) {
            ip.ackSent = true;
            clearTimeout(ip.separateTimer);
            seen.reply = this.sendEmpty("ACK", mid);
          }
        }
      }
      return;
    }
    this.rememberMid(mid, msg.type === "CON" ? this.exchangeLifetimeMs : this.nonLifetimeMs, now);
    this.dispatchUdp(msg, mid);
  }

  /** A request or response past deduplication. */
  private dispatchUdp(msg: CoapMessage, mid: number): void {
    const cls = msg.code >> 5;
    if (cls === 0) this.handleRequest(msg);
    else if (cls >= 2 && cls <= 5) {
      if (!this.handleResponse(msg, msg.type ?? "NON")) {
        // Unknown token: reject, which also ends a stale observation at the peer (RFC 7641 section 3.6).
        this.reply(mid, "RST");
      }
    } else if (msg.type === "CON") this.reply(mid, "RST");
  }

  private rememberMid(mid: number, lifetimeMs: number, now: number): void {
    this.dedup.delete(mid);
    // Insertion order is roughly time order: drop expired ones from the front, then cap the size.
    for (const [k, v] of this.dedup) {
      if (v.expires > now && this.dedup.size < this.limits.dedupEntries) break;
      this.dedup.delete(k);
    }
    this.dedup.set(mid, { expires: now + lifetimeMs });
  }

  /** Sends an empty ACK/RST for `mid` and caches it for duplicates. */
  private reply(mid: number, type: "ACK" | "RST"): void {
    const bytes = this.sendEmpty(type, mid);
    const entry = this.dedup.get(mid);
    if (entry) entry.reply = bytes;
  }

  private handleReset(mid: number): void {
    const reqKey = this.nonRequestMids.get(mid);
    if (reqKey !== undefined) {
      const entry = this.pending.get(reqKey);
      if (entry) this.failPending(entry, new CoapEndpointError("RESET", "peer reset the request"));
      return;
    }
    const obsKey = this.notificationMids.get(mid);
    if (obsKey !== undefined) {
      this.notificationMids.delete(mid);
      const obs = this.observers.get(obsKey);
      if (obs) this.endObserver(obs);
    }
  }

  private receiveTcp(data: Buffer): void {
    let msg: CoapMessage;
    try {
      msg = decodeTcp(data, { maxMessageSize: this.maxMessageSize });
    } catch (e) {
      this.abort(`malformed message: ${(e as Error).message}`);
      this.emit("protocol-error", e as Error);
      return;
    }
    if (!this.peerCsmSeen && msg.code !== Code.CSM) {
      const err = new CoapFormatError("BAD_SIGNAL", `first message from peer is ${codeToString(msg.code)}, not a CSM`);
      this.abort(err.message);
      this.emit("protocol-error", err);
      return;
    }
    this.emit("activity");
    if (isSignalCode(msg.code)) {
      let signal: Signal;
      try {
        signal = parseSignal(msg);
      } catch (e) {
        const bad = msg.code === Code.CSM ? msg.options.find((o) => isCritical(o.number))?.number : undefined;
        this.abort(`bad signalling message: ${(e as Error).message}`, bad);
        this.emit("protocol-error", e as Error);
        return;
      }
      this.handleSignal(signal, msg);
      return;
    }
    if (msg.code === Code.Empty) return; // keep-alive
    const cls = msg.code >> 5;
    if (cls === 0) this.handleRequest(msg);
    else if (cls >= 2 && cls <= 5) this.handleResponse(msg, "TCP");
  }

  private handleSignal(signal: Signal, msg: CoapMessage): void {
    switch (signal.kind) {
      case "csm":
        this.peerCsmSeen = true;
        // CSM options are cumulative: only what is present changes.
        if (signal.maxMessageSize !== undefined) this.peerMaxMessageSize = signal.maxMessageSize;
        this.emit("csm", { maxMessageSize: this.peerMaxMessageSize, blockWiseTransfer: signal.blockWiseTransfer });
        return;
      case "ping":
        this.sendMessage(pongMessage(msg.token, signal.custody));
        return;
      case "pong": {
        // libcoap 4.3 answers with an empty token; TCP keeps order, so fall back to the oldest Ping.
        let key = hexKey(msg.token);
        if (!this.tcpPings.has(key)) key = this.tcpPings.keys().next().value ?? "";
        const p = this.tcpPings.get(key);
        if (p) {
          clearTimeout(p.timer);
          this.tcpPings.delete(key);
          p.resolve();
        }
        return;
      }
      case "release":
        // Finish what is outstanding, start nothing new, then close (RFC 8323 section 5.5).
        this.released = true;
        this.emit("release", signal);
        this.closeWhenIdle();
        return;
      case "abort":
        this.emit("peer-abort", signal);
        this.shutdown(new CoapEndpointError("ABORTED", `peer aborted: ${signal.diagnostic || "no diagnostic"}`));
        this.connection.close();
        return;
    }
  }

  private closeWhenIdle(): void {
    if (this.pending.size === 0) {
      this.close();
      return;
    }
    if (this.releaseTimer) return;
    const started = Date.now();
    this.releaseTimer = setInterval(() => {
      if (this.pending.size === 0 || Date.now() - started > maxTransmitWaitMs(this.params)) this.close();
    }, 100);
  }

  /** TCP: send Abort with a diagnostic and close the connection. */
  private abort(reason: string, badCsmOption?: number): void {
    if (this.closed) return;
    try {
      this.sendMessage(abortMessage(reason, badCsmOption));
    } finally {
      this.shutdown(new CoapEndpointError("ABORTED", `aborted: ${reason}`));
      this.connection.close();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Server side

  private takeRateToken(): number {
    const now = Date.now();
    this.rate.tokens = Math.min(this.rate.burst, this.rate.tokens + (now - this.rate.last) * this.rate.perMs);
    this.rate.last = now;
    if (this.rate.tokens >= 1) {
      this.rate.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.rate.tokens) / this.rate.perMs / 1000));
  }

  private handleRequest(msg: CoapMessage): void {
    const confirmable = !this.isTcp && msg.type === "CON";
    const key = hexKey(msg.token);
    const mid = msg.messageId;
    const ip: InProgress = { key, mid, confirmable, responded: false, ackSent: false, cacheKey: "" };

    // A NON repeat of a request still being worked on: the answer will come once.
    const existing = this.inProgress.get(key);
    if (existing) {
      if (confirmable && mid !== undefined) this.reply(mid, "ACK");
      return;
    }
    if (!this.isTcp && msg.type === "NON" && this.replayNonAnswers) {
      // A repeat (RFC 9132 NON requests are resent until answered) of one we answered: same answer.
      ip.nonKey = nonRequestKey(msg);
      const answered = this.nonAnswers.get(ip.nonKey);
      if (answered && answered.expires > Date.now() && msg.code !== Code.GET) {
        this.sendMessage({ ...answered.response, type: "NON", messageId: this.allocMid() });
        return;
      }
    }
    const quick = (code: number, text: string, extra: CoapOption[] = []) =>
      this.sendResponse(ip, msg, { code, payload: diagnostic(text), contentFormat: CONTENT_FORMAT_TEXT, options: extra });

    const method = METHOD_NAMES[msg.code];
    if (method === undefined) return quick(Code.MethodNotAllowed, `method ${codeToString(msg.code)} not supported`);
    const retryAfter = this.takeRateToken();
    if (retryAfter > 0) return quick(Code.TooManyRequests, "too many requests; retry after Max-Age seconds", [maxAgeOption(retryAfter)]);
    if (this.inProgress.size >= this.limits.concurrentRequests) {
      return quick(Code.ServiceUnavailable, "too many requests in progress", [maxAgeOption(1)]);
    }
    // No array unless there is something to report (every request passes here).
    let unknown: Set<number> | undefined;
    for (const o of msg.options) if (isCritical(o.number) && !this.knownCritical.has(o.number)) (unknown ??= new Set()).add(o.number);
    if (unknown) return quick(Code.BadOption, `unrecognized critical option(s): ${[...unknown].join(", ")}`);

    let path: string[];
    let query: string[];
    let contentFormat: number | undefined;
    let observe: number | undefined;
    let block2: BlockValue | undefined;
    try {
      path = getUriPath(msg.options);
      query = getUriQuery(msg.options);
      contentFormat = getContentFormat(msg.options);
      observe = getObserve(msg.options);
      block2 = getBlock2(msg.options);
    } catch (e) {
      return quick(Code.BadOption, `bad option value: ${(e as Error).message}`);
    }
    // Method left out: later blocks of any response are fetched with GET (RFC 7959 section 2.4).
    ip.cacheKey = `${path.join("/")}?${query.join("&")}`;
    if (block2) ip.requestedBlock = { ...block2, szx: Math.min(block2.szx, 6) };

    // Later blocks of a representation we already split (RFC 7959 section 2.4).
    if (block2 && block2.num > 0 && msg.code === Code.GET) {
      const cached = this.blockCache.get(ip.cacheKey);
      if (cached && cached.expires > Date.now()) {
        this.sendBlock(ip, msg, cached, block2);
        return;
      }
    }

    // Deregistration: GET with Observe=1 and the observation's token (RFC 7641 section 3.6).
    const existingObserver = this.observers.get(key);
    if (existingObserver && msg.code === Code.GET && observe !== undefined && observe !== 0) this.endObserver(existingObserver);

    if (!this.handler) return quick(Code.NotImplemented, "no CoAP server on this endpoint");

    this.inProgress.set(key, ip);
    if (mid !== undefined) this.inProgressByMid.set(mid, ip);

    const request: IncomingRequest = {
      method,
      code: msg.code,
      path,
      query,
      options: msg.options,
      payload: msg.payload,
      contentFormat,
      observe,
      confirmable,
      token: msg.token,
      respond: (res) => {
        if (this.closed) return; // the peer is gone; nothing to answer
        if (ip.responded) {
          // Usually the handler answered after the endpoint's 5.00 timeout: report, do not throw.
          this.emit(
            "handler-error",
            new Error(
              `${method} /${path.join("/")} answered twice (or after the ${this.handlerTimeoutMs} ms timeout); second answer dropped`,
            ),
          );
          return;
        }
        this.sendResponse(ip, msg, res);
      },
      ignore: () => this.ignoreRequest(ip),
      acceptObserve: () => this.acceptObserve(ip, msg, observe),
    };
    let result: void | Promise<void>;
    try {
      result = this.handler(request);
    } catch (e) {
      this.handlerFailed(ip, msg, e);
      return;
    }
    // Most requests (heartbeats) are answered synchronously: timers only for those still open.
    if (!ip.responded) this.armRequestTimers(ip, msg);
    if (result && typeof (result as Promise<void>).then === "function") {
      (result as Promise<void>).then(undefined, (e: unknown) => this.handlerFailed(ip, msg, e));
    }
  }

  /** Separate-ACK and handler timeouts of a request the handler did not answer at once. */
  private armRequestTimers(ip: InProgress, msg: CoapMessage): void {
    const mid = ip.mid;
    if (ip.confirmable && mid !== undefined && !ip.ackSent) {
      // Empty ACK before the client's ACK_TIMEOUT, then a separate CON response (RFC 7252 section 5.2.2).
      ip.separateTimer = setTimeout(() => {
        if (ip.responded || ip.ackSent) return;
        ip.ackSent = true;
        this.reply(mid, "ACK");
      }, this.params.ackTimeoutMs / 2);
    }
    ip.handlerTimer = setTimeout(() => {
      if (!ip.responded)
        this.sendResponse(ip, msg, {
          code: Code.InternalServerError,
          payload: diagnostic(`request not answered within ${this.handlerTimeoutMs} ms`),
          contentFormat: CONTENT_FORMAT_TEXT,
        });
    }, this.handlerTimeoutMs);
  }

  private ignoreRequest(ip: InProgress): void {
    if (ip.responded) return;
    ip.responded = true;
    clearTimeout(ip.separateTimer);
    clearTimeout(ip.handlerTimer);
    if (this.inProgress.get(ip.key) === ip) this.inProgress.delete(ip.key);
    if (ip.mid !== undefined && this.inProgressByMid.get(ip.mid) === ip) this.inProgressByMid.delete(ip.mid);
    if (this.closed || !ip.confirmable || ip.ackSent || ip.mid === undefined) return;
    ip.ackSent = true;
    this.reply(ip.mid, "ACK");
  }

  private handlerFailed(ip: InProgress, msg: CoapMessage, e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    this.emit("handler-error", err);
    if (!ip.responded)
      this.sendResponse(ip, msg, {
        code: Code.InternalServerError,
        payload: diagnostic(`internal error: ${err.message}`),
        contentFormat: CONTENT_FORMAT_TEXT,
      });
  }

  private acceptObserve(ip: InProgress, msg: CoapMessage, observe: number | undefined): ObserverHandle {
    const inactive: ObserverHandle = { notify: () => undefined, active: false, onCancel: () => undefined, cancel: () => undefined };
    if (observe !== 0 || msg.code !== Code.GET || ip.responded || this.closed) return inactive;
    const old = this.observers.get(ip.key);
    if (old) this.endObserver(old);
    if (this.observers.size >= this.limits.observers) return inactive; // answered without Observe
    const obs: ServerObserver = {
      key: ip.key,
      token: msg.token,
      cacheKey: ip.cacheKey,
      seq: randomInt(2, 0x1000),
      active: true,
      cancelCallbacks: [],
      handle: undefined as unknown as ObserverHandle,
    };
    const self = this;
    obs.handle = {
      get active() {
        return obs.active;
      },
      notify(res: ResponseSpec) {
        if (!obs.active || self.closed) return;
        self.sendNotification(obs, res);
      },
      onCancel(cb: () => void) {
        if (obs.active) obs.cancelCallbacks.push(cb);
        else queueMicrotask(cb);
      },
      cancel() {
        self.endObserver(obs);
      },
    };
    ip.observer = obs;
    return obs.handle;
  }

  private endObserver(obs: ServerObserver): void {
    if (!obs.active) return;
    obs.active = false;
    if (this.observers.get(obs.key) === obs) this.observers.delete(obs.key);
    for (const cb of obs.cancelCallbacks.splice(0)) {
      try {
        cb();
      } catch (e) {
        this.emit("handler-error", e as Error);
      }
    }
  }

  private nextSeq(obs: ServerObserver): number {
    obs.seq = (obs.seq + 1) & 0xffffff;
    return obs.seq;
  }

  private sendNotification(obs: ServerObserver, res: ResponseSpec): void {
    const options = this.responseOptions(res);
    const ends = res.code >> 5 !== 2;
    if (!ends) options.push(observeOption(this.nextSeq(obs)));
    const base: CoapMessage = { code: res.code, token: obs.token, options, payload: res.payload ?? Buffer.alloc(0) };
    const msg = this.maybeFirstBlock(base, obs.cacheKey, undefined);
    if (this.isTcp) this.sendMessage(msg);
    else {
      const mid = this.allocMid();
      this.notificationMids.set(mid, obs.key);
      // Keep only recent notification IDs: RST for an old one arrives within a round trip or never.
      if (this.notificationMids.size > 4 * this.limits.observers)
        this.notificationMids.delete(this.notificationMids.keys().next().value as number);
      this.sendMessage({ ...msg, type: "NON", messageId: mid });
    }
    if (ends) this.endObserver(obs);
  }

  private responseOptions(res: ResponseSpec): CoapOption[] {
    const options = [...(res.options ?? [])];
    if (res.contentFormat !== undefined) options.push(contentFormatOption(res.contentFormat));
    if (res.maxAge !== undefined) options.push(maxAgeOption(res.maxAge));
    return options;
  }

  /** Largest payload we send unsplit; bigger ones go out as Block2. */
  private blockLimit(requestedSzx: number | undefined): { limit: number; szx: number } {
    let szx: number;
    if (this.isTcp) {
      // Leave room for the header and options inside the peer's Max-Message-Size.
      szx = szxForSize(Math.min(1024, Math.max(16, this.peerMaxMessageSize - 128)));
    } else szx = UDP_BLOCK_SZX;
    if (requestedSzx !== undefined) szx = Math.min(szx, requestedSzx);
    const limit =
      requestedSzx !== undefined ? blockSize(szx) : this.isTcp ? Math.max(16, this.peerMaxMessageSize - 128) : UDP_MAX_UNBLOCKED_PAYLOAD;
    return { limit, szx };
  }

  /** Splits an oversize response: caches the representation and returns block 0 with Size2 and ETag. */
  private maybeFirstBlock(msg: CoapMessage, cacheKey: string, requestedSzx: number | undefined): CoapMessage {
    const { limit, szx } = this.blockLimit(requestedSzx);
    if (msg.payload.length <= limit || msg.code >> 5 !== 2) return msg;
    const { etag } = this.cacheRepresentation(msg, cacheKey);
    const size = blockSize(szx);
    const options = [
      ...msg.options.filter((o) => o.number !== OptionNumber.ETag),
      etagOption(etag),
      block2Option({ num: 0, more: true, szx }),
      size2Option(msg.payload.length),
    ];
    return { ...msg, options, payload: msg.payload.subarray(0, size) };
  }

  private rememberNonAnswer(key: string, response: CoapMessage): void {
    const now = Date.now();
    this.nonAnswers.delete(key);
    for (const [k, v] of this.nonAnswers) {
      if (v.expires > now && this.nonAnswers.size < this.limits.dedupEntries / 4) break;
      this.nonAnswers.delete(k);
    }
    this.nonAnswers.set(key, { expires: now + this.nonLifetimeMs, response });
  }

  private cacheRepresentation(msg: CoapMessage, cacheKey: string): BlockCacheEntry {
    // A content hash as ETag: a regenerated identical representation keeps its tag.
    const etag = createHash("sha256").update(msg.payload).digest().subarray(0, 8);
    const entry: BlockCacheEntry = {
      code: msg.code,
      payload: msg.payload,
      etag,
      options: msg.options.filter((o) => o.number !== OptionNumber.Observe && o.number !== OptionNumber.ETag),
      expires: Date.now() + BLOCK_CACHE_TTL_MS,
    };
    this.blockCache.delete(cacheKey);
    while (this.blockCache.size >= this.limits.blockCacheEntries) this.blockCache.delete(this.blockCache.keys().next().value as string);
    this.blockCache.set(cacheKey, entry);
    return entry;
  }

  private sendBlock(ip: InProgress, req: CoapMessage, cached: BlockCacheEntry, want: BlockValue): void {
    const szx = Math.min(want.szx, this.blockLimit(undefined).szx);
    const size = blockSize(szx);
    const offset = want.num * blockSize(Math.min(want.szx, 6));
    if (offset >= cached.payload.length) {
      this.sendResponse(ip, req, {
        code: Code.BadOption,
        payload: diagnostic(`block ${want.num} is past the end of the representation`),
        contentFormat: CONTENT_FORMAT_TEXT,
      });
      return;
    }
    const num = Math.floor(offset / size);
    const payload = cached.payload.subarray(num * size, (num + 1) * size);
    const more = (num + 1) * size < cached.payload.length;
    const options = [...cached.options, etagOption(cached.etag), block2Option({ num, more, szx }), size2Option(cached.payload.length)];
    this.transmitResponse(ip, req, { code: cached.code, token: req.token, options, payload });
  }

  private sendResponse(ip: InProgress, req: CoapMessage, res: ResponseSpec): void {
    if (ip.responded) return;
    const options = this.responseOptions(res);
    const obs = ip.observer;
    if (obs) {
      if (res.code >> 5 === 2 && obs.active && !this.closed) {
        options.push(observeOption(this.nextSeq(obs)));
        this.observers.set(obs.key, obs);
      } else {
        ip.observer = undefined;
        obs.active = false;
      }
    }
    const base: CoapMessage = { code: res.code, token: req.token, options, payload: res.payload ?? Buffer.alloc(0) };
    const want = ip.requestedBlock;
    if (want && want.num > 0 && res.code >> 5 === 2) {
      // A later block whose representation was not cached (expired, or another endpoint): cut it from this one.
      this.sendBlock(ip, req, this.cacheRepresentation(base, ip.cacheKey), want);
      return;
    }
    this.transmitResponse(ip, req, this.maybeFirstBlock(base, ip.cacheKey, want?.szx));
  }

  /** Piggybacked ACK, separate CON, NON, or a TCP frame; then forgets the request. */
  private transmitResponse(ip: InProgress, req: CoapMessage, msg: CoapMessage): void {
    ip.responded = true;
    clearTimeout(ip.separateTimer);
    clearTimeout(ip.handlerTimer);
    if (this.inProgress.get(ip.key) === ip) this.inProgress.delete(ip.key);
    if (ip.mid !== undefined && this.inProgressByMid.get(ip.mid) === ip) this.inProgressByMid.delete(ip.mid);
    if (this.closed) return;
    try {
      if (this.isTcp) {
        this.sendMessage(msg);
      } else if (ip.confirmable && !ip.ackSent && req.messageId !== undefined) {
        const bytes = this.sendMessage({ ...msg, type: "ACK", messageId: req.messageId });
        const entry = this.dedup.get(req.messageId);
        if (entry) entry.reply = bytes;
      } else if (ip.confirmable) {
        this.sendConfirmable(msg, {
          onAck: () => undefined,
          onReset: () => ip.observer && this.endObserver(ip.observer),
          onGiveUp: () => ip.observer && this.endObserver(ip.observer),
        });
      } else {
        this.sendMessage({ ...msg, type: "NON", messageId: this.allocMid() });
        if (ip.nonKey !== undefined && req.code !== Code.GET) this.rememberNonAnswer(ip.nonKey, msg);
      }
    } catch (e) {
      // E.g. an option value the codec refuses: tell the peer rather than leave it waiting.
      this.emit("handler-error", e as Error);
      if (msg.code !== Code.InternalServerError) {
        ip.responded = false;
        this.transmitResponse(ip, req, {
          code: Code.InternalServerError,
          token: req.token,
          options: [contentFormatOption(CONTENT_FORMAT_TEXT)],
          payload: diagnostic(`response could not be encoded: ${(e as Error).message}`),
        });
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Shutdown

  close(): void {
    if (this.closed) return;
    // RFC 8323 section 5.5: tell the peer this is an orderly shutdown, not a failure (not needed
    // when the peer released first, or when the connection is already gone).
    if (this.isTcp && !this.released && !this.connection.closed) this.sendMessage(releaseMessage());
    this.shutdown(new CoapEndpointError("CLOSED", "CoAP endpoint closed"));
    this.connection.close();
  }

  private shutdown(err: CoapEndpointError): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.off("message", this.onConnMessage);
    this.connection.off("close", this.onConnClose);
    clearInterval(this.releaseTimer);
    for (const t of this.transmissions.values()) clearTimeout(t.timer);
    this.transmissions.clear();
    for (const p of this.tcpPings.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.tcpPings.clear();
    for (const entry of [...this.pending.values()]) this.failPending(entry, err);
    for (const ip of this.inProgress.values()) {
      clearTimeout(ip.separateTimer);
      clearTimeout(ip.handlerTimer);
      ip.responded = true;
    }
    this.inProgress.clear();
    this.inProgressByMid.clear();
    for (const obs of [...this.observers.values()]) this.endObserver(obs);
    this.dedup.clear();
    this.blockCache.clear();
    this.nonAnswers.clear();
    this.notificationMids.clear();
    this.nonRequestMids.clear();
    this.emit("close", err);
  }
}
