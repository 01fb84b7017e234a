// DTLS 1.2 PSK client (home side). By default our own client (src/transport/dtls/client.ts: PSK and
// ECDHE_PSK, flight retransmission, cookie exchange); `implementation: "node-dtls-client"` selects
// the third-party library instead (plain PSK only).
// The node-dtls-client path: node-dtls-client 2.0.3, pinned. That library does not
// retransmit handshake flights and lets some parse errors escape its UDP handler, so this wrapper
// runs each handshake attempt with its own timeout on a fresh socket, retries with back-off,
// guards the library's datagram handler, and turns everything it throws or emits into
// TransportErrors and one 'close'.

import * as dns from "node:dns";
import type * as dgram from "node:dgram";
import { EventEmitter } from "node:events";
import * as net from "node:net";
import { pathToFileURL } from "node:url";
import type { Connection, LocalIdentity, PeerIdentity } from "./connection";
import { TransportError } from "./connection";
import { explainDialFailure } from "./auth-failure";
import { pskLocalIdentity, pskPeerIdentity } from "./identity";
import { DEFAULT_DTLS_CLIENT_SUITES, DtlsClient } from "./dtls/client";
import type { DtlsCipherSuiteName } from "./dtls/constants";
import type { DtlsResumption } from "./dtls/resumption";
import type { DtlsClientCertificateOptions } from "./dtls/client";

export type { DtlsResumption } from "./dtls/resumption";

/** Which DTLS client runs the handshake: ours (default; ECDHE_PSK first) or node-dtls-client (plain PSK). */
export type DtlsImplementation = "ours" | "node-dtls-client";

/** node-dtls-client's offer: AEAD suites only, CCM_8 first (RFC 7925 profile), then GCM. */
export const DTLS_CLIENT_CIPHERS = ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256"] as const;
export type DtlsClientCipher = "TLS_PSK_WITH_AES_128_CCM_8" | "TLS_PSK_WITH_AES_128_GCM_SHA256" | "TLS_PSK_WITH_AES_128_CCM";

/** Datagrams held while nobody listens for 'message'; more are dropped (UDP semantics). */
const MAX_QUEUED_DATAGRAMS = 64;

const SUITE_NAMES: Record<number, string> = {
  0xc0a8: "TLS_PSK_WITH_AES_128_CCM_8",
  0x00a8: "TLS_PSK_WITH_AES_128_GCM_SHA256",
  0xc0a4: "TLS_PSK_WITH_AES_128_CCM",
};

export interface DtlsConnectOptions {
  host: string;
  port: number;
  family?: 4 | 6;
  /** PSK credentials; or, with our implementation, `certificate` (ECDHE_ECDSA). */
  psk?: { identity: string; key: Buffer };
  /** Our certificate, the CAs the ISP's must chain to, and the name it must carry (our implementation only). */
  certificate?: DtlsClientCertificateOptions;
  /** Timeout of the first handshake attempt (default 1000 ms); later attempts back off. */
  handshakeTimeoutMs?: number;
  /** Handshake attempts before giving up (default 5). */
  attempts?: number;
  /** Multiplier applied to the timeout after each failed attempt (default 2). */
  backoff?: number;
  /** Upper bound of one attempt's timeout (default 16 s). */
  maxHandshakeTimeoutMs?: number;
  /** Suites node-dtls-client offers, in order (default DTLS_CLIENT_CIPHERS). */
  ciphers?: DtlsClientCipher[];
  /** Default "ours". */
  implementation?: DtlsImplementation;
  /** Suites our client offers, in order (default DEFAULT_DTLS_CLIENT_SUITES: ECDHE_PSK ChaCha20 first). */
  suites?: DtlsCipherSuiteName[];
  /** Largest message accepted by send() (default 16384, the DTLS record limit; keeping under the path MTU is the CoAP layer's job). */
  maxMessageSize?: number;
  /**
   * Our client only: a session ticket from an earlier connection (RFC 5077), offered for an
   * abbreviated handshake; a server that refuses it gets a full handshake.
   */
  resumeFrom?: DtlsResumption;
  /** Our client only: after a handshake, the ticket to resume with next time (undefined: keep none). */
  onResumption?(resumption: DtlsResumption | undefined): void;
  /** Called after each failed attempt that will be retried. */
  onAttemptFailed?(attempt: number, error: TransportError): void;
  /** Abort the whole connect (rejects with TransportError CLOSED). */
  signal?: AbortSignal;
}

