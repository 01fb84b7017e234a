// The home side of DOTS Signal Channel Call Home (RFC 9066): the Call Home DOTS server. It dials
// the ISP as (D)TLS client, serves /mitigate, /config, /hb and /redirect as CoAP server on that
// connection, sends its own heartbeats to keep the NAT binding alive, detects session loss and
// reconnects. Mitigations live in a store that outlasts connections, so lifetimes keep running
// across reconnects.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import { encodeDotsCbor, decodeDotsCbor } from "../cbor";
import { CoapEndpoint, type IncomingRequest } from "../coap/endpoint";
import { Code, CONTENT_FORMAT_DOTS_CBOR, OptionNumber } from "../coap/message";
import type { Connection, PeerIdentity, TransportKind } from "../transport/connection";
import { connectTls } from "../transport/tls";
import { connectDtls, loadDtlsClient, type DtlsResumption } from "../transport/dtls-client";
import { isDtlsCertificateKey } from "../transport/dtls/certificate";
import type { CallHomeDialerApi, CallHomeDialerEvents, Decision, DialerOptions, DotsJson, DropMetricsSource } from "./api";
import {
  DEFAULT_RECONNECT,
  ReconnectPacer,
  resendWhileRefused,
  TransportCache,
  defaultLookup,
  discoverCandidates,
  dnsResolver,
  happyEyeballs,
  resolveCandidates,
  transportsFor,
  type Candidate,
  type LookupAll,
  type ReconnectPolicy,
  type SrvResolver,
} from "./dialer-connect";
import { ConnectFailureTracker } from "./connect-diagnosis";
import { DEFAULTS } from "./defaults";
import { HeartbeatScheduler, silentAfterMs } from "./heartbeat";
import { HomeResources, type MitigationValidator, type RedirectTarget, type ResourceRequest } from "./home-resources";
import { HomeStateFile, stateFileName } from "./home-state";
import { MitigationStore } from "./mitigation-store";
import { STATUS_LABELS, WELL_KNOWN_DOTS } from "./vocabulary";
import { SessionConfig, toTransmissionParameters, type ConfigSet } from "./session-config";

/** Knobs beyond the shared DialerOptions, mostly for labs and tests. */
export interface HomeEngineTuning {
  /** Milliseconds per protocol second for heartbeats (labs compress time). Default 1000. */
  msPerSecond?: number;
  /** Happy Eyeballs stagger, ms. Default 250, and 100 while mitigations are active (RFC 9132 4.3). */
  attemptDelayMs?: number;
  /** TLS connect + handshake budget, ms. Default 10 000. */
  tlsTimeoutMs?: number;
  /** First DTLS handshake attempt timeout, ms, and number of attempts. Defaults 1000 and 4. */
  dtlsHandshakeTimeoutMs?: number;
  dtlsAttempts?: number;
  /** Parameter overrides for the session configuration (missing-hb-allowed, ack-timeout, ...). */
  idleConfig?: Partial<ConfigSet>;
  mitigatingConfig?: Partial<ConfigSet>;
  /** Max-Age of GET /config, s. */
  configMaxAgeSeconds?: number;
  /** Active-but-terminating period after DELETE, ms. Default 120 000. */
  terminatingPeriodMs?: number;
  /** Mitigation lifetime seconds compression (tests). Default 1000 ms per second. */
  lifetimeMsPerSecond?: number;
  maxMitigationsPerClient?: number;
  /** A redirect to a client followed within this window is refused (loop), ms. Default 300 000. */
  redirectLoopWindowMs?: number;
  /** Milliseconds per redirect ttl second (tests compress time). Default 1000. */
  redirectTtlMsPerSecond?: number;
  /** Periodic status notifications to observers, ms (0 off). Default 60 000. */
  statusPeriodMs?: number;
  /** Minimum spacing of notifications per observer, ms. Default: notificationSpacingMs (per transport and RTT). */
  notifyMinIntervalMs?: number;
  /** Replaces the default mitigation validator (validateMitigationRequest, side "home"). */
  validate?: MitigationValidator;
  /** Name resolution (default dns.lookup with all:true). */
  lookup?: LookupAll;
  /** SRV/A/AAAA resolver for discover (default: node:dns Resolver on discover.dnsServers). */
  srvResolver?: SrvResolver;
  /** How long the transport winner is cached, ms. Default 10 min. */
  transportCacheMs?: number;
  /** How long a TLS winner stays first before UDP is tried first again, ms. Default 24 h (RFC 9132 4.3). */
  udpReprobeMs?: number;
  /** State file name inside stateDir. Default: derived from the credentials' identity, hosts and port. */
  stateName?: string;
  /** State file bounds. Defaults 4096 mitigations, 8 MiB. */
  stateMaxMitigations?: number;
  stateMaxBytes?: number;
  /** Spread of the first attempt after a session that was up ended, ms. Default 5000 (or reconnect.minMs if shorter). */
  firstAttemptJitterMs?: number;
  /**
   * Liveness probe when the ISP goes silent (a heartbeat unanswered: CoAP ping, then a new session
   * in parallel if that goes unanswered too). Default true.
   */
  probeWhenSilent?: boolean;
}