// Shape of node-dtls-client's Socket that this wrapper relies on (2.0.3; private fields marked).
interface LibSocket extends EventEmitter {
  send(data: Buffer, callback?: (err: Error | null, bytes: number) => void): void;
  close(callback?: () => void): void;
  /** private in the library: the plain UDP socket */
  udp?: dgram.Socket;
  /** private in the library */
  recordLayer?: { currentWriteEpoch?: { connectionState?: { cipherSuite?: { id?: number } } } };
  /** private in the library: closes the UDP socket, clears its timers, emits 'error' if err is set */
  killConnection?(err?: Error): void;
}

interface LibModule {
  dtls: { createSocket(options: Record<string, unknown>): LibSocket };
}

// node-dtls-client 2.x is ESM-only. require() of ESM works only from Node 20.19 / 22.12, and
// TypeScript turns import() into require() under module commonjs: an import() built at run time
// stays a real one on every Node we admit.
// Built on first use, so a Node run with --disallow-code-generation-from-strings gets the error below.
function importEsm(url: string): Promise<unknown> {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return (new Function("url", "return import(url)") as (u: string) => Promise<unknown>)(url);
}

let libLoading: Promise<LibModule> | undefined;

/**
 * Loads node-dtls-client once. A failure is a TransportError CONFIG naming the Node version and
 * the cause (never retried: the dialer refuses to start rather than fall back to TLS silently).
 */
export function loadDtlsClient(): Promise<LibModule> {
  libLoading ??= (async () => {
    try {
      const mod = (await importEsm(pathToFileURL(require.resolve("node-dtls-client")).href)) as Partial<LibModule>;
      if (typeof mod?.dtls?.createSocket !== "function") throw new Error("it has no dtls.createSocket export");
      return mod as LibModule;
    } catch (e) {
      libLoading = undefined;
      throw new TransportError(
        "CONFIG",
        `DTLS unavailable: node-dtls-client could not be loaded on Node ${process.version}: ${(e as Error).message}`,
      );
    }
  })();
  return libLoading;
}

/** A Connection over one established node-dtls-client socket: one 'message' per datagram. */
export class DtlsClientConnection extends EventEmitter implements Connection {
  readonly transport = "dtls" as const;
  readonly localAddress: string;
  readonly localPort: number;
  readonly cipher: string;
  private closing = false;
  private finished = false;
  private forceTimer: NodeJS.Timeout | undefined;
  private readonly queue: Buffer[] = [];

  constructor(
    private readonly socket: LibSocket,
    readonly peer: PeerIdentity,
    readonly local: LocalIdentity,
    readonly remoteAddress: string,
    readonly remotePort: number,
    private readonly maxMessageSize: number,
  ) {
    super();
    let bound: { address: string; port: number } = { address: "", port: 0 };
    try {
      bound = socket.udp?.address() ?? bound;
    } catch {
      // not bound any more: the 'close' below follows
    }
    this.localAddress = bound.address;
    this.localPort = bound.port;
    const suiteId = socket.recordLayer?.currentWriteEpoch?.connectionState?.cipherSuite?.id;
    this.cipher = `DTLSv1.2 ${suiteId !== undefined ? (SUITE_NAMES[suiteId] ?? `0x${suiteId.toString(16)}`) : "unknown"}`;
    socket.on("message", (msg: Buffer) => {
      if (this.finished) return;
      // Datagrams that arrive before anyone listens (e.g. right after the handshake) wait a little.
      if (this.queue.length < MAX_QUEUED_DATAGRAMS) this.queue.push(msg);
      this.flush();
    });
    this.on("newListener", (event: string | symbol) => {
      if (event === "message") setImmediate(() => this.flush());
    });
    socket.on("error", (err: Error) => this.finish(new TransportError("CLOSED", `DTLS connection failed: ${err.message}`)));
    socket.on("close", () => this.finish());
  }

  get closed(): boolean {
    return this.closing || this.finished;
  }

  /** One datagram per call. Throws TransportError FRAME_TOO_LARGE above maxMessageSize. */
  send(data: Buffer): boolean {
    if (this.closed) return false;
    if (data.length > this.maxMessageSize) {
      throw new TransportError("FRAME_TOO_LARGE", `${data.length} bytes exceed the DTLS message limit of ${this.maxMessageSize}`);
    }
    try {
      this.socket.send(data, () => undefined);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.closing || this.finished) return;
    this.closing = true;
    try {
      this.socket.close(); // close_notify, then the UDP socket closes and the library emits 'close'
    } catch {
      this.kill();
    }
    // If the alert send callback never comes, do not wait forever.
    this.forceTimer = setTimeout(() => this.kill(), 1000);
    this.forceTimer.unref();
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.finished && this.listenerCount("message") > 0) {
      const msg = this.queue.shift() as Buffer;
      try {
        this.emit("message", msg);
      } catch (e) {
        // A consumer bug must not escape into the UDP handler; end this connection instead.
        this.finish(e as Error);
      }
    }
  }

  private kill(): void {
    try {
      this.socket.killConnection?.();
    } catch {
      // already closed
    }
    this.finish();
  }

  private finish(err?: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.closing = true;
    if (this.forceTimer) clearTimeout(this.forceTimer);
    if (err) {
      try {
        this.socket.killConnection?.();
      } catch {
        // already closed
      }
    }
    this.emit("close", err);
  }
}

async function resolveAddress(host: string, family?: 4 | 6): Promise<{ address: string; family: 4 | 6 }> {
  const literal = net.isIP(host);
  if (literal) return { address: host, family: literal as 4 | 6 };
  try {
    const r = await dns.promises.lookup(host, { family: family ?? 0 });
    return { address: r.address, family: r.family as 4 | 6 };
  } catch (e) {
    throw new TransportError("CONNECT_FAILED", `cannot resolve ${host}: ${(e as Error).message}`);
  }
}

function classify(err: Error): TransportError {
  if (err instanceof TransportError) return err;
  const m = err.message;
  if (/timed out/i.test(m)) return new TransportError("HANDSHAKE_TIMEOUT", m);
  if (/fatal alert: (unknown_psk_identity|decrypt_error|bad_record_mac|handshake_failure|access_denied|illegal_parameter)/.test(m)) {
    return new TransportError("AUTH_FAILED", m);
  }
  if (/DTLS handshake failed/.test(m)) return new TransportError("AUTH_FAILED", `${m} (server Finished did not verify: wrong PSK?)`);
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENETUNREACH" || code === "EADDRNOTAVAIL") {
    return new TransportError("CONNECT_FAILED", m);
  }
  return new TransportError("HANDSHAKE_FAILED", m);
}