/** Spacing of notifications without an RTT estimate (RFC 9132 section 4.4.2.1), ms. */
export const NOTIFY_SPACING_NO_RTT_MS = 3000;

/**
 * Minimum spacing of NON notifications to one observer (RFC 9132 sections 3, 4.4.2.1): over UDP
 * one datagram per RTT when an estimate exists, else one per 3 s; TCP has its own congestion
 * control, so no spacing there.
 */
export function notificationSpacingMs(transport: TransportKind | undefined, rttEstimateMs: number | undefined): number {
  if (transport === "tls") return 0;
  if (transport === "dtls" && rttEstimateMs !== undefined) return Math.ceil(rttEstimateMs);
  return NOTIFY_SPACING_NO_RTT_MS;
}

export interface HomeEngineOptions extends DialerOptions {
  tuning?: HomeEngineTuning;
}

/**
 * ttl assumed when a redirect carries none: RFC 9066 section 5.2.2 leaves the ttl to RFC 9132
 * section 4.6, which carries it in a Max-Age option, and RFC 7252 section 5.10.5 assumes 60 s
 * for an absent Max-Age.
 */
export const DEFAULT_REDIRECT_TTL_S = 60;
/** A ttl of 2^32-1 is an infinite TTL (RFC 9132 section 4.6). */
export const INFINITE_REDIRECT_TTL_S = 0xffffffff;

interface ActiveRedirect {
  target: RedirectTarget;
  /** Epoch ms when the ttl ends; Infinity for ttl 2^32-1. */
  until: number;
}

interface Session {
  connection: Connection;
  endpoint: CoapEndpoint;
  heartbeat: HeartbeatScheduler;
  candidate: Candidate;
  redirected: boolean;
  closing?: string;
  /** Any message from the ISP arrived on this connection. */
  heard: boolean;
  /** A liveness probe (CoAP ping) is out. */
  probing?: boolean;
  /** The ISP stopped answering, even a CoAP ping: a new session is being set up in parallel. */
  suspect?: string;
}

const HB_PATH = [...WELL_KNOWN_DOTS, "hb"];

export class CallHomeDialer extends EventEmitter implements CallHomeDialerApi {
  readonly store: MitigationStore;
  readonly config: SessionConfig;
  readonly resources: HomeResources;
  private readonly opts: HomeEngineOptions;
  private readonly tuning: HomeEngineTuning;
  private readonly pacer: ReconnectPacer;
  /** Names credential failures and hints at the ISP's drop-list after silent rounds. */
  private readonly connectFailures = new ConnectFailureTracker();
  private readonly transportCache: TransportCache;
  private readonly tickets = new Map<string, Buffer>();
  /**
   * The last DTLS session ticket per ISP address and port (RFC 5077), so a reconnect after loss is
   * an abbreviated handshake (RFC 9132 4.7). Memory only: it holds the session's master secret.
   */
  private readonly dtlsResumptions = new Map<string, DtlsResumption>();
  private running = false;
  private session: Session | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private redirectTimer: NodeJS.Timeout | undefined;
  private connectAbort: AbortController | undefined;
  private redirect: ActiveRedirect | undefined;
  private connecting = false;
  private stopped: Promise<void> | undefined;
  /** Durable mitigation state (DialerOptions.stateDir); absent: memory only. */
  readonly stateFile: HomeStateFile | undefined;
  private restoring: Promise<void> | undefined;
  private lastStateError: string | undefined;

  constructor(options: HomeEngineOptions) {
    super();
    if (!options || !Array.isArray(options.hosts)) throw new TypeError("CallHomeDialer: hosts must be a list of ISP addresses");
    if (options.hosts.length === 0 && !options.discover?.domain)
      throw new TypeError("CallHomeDialer: hosts must name at least one ISP address, or discover a domain");
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535)
      throw new RangeError(`CallHomeDialer: invalid port ${options.port}`);
    if (!options.psk && !options.certificate)
      throw new TypeError("CallHomeDialer: give psk or certificate credentials (mutual authentication is mandatory)");
    if (options.certificate && !options.psk && !options.certificate.ca)
      throw new TypeError("CallHomeDialer: certificate.ca is needed to verify the ISP's certificate");
    if (options.transport === "udp" && !options.psk && options.dtlsImplementation === "node-dtls-client")
      throw new TypeError("CallHomeDialer: node-dtls-client speaks PSK only; certificates over DTLS need our DTLS client");
    this.opts = options;
    this.tuning = options.tuning ?? {};
    const reconnect: ReconnectPolicy = {
      ...(options.reconnect ?? DEFAULT_RECONNECT),
      firstAttemptJitterMs: this.tuning.firstAttemptJitterMs,
    };
    this.pacer = new ReconnectPacer(reconnect);
    this.transportCache = new TransportCache(
      this.tuning.transportCacheMs,
      Date.now,
      this.tuning.udpReprobeMs,
      this.tuning.udpReprobeMs === undefined ? undefined : 0,
    );
    this.config = new SessionConfig({
      heartbeatInterval: options.heartbeatInterval ?? DEFAULTS.heartbeatIntervalS,
      idle: this.tuning.idleConfig,
      mitigating: this.tuning.mitigatingConfig,
      maxAgeSeconds: this.tuning.configMaxAgeSeconds,
    });
    this.store = new MitigationStore({
      allowIndefiniteLifetime: options.allowIndefiniteLifetime,
      maxLifetime: options.maxLifetime ?? DEFAULTS.maxLifetimeS,
      retryTimerS: DEFAULTS.legitimateRetryS,
      terminatingPeriodMs: this.tuning.terminatingPeriodMs,
      msPerSecond: this.tuning.lifetimeMsPerSecond,
      maxPerClient: this.tuning.maxMitigationsPerClient,
    });
    if (options.stateDir !== undefined) {
      const identity =
        this.tuning.stateName ??
        `${options.psk?.identity ?? options.certificate?.servername ?? (options.hosts.join(",") || options.discover?.domain || "")}@${options.port}`;
      this.stateFile = new HomeStateFile(options.stateDir, this.tuning.stateName ?? stateFileName(identity), {
        maxMitigations: this.tuning.stateMaxMitigations,
        maxBytes: this.tuning.stateMaxBytes,
      });
    }
    this.resources = new HomeResources({
      store: this.store,
      config: this.config,
      codec: { encode: (j) => encodeDotsCbor(j), decode: (b) => decodeDotsCbor(b) },
      homePrefixes: options.homePrefixes,
      allowIndefiniteLifetime: options.allowIndefiniteLifetime,
      decisionWaitMs: options.decisionWaitMs ?? DEFAULTS.decisionWaitMs,
      validate: this.tuning.validate,
      statusPeriodMs: this.tuning.statusPeriodMs,
      notifyMinIntervalMs:
        this.tuning.notifyMinIntervalMs ??
        (() => notificationSpacingMs(this.session?.connection.transport, this.session?.endpoint.rttEstimateMs)),
      canRedirect: (t) => this.checkRedirect(t),
      persist: this.stateFile ? () => this.persistState() : undefined,
    });
    this.resources.on("mitigation", (e) => this.emit("mitigation", e));
    this.resources.on("ended", (e) => this.emit("ended", e));
    this.resources.on("error", (e) => this.emit("error", e));
    this.resources.on("heartbeat", () => this.session?.heartbeat.peerHeartbeat());
    this.resources.on("redirect", (t) => this.followRedirect(t));
    this.store.on("activity", (on) => {
      this.config.setMitigating(on);
      if (!on) this.redirectAfterAttack();
    });
    // Changes nobody answers for (expiry, end of the terminating period, a late decision) are saved too.
    this.store.on("change", () => this.persistInBackground());
    this.store.on("removed", () => this.persistInBackground());
    this.config.on("change", (set) => this.applyConfig(set));
  }

  // ------------------------------------------------------------------------------ public API

  async start(): Promise<void> {
    if (this.running) return;
    if (this.stopped) throw new Error("CallHomeDialer: stopped; create a new one");
    // A DTLS library that cannot load is a start failure, not endless retries or a quiet TLS-only dialer.
    if (
      this.opts.dtlsImplementation === "node-dtls-client" &&
      transportsFor(this.opts.transport, this.opts.psk !== undefined).includes("dtls")
    ) {
      await loadDtlsClient();
    }
    if (this.running || this.stopped) return;
    this.running = true;
    await this.restore();
    if (!this.running) return;
    this.scheduleConnect(0);
  }

  /**
   * Loads the state file once (start() calls it; call it earlier to reconcile enforcement before
   * connecting): lapsed mitigations are dropped, the rest is served again with its status and
   * timers. Problems become 'error' events naming the file; never a throw.
   */
  restore(): Promise<void> {
    this.restoring ??= (async () => {
      const f = this.stateFile;
      if (!f) return;
      try {
        await f.prepare();
      } catch (e) {
        this.emit("error", e as Error);
      }
      const loaded = await f.load();
      if (loaded.error) this.emit("error", loaded.error);
      const r = this.store.restore(loaded.entries);
      this.emit("restored", { file: f.file, mitigations: r.restored.length, expired: r.expired, refused: r.refused });
      // The file now says what is held (lapsed entries gone, a damaged file replaced).
      if (loaded.error || r.expired > 0 || r.refused > 0) this.persistInBackground();
    })();
    return this.restoring;
  }

  private persistState(): Promise<void> {
    const f = this.stateFile;
    if (!f) return Promise.resolve();
    return f
      .save(() => this.store.snapshot())
      .then(
        () => {
          this.lastStateError = undefined;
        },
        (e: Error) => {
          // One event per new problem, not one per request.
          if (e.message !== this.lastStateError) this.emit("error", e);
          this.lastStateError = e.message;
          throw e;
        },
      );
  }

  private persistInBackground(): void {
    if (!this.stateFile || this.stopped) return;
    this.persistState().catch(() => undefined);
  }

  private keepDtlsResumption(key: string, r: DtlsResumption | undefined): void {
    const old = this.dtlsResumptions.get(key);
    if (old && old !== r && old.masterSecret !== r?.masterSecret) old.masterSecret.fill(0);
    this.dtlsResumptions.delete(key);
    if (!r) return;
    this.dtlsResumptions.set(key, r);
    if (this.dtlsResumptions.size > 16) {
      const [oldestKey, oldest] = this.dtlsResumptions.entries().next().value as [string, DtlsResumption];
      oldest.masterSecret.fill(0);
      this.dtlsResumptions.delete(oldestKey);
    }
  }

  /** Wipes the kept master secrets: the next DTLS dial is a full handshake. */
  private forgetDtlsResumptions(): void {
    for (const r of this.dtlsResumptions.values()) r.masterSecret.fill(0);
    this.dtlsResumptions.clear();
  }

  async stop(): Promise<void> {
    if (this.stopped) return this.stopped;
    this.running = false;
    this.forgetDtlsResumptions();
    this.stopped = (async () => {
      if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
      if (this.redirectTimer) clearTimeout(this.redirectTimer);
      this.reconnectTimer = this.redirectTimer = undefined;
      this.connectAbort?.abort();
      const s = this.session;
      if (s) await this.closeSession(s, "stopped");
      this.resources.dropConnectionState();
      if (this.stateFile) {
        // Durable state outlives this process: the next start serves these again, so nothing ends here.
        await this.persistState().catch(() => undefined);
        this.store.clear();
        return;
      }
      // The outside world lifts its enforcement: nothing will expire or withdraw these any more.
      for (const m of this.store.list()) {
        if (m.active) this.emit("ended", { cuid: m.cuid, mid: m.mid, reason: "session-reset", scope: { ...m.scope } });
      }
      this.store.clear();
    })();
    return this.stopped;
  }

  /** Where status reports (GET, notifications) take bytes-/pkts-dropped from, e.g. enforcer.metricsSource(). */
  setMetricsSource(source: DropMetricsSource | undefined): void {
    this.resources.setMetricsSource(source);
  }

  decide(decision: Decision): void {
    this.resources.decide(decision);
  }

  mitigations(): Array<{ cuid: string; mid: number; status: string; lifetime: number; scope: DotsJson; enforcement?: DotsJson }> {
    return this.store.list().map((m) => ({
      cuid: m.cuid,
      mid: m.mid,
      status: STATUS_LABELS[m.status],
      lifetime: this.store.remainingLifetime(m),
      scope: { ...m.scope },
      ...(m.enforcement ? { enforcement: m.enforcement } : {}),
    }));
  }

  /** True while a session with the ISP is up. */
  get connected(): boolean {
    return this.session !== undefined && !this.session.closing;
  }

  /** The connection in use (for diagnostics and tests). */
  get connection(): Connection | undefined {
    return this.session?.connection;
  }

  // ------------------------------------------------------------------------------ connecting

  /** A session that is up and not given up on (a suspect one may be replaced in parallel). */
  private get liveSession(): Session | undefined {
    const s = this.session;
    return s && !s.suspect ? s : undefined;
  }

  private scheduleConnect(delayMs: number): void {
    if (!this.running || this.reconnectTimer || this.connecting) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connectOnce();
    }, delayMs);
  }

  private async connectOnce(): Promise<void> {
    if (!this.running || this.liveSession || this.connecting) return;
    this.connecting = true;
    this.pacer.attempted();
    const controller = new AbortController();
    this.connectAbort = controller;
    let useRedirect = this.redirectInForce();
    if (!useRedirect) this.redirect = undefined;
    try {
      let won: { connection: Connection; candidate: Candidate } | undefined;
      if (useRedirect) {
        try {
          won = await this.dial(
            this.redirect!.target.records.length ? this.redirect!.target.records : [this.redirect!.target.altClient],
            this.redirect!.target.altClient,
            controller.signal,
          );
        } catch (e) {
          if (!this.running) throw e;
          // The alternate is unreachable: fall back to the provisioned client (RFC 9132 section 4.6).
          this.emit(
            "error",
            new Error(`redirect target ${this.redirect!.target.altClient} unreachable, falling back: ${(e as Error).message}`),
          );
          this.redirect = undefined;
          useRedirect = false;
        }
      }
      won ??= await this.dial(this.opts.hosts, this.opts.certificate?.servername, controller.signal, this.opts.discover);
      if (!this.running) {
        won.connection.close();
        return;
      }
      this.pacer.succeeded();
      this.connectFailures.succeeded();
      const old = this.session;
      if (old) this.replaceSession(old);
      this.attach(won.connection, won.candidate, useRedirect);
    } catch (e) {
      if (!this.running) return;
      this.pacer.failed();
      const retryInMs = this.pacer.delayMs();
      const keeping = this.session;
      // A silent session is kept (mitigations stay; it may still recover) while new attempts follow the spacing.
      if (keeping)
        this.emit(
          "error",
          new Error(`new session attempt failed (${(e as Error).message}); keeping the silent session, next attempt in ${retryInMs} ms`),
        );
      else this.emit("disconnected", { ...this.connectFailures.failed(e), retryInMs });
      this.connecting = false;
      this.scheduleConnect(retryInMs);
      return;
    } finally {
      this.connecting = false;
      if (this.connectAbort === controller) this.connectAbort = undefined;
    }
  }

  private async dial(
    hosts: string[],
    servername: string | undefined,
    signal: AbortSignal,
    discover?: DialerOptions["discover"],
  ): Promise<{ connection: Connection; candidate: Candidate }> {
    const transports = transportsFor(this.opts.transport, this.dtlsCapable());
    let key = `${hosts.join(",")}:${this.opts.port}`;
    let found: Candidate[] | undefined;
    if (discover?.domain) {
      try {
        found = await discoverCandidates(discover.domain, transports, this.tuning.srvResolver ?? dnsResolver(discover.dnsServers));
        key = `srv:${discover.domain}`;
        this.emit("discovered", {
          domain: discover.domain,
          candidates: found.map((c) => ({ host: c.host, address: c.address, port: c.port ?? this.opts.port, transport: c.transport })),
        });
      } catch (e) {
        if (hosts.length === 0) throw e;
        this.emit("error", new Error(`${(e as Error).message}; using the configured hosts`));
      }
    }
    const candidates = this.transportCache.order(
      key,
      found ?? (await resolveCandidates(hosts, transports, this.tuning.lookup ?? defaultLookup)),
    );
    // The name to check on a discovered ISP's certificate is the source domain, the one configured
    // (RFC 6125 section 6.2.1): an SRV answer nobody validated could name any host. The SRV target
    // only when the configuration says the answers are DNSSEC-validated.
    if (found && discover && servername === undefined && !discover.dnssecValidated) servername = discover.domain.replace(/\.$/, "");
    const won = await happyEyeballs(candidates, (c, s) => this.attempt(c, servername, s), {
      // RFC 9132 section 4.3: 100 ms between attempts while under attack.
      attemptDelayMs: this.tuning.attemptDelayMs ?? (this.store.activeCount() > 0 ? 100 : 250),
      signal,
      onAttempt: (c) => this.emit("connecting", { host: c.address, port: c.port ?? this.opts.port, transport: c.transport }),
    });
    this.transportCache.remember(key, won.candidate.transport);
    return won;
  }

  /** DTLS is tried in "auto" with a PSK, or with a P-256 or RSA certificate and our DTLS client. */
  private dtlsCapable(): boolean {
    if (this.opts.psk) return true;
    const cert = this.opts.certificate;
    return cert !== undefined && this.opts.dtlsImplementation !== "node-dtls-client" && isDtlsCertificateKey(cert.key, cert.passphrase);
  }

  private attempt(c: Candidate, servername: string | undefined, signal: AbortSignal): Promise<Connection> {
    const port = c.port ?? this.opts.port;
    if (c.transport === "dtls") {
      const cert = this.opts.psk ? undefined : this.opts.certificate;
      if (!this.opts.psk && (!cert || this.opts.dtlsImplementation === "node-dtls-client"))
        return Promise.reject(new Error("DTLS with certificates needs our DTLS client"));
      const resumptionKey = `${c.address}|${port}`;
      return connectDtls({
        host: c.address,
        port,
        family: c.family,
        psk: this.opts.psk,
        // Certificate suites (RFC 8422): the ISP's certificate must carry the configured servername, else the host name dialled.
        certificate: cert
          ? {
              cert: cert.cert,
              key: cert.key,
              ca: cert.ca as NonNullable<typeof cert.ca>,
              passphrase: cert.passphrase,
              servername: servername ?? (isIP(c.host) === 0 ? c.host : undefined),
            }
          : undefined,
        signal,
        handshakeTimeoutMs: this.tuning.dtlsHandshakeTimeoutMs,
        attempts: this.tuning.dtlsAttempts ?? 4,
        implementation: this.opts.dtlsImplementation,
        resumeFrom: this.dtlsResumptions.get(resumptionKey),
        onResumption: (r) => this.keepDtlsResumption(resumptionKey, r),
      });
    }
    // The name to check on the ISP's certificate: the configured servername, else a host name.
    const name = servername ?? (isIP(c.host) === 0 ? c.host : undefined);
    const ticketKey = `${c.address}|${port}|${name ?? ""}`;
    // Resumption (RFC 9132 section 7.1) with certificates only: a TLS server resuming a PSK
    // session never re-runs its PSK callback, so it cannot tell who the peer is.
    const useTickets = !this.opts.psk;
    const p = resendWhileRefused(
      () =>
        connectTls({
          host: c.address,
          port,
          family: c.family,
          psk: this.opts.psk,
          certificate:
            this.opts.psk || !this.opts.certificate
              ? undefined
              : {
                  cert: this.opts.certificate.cert,
                  key: this.opts.certificate.key,
                  ca: this.opts.certificate.ca as NonNullable<typeof this.opts.certificate.ca>,
                  passphrase: this.opts.certificate.passphrase,
                },
          servername: name,
          session: useTickets ? this.tickets.get(ticketKey) : undefined,
          onSession: (t) => {
            if (!useTickets) return;
            this.tickets.set(ticketKey, t);
            if (this.tickets.size > 16) this.tickets.delete(this.tickets.keys().next().value as string);
          },
          timeoutMs: this.tuning.tlsTimeoutMs,
        }),
      signal,
    );
    // connectTls has no abort hook: a loser that connects later is closed.
    return new Promise<Connection>((resolve, reject) => {
      const onAbort = () => reject(new Error("aborted"));
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(
        (conn) => {
          signal.removeEventListener("abort", onAbort);
          if (signal.aborted) conn.close();
          resolve(conn);
        },
        (e) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  }

  // ------------------------------------------------------------------------------ session

  private attach(connection: Connection, candidate: Candidate, redirected: boolean): void {
    const set = this.config.active();
    const endpoint = new CoapEndpoint(connection, { transmission: toTransmissionParameters(set) });
    const heartbeat = new HeartbeatScheduler({
      intervalSeconds: set.heartbeatInterval,
      missingHbAllowed: Math.max(1, set.missingHbAllowed),
      msPerSecond: this.tuning.msPerSecond,
      silentAfterMs: this.tuning.probeWhenSilent === false ? 0 : silentAfterMs(set.ackTimeout, set.ackRandomFactor),
      send: (body, answered) => void this.sendHeartbeat(endpoint, body).then(answered, () => answered(false)),
    });
    const session: Session = { connection, endpoint, heartbeat, candidate, redirected, heard: false };
    this.session = session;
    const peer = peerKey(connection.peer);
    endpoint.onRequest((req) => this.resources.handle(adaptRequest(req, peer)));
    endpoint.on("activity", () => {
      session.heard = true;
      heartbeat.traffic();
      if (session.suspect && this.session === session) this.unsuspect(session);
    });
    endpoint.on("protocol-error", (e: Error) => this.emit("error", e));
    endpoint.on("handler-error", (e: Error) => this.emit("error", e));
    endpoint.once("close", (err?: Error) => this.onSessionClosed(session, err?.message ?? "connection closed"));
    heartbeat.on("lost", ({ silentMs }) => {
      void this.closeSession(session, `session lost: no traffic from the ISP for ${silentMs} ms`);
    });
    heartbeat.on("silent", () => void this.probeLiveness(session));
    heartbeat.start();
    // Over UDP one CoAP ping gives the RTT estimate that paces notifications (else 1 per 3 s).
    if (!endpoint.isTcp) endpoint.ping().catch(() => undefined);
    this.emit("connected", {
      remoteAddress: connection.remoteAddress,
      remotePort: connection.remotePort,
      transport: connection.transport,
      cipher: connection.cipher,
    });
    if (redirected && this.redirect && this.redirect.until !== Infinity) this.armRedirectExpiry();
    else if (!redirected && this.redirectTimer) {
      clearTimeout(this.redirectTimer);
      this.redirectTimer = undefined;
    }
  }

  private async sendHeartbeat(endpoint: CoapEndpoint, body: DotsJson): Promise<boolean> {
    const interval = this.session?.heartbeat.intervalMs ?? 30_000;
    const res = await endpoint.request({
      method: "PUT",
      path: HB_PATH,
      confirmable: false,
      payload: encodeDotsCbor(body),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      timeoutMs: Math.max(200, interval),
    });
    return res.code === Code.Changed;
  }

  private applyConfig(set: ConfigSet): void {
    const s = this.session;
    if (!s) return;
    s.endpoint.setTransmissionParameters(toTransmissionParameters(set));
    s.heartbeat.reconfigure(set.heartbeatInterval, Math.max(1, set.missingHbAllowed));
  }

  private closeSession(s: Session, reason: string): Promise<void> {
    if (!s.closing) s.closing = reason;
    s.heartbeat.stop();
    return new Promise<void>((resolve) => {
      if (s.connection.closed) return resolve();
      s.connection.once("close", () => resolve());
      s.endpoint.close();
      s.connection.close();
      // A transport that never reports close must neither hang stop() nor wedge reconnection.
      const t = setTimeout(() => {
        this.onSessionClosed(s, reason);
        resolve();
      }, 2000);
      t.unref();
      s.connection.once("close", () => clearTimeout(t));
    });
  }

  private onSessionClosed(s: Session, why: string): void {
    s.heartbeat.stop();
    if (this.session !== s) return;
    this.session = undefined;
    this.resources.dropConnectionState();
    // A connection that ended before the ISP said anything may have been refused on a stale
    // ticket; the next attempt does a full handshake.
    if (!s.heard) {
      this.tickets.clear();
      this.forgetDtlsResumptions();
    }
    const reason = s.closing ?? why;
    if (!this.running) {
      this.emit("disconnected", { reason });
      return;
    }
    // A redirect reconnects at once. A session that was up and ended (the ISP closed it, e.g. a
    // listener restart) is not a failed attempt: the first attempt is jittered, and the RFC 9132
    // spacing applies from its failure on. A session that ended before the ISP said anything
    // counts as a failed attempt.
    let retryInMs: number;
    if (this.redirectPending) retryInMs = 0;
    else if (s.heard) retryInMs = this.pacer.afterSessionEnded();
    else {
      this.pacer.failed();
      retryInMs = this.pacer.delayMs();
    }
    this.redirectPending = false;
    this.emit("disconnected", { reason, retryInMs });
    this.scheduleConnect(retryInMs);
  }

  // ------------------------------------------------------------------------------ liveness

  /**
   * A heartbeat went unanswered with nothing else heard: probe with a CoAP ping (RFC 7252 section
   * 4.3). If that exchange gives up too, the ISP is presumed gone (e.g. a crashed listener that lost
   * the DTLS session): set up a new session in parallel, as RFC 9132 section 4.7 asks of a client
   * that hears nothing while the old session is not yet declared lost. The old session stays until
   * the new one is up, so nothing is given up on the way.
   */
  private async probeLiveness(s: Session): Promise<void> {
    if (s.probing || s.suspect || s.closing || this.session !== s || !this.running) return;
    s.probing = true;
    const since = s.heartbeat.lastTrafficAt;
    try {
      await s.endpoint.ping();
      return;
    } catch {
      // no answer (or the endpoint closed: onSessionClosed handles that)
    } finally {
      s.probing = false;
    }
    if (s.closing || this.session !== s || !this.running || s.connection.closed) return;
    if (s.heartbeat.lastTrafficAt > since) return;
    const silentMs = Date.now() - s.heartbeat.lastTrafficAt;
    s.suspect = `the ISP answered neither a heartbeat nor a CoAP ping for ${silentMs} ms`;
    const retryInMs = this.pacer.afterSessionEnded();
    this.emit(
      "error",
      new Error(`${s.suspect}; setting up a new session in parallel in ${retryInMs} ms (the current one is kept meanwhile)`),
    );
    this.scheduleConnect(retryInMs);
  }

  /** Traffic came back on a suspect session: keep it, and cancel a parallel attempt not yet started. */
  private unsuspect(s: Session): void {
    s.suspect = undefined;
    if (this.reconnectTimer && !this.connecting) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
    }
  }

  /** A new session won while the old one was silent: retire the old one without a reconnect. */
  private replaceSession(old: Session): void {
    const reason = `replaced by a new session (${old.suspect ?? "superseded"})`;
    old.closing ??= reason;
    this.session = undefined;
    this.resources.dropConnectionState();
    this.emit("disconnected", { reason, retryInMs: 0 });
    void this.closeSession(old, reason);
  }

  // ------------------------------------------------------------------------------ redirect

  private redirectPending = false;
  /** alt-ch-client names followed, with when (loop protection). */
  private readonly followed = new Map<string, number>();

  private async checkRedirect(t: RedirectTarget): Promise<string | undefined> {
    // Loop protection (RFC 9132 section 4.6): a client we were sent to moments ago is refused.
    const window = this.tuning.redirectLoopWindowMs ?? 300_000;
    const last = this.followed.get(t.altClient.toLowerCase());
    if (last !== undefined && Date.now() - last < window)
      return `already redirected to ${t.altClient} within the last ${Math.round(window / 1000)} s (loop)`;
    // ttl 0 limits the redirect to the attack in progress (RFC 9132 section 4.6, Max-Age 0).
    if (t.ttl === 0 && this.store.activeCount() === 0) return "ttl 0 applies only to an attack in progress, and no mitigation is active";
    if (t.records.length > 0) return undefined;
    try {
      const addrs = await (this.tuning.lookup ?? defaultLookup)(t.altClient);
      return addrs.length > 0 ? undefined : `${t.altClient} has no address`;
    } catch (e) {
      return `cannot resolve ${t.altClient}: ${(e as Error).message}`;
    }
  }

  /** After the 2.01: close this connection and dial the alternate client (RFC 9066 section 5.2.2). */
  private followRedirect(t: RedirectTarget): void {
    this.followed.set(t.altClient.toLowerCase(), Date.now());
    if (this.followed.size > 32) this.followed.delete(this.followed.keys().next().value as string);
    const ttl = t.ttl ?? DEFAULT_REDIRECT_TTL_S;
    const until = ttl === INFINITE_REDIRECT_TTL_S ? Infinity : Date.now() + ttl * (this.tuning.redirectTtlMsPerSecond ?? 1000);
    this.redirect = { target: t, until };
    this.emit("redirected", { altClient: t.altClient, records: [...t.records], ttl });
    const s = this.session;
    if (!s) return;
    this.redirectPending = true;
    // Let the 2.01 leave before the close_notify.
    setTimeout(() => void this.closeSession(s, `redirected to ${t.altClient}`), 20).unref();
  }

  /**
   * The alternate client is used until its ttl ends; after that the provisioned one, at once,
   * "except when a DDoS attack is active" (RFC 9132 section 4.6): then the alternate stays in use
   * (reconnects included) until no mitigation is active.
   */
  private redirectInForce(): boolean {
    const r = this.redirect;
    if (!r) return false;
    return r.until > Date.now() || this.store.activeCount() > 0;
  }

  private armRedirectExpiry(): void {
    if (this.redirectTimer) clearTimeout(this.redirectTimer);
    this.redirectTimer = undefined;
    const r = this.redirect;
    if (!r || r.until === Infinity) return;
    const left = r.until - Date.now();
    // setTimeout holds at most 2^31-1 ms (24.8 days): a longer ttl is re-armed on the way.
    this.redirectTimer = setTimeout(
      () => {
        this.redirectTimer = undefined;
        if (this.redirect !== r) return;
        if (r.until > Date.now()) return this.armRedirectExpiry();
        this.fallBackFromRedirect("redirect ttl expired");
      },
      Math.max(0, Math.min(left, 0x7fffffff)),
    );
    this.redirectTimer.unref();
  }

  /** The last mitigation ended: a redirect whose ttl ran out during the attack ends now. */
  private redirectAfterAttack(): void {
    const r = this.redirect;
    if (!r || r.until > Date.now()) return;
    this.fallBackFromRedirect("redirect ttl expired during the attack, which is now over");
  }

  /** Back to the provisioned client, unless an attack is active (then redirectAfterAttack does it). */
  private fallBackFromRedirect(why: string): void {
    if (this.store.activeCount() > 0) return;
    this.redirect = undefined;
    const s = this.session;
    if (!s || !s.redirected || s.closing || !this.running) return;
    this.redirectPending = true;
    // The attack may end inside a request handler (a DELETE): let its answer leave first.
    setTimeout(() => {
      if (this.session === s && !s.closing) void this.closeSession(s, `${why}; back to the provisioned ISP client`);
      else this.redirectPending = false;
    }, 20).unref();
  }

  // ------------------------------------------------------------------------------ typing

  override on<E extends keyof CallHomeDialerEvents>(event: E, listener: (...args: CallHomeDialerEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<E extends keyof CallHomeDialerEvents>(event: E, listener: (...args: CallHomeDialerEvents[E]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  override emit<E extends keyof CallHomeDialerEvents>(event: E, ...args: CallHomeDialerEvents[E]): boolean {
    // 'error' without a listener would throw out of a socket handler; report only when listened to.
    if (event === "error" && this.listenerCount("error") === 0) return false;
    return super.emit(event, ...args);
  }
}

/** A stable key of the authenticated ISP: its PSK identity, else its certificate's public key. */
function peerKey(p: PeerIdentity): string {
  if (p.method === "psk") return `psk:${p.pskIdentity ?? ""}`;
  if (p.spki) return `spki:${createHash("sha256").update(p.spki).digest("base64url")}`;
  return `cert:${p.subject ?? ""}`;
}

/** Maps the endpoint's request onto the resource seam. */
function adaptRequest(req: IncomingRequest, peer: string): ResourceRequest {
  return {
    peer,
    method: req.code,
    path: req.path,
    contentFormat: req.contentFormat,
    payload: req.payload,
    ifMatch: req.options.filter((o) => o.number === OptionNumber.IfMatch).map((o) => o.value),
    observe: req.observe,
    respond: (r) => req.respond({ code: r.code, payload: r.payload, contentFormat: r.contentFormat, maxAge: r.maxAge }),
    ignore: () => req.ignore(),
    acceptObserve: () => req.acceptObserve(),
  };
}