/** One handshake attempt on a fresh socket. */
function attempt(
  lib: LibModule,
  opts: DtlsConnectOptions,
  target: { address: string; family: 4 | 6 },
  timeoutMs: number,
): Promise<DtlsClientConnection> {
  const psk = opts.psk!; // connectDtls refuses certificates with this library
  return new Promise((resolve, reject) => {
    let socket: LibSocket;
    let settled = false;
    const abandon = () => {
      try {
        socket?.removeAllListeners("connected");
        socket?.killConnection?.();
      } catch {
        // nothing left to close
      }
    };
    const onAbort = () => fail(new TransportError("CLOSED", "DTLS connect aborted"));
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      abandon();
      reject(classify(err));
    };
    const timer = setTimeout(
      () =>
        fail(new TransportError("HANDSHAKE_TIMEOUT", `DTLS handshake with ${target.address}:${opts.port} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      socket = lib.dtls.createSocket({
        type: target.family === 6 ? "udp6" : "udp4",
        address: target.address,
        port: opts.port,
        psk: { [psk.identity]: psk.key },
        // Our own timer decides; the library's must not fire first.
        timeout: timeoutMs + 1000,
        ciphers: [...(opts.ciphers ?? DTLS_CLIENT_CIPHERS)],
      });
    } catch (e) {
      fail(e as Error);
      return;
    }
    guardDatagrams(socket, target.address, opts.port);
    socket.on("error", (err: Error) => fail(err));
    socket.on("close", () => fail(new TransportError("HANDSHAKE_FAILED", "DTLS socket closed during the handshake")));
    socket.once("connected", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      socket.removeAllListeners("error");
      socket.removeAllListeners("close");
      const conn = new DtlsClientConnection(
        socket,
        pskPeerIdentity(psk.identity),
        pskLocalIdentity(psk.identity),
        target.address,
        opts.port,
        opts.maxMessageSize ?? 16384,
      );
      resolve(conn);
    });
  });
}

/**
 * One handshake attempt with our client on a fresh socket. Within the attempt our client repeats
 * its flight on a doubling timer (RFC 6347 4.2.4), starting at a quarter of the attempt's budget.
 */
async function attemptOurs(
  opts: DtlsConnectOptions,
  target: { address: string; family: 4 | 6 },
  timeoutMs: number,
  outcome: { ticketAccepted: boolean },
): Promise<DtlsClient> {
  const client = new DtlsClient({
    address: target.address,
    port: opts.port,
    psk: opts.psk,
    certificate: opts.certificate,
    suites: opts.suites ?? (opts.psk ? DEFAULT_DTLS_CLIENT_SUITES : undefined),
    handshakeTimeoutMs: timeoutMs,
    retransmitInitialMs: Math.max(100, Math.floor(timeoutMs / 4)),
    maxMessageSize: opts.maxMessageSize ?? 16384,
    signal: opts.signal,
    resumeFrom: opts.resumeFrom,
  });
  try {
    await client.handshake();
  } finally {
    outcome.ticketAccepted = client.ticketAccepted;
  }
  try {
    opts.onResumption?.(client.resumption);
  } catch {
    // an observer's error does not undo a connection
  }
  return client;
}

/**
 * The library's UDP handler parses whatever arrives and may throw on garbage; wrap it so nothing
 * escapes, and drop datagrams that do not come from the server we dialled (the socket is unconnected).
 */
function guardDatagrams(socket: LibSocket, address: string, port: number): void {
  const udp = socket.udp;
  if (!udp) return;
  const handlers = udp.listeners("message") as Array<(msg: Buffer, rinfo: dgram.RemoteInfo) => void>;
  udp.removeAllListeners("message");
  udp.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    if (rinfo.port !== port || !sameAddress(rinfo.address, address)) return;
    for (const h of handlers) {
      try {
        h.call(udp, msg, rinfo);
      } catch {
        // malformed or unexpected record: dropped (RFC 6347 section 4.1.2.7)
      }
    }
  });
}

function sameAddress(a: string, b: string): boolean {
  const strip = (s: string) => (s.startsWith("::ffff:") ? s.slice(7) : s);
  return strip(a) === strip(b);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Dials a DTLS 1.2 PSK server. Each attempt gets a fresh socket and its own timeout, growing by
 * `backoff` up to maxHandshakeTimeoutMs; authentication failures (fatal alerts, bad server
 * Finished) are not retried.
 */
export async function connectDtls(opts: DtlsConnectOptions): Promise<Connection> {
  if (
    opts.psk &&
    (typeof opts.psk.identity !== "string" || opts.psk.identity.length === 0 || !Buffer.isBuffer(opts.psk.key) || opts.psk.key.length === 0)
  ) {
    throw new TransportError("CONFIG", "connectDtls: psk needs a non-empty identity and key Buffer");
  }
  if (!opts.psk && !opts.certificate) throw new TransportError("CONFIG", "connectDtls: psk or certificate credentials are needed");
  if (opts.psk && opts.certificate) throw new TransportError("CONFIG", "connectDtls: give psk or certificate, not both");
  if (opts.certificate && opts.implementation === "node-dtls-client")
    throw new TransportError("CONFIG", "node-dtls-client speaks PSK only: use our DTLS implementation for certificates");
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new TransportError("CONFIG", `invalid port ${opts.port}`);
  const attempts = opts.attempts ?? 5;
  const backoff = opts.backoff ?? 2;
  const maxTimeout = opts.maxHandshakeTimeoutMs ?? 16_000;
  let timeoutMs = opts.handshakeTimeoutMs ?? 1000;
  if (!Number.isInteger(attempts) || attempts < 1) throw new TransportError("CONFIG", `attempts must be >= 1, got ${attempts}`);
  if (!(timeoutMs >= 100)) throw new TransportError("CONFIG", `handshakeTimeoutMs must be >= 100, got ${timeoutMs}`);
  const implementation = opts.implementation ?? "ours";
  if (implementation !== "ours" && implementation !== "node-dtls-client") {
    throw new TransportError("CONFIG", `unknown DTLS implementation ${JSON.stringify(implementation)}`);
  }
  const lib = implementation === "node-dtls-client" ? await loadDtlsClient() : undefined;
  const target = await resolveAddress(opts.host, opts.family);
  let last: TransportError | undefined;
  let resumeFrom = lib ? undefined : opts.resumeFrom;
  for (let i = 1; i <= attempts; i++) {
    if (opts.signal?.aborted) throw new TransportError("CLOSED", "DTLS connect aborted");
    const started = Date.now();
    const outcome = { ticketAccepted: false };
    try {
      return lib ? await attempt(lib, opts, target, timeoutMs) : await attemptOurs({ ...opts, resumeFrom }, target, timeoutMs, outcome);
    } catch (e) {
      last = explainDialFailure(classify(e as Error), { transport: "dtls", identity: opts.psk?.identity });
      // A server that accepted our ticket, or answered and failed the handshake we offered it in, may
      // hold other state than we do (undecryptable records are dropped silently, so that looks like
      // a timeout): the next attempt is a full handshake, at once. Mere silence keeps the ticket (after
      // a loss the server is the same one).
      const answered = last.code !== "HANDSHAKE_TIMEOUT" && last.code !== "CONNECT_FAILED" && last.code !== "CLOSED";
      if (resumeFrom && (outcome.ticketAccepted || answered)) {
        resumeFrom = undefined;
        try {
          opts.onResumption?.(undefined);
        } catch {
          // observer errors do not change the outcome
        }
        if (!opts.signal?.aborted) {
          i--;
          continue;
        }
      }
      if (last.code === "AUTH_FAILED" || last.code === "CONFIG" || opts.signal?.aborted) throw last;
      if (i < attempts) {
        try {
          opts.onAttemptFailed?.(i, last);
        } catch {
          // observer errors do not change the outcome
        }
        // Pace attempts on the back-off schedule even when one failed fast (e.g. ICMP refused).
        const rest = timeoutMs - (Date.now() - started);
        if (rest > 0) await sleep(rest, opts.signal);
      }
    }
    timeoutMs = Math.min(Math.round(timeoutMs * backoff), maxTimeout);
  }
  throw new TransportError(
    last?.code ?? "HANDSHAKE_FAILED",
    `DTLS handshake failed after ${attempts} attempts: ${last?.message ?? "unknown"}`,
  );
}
