// DOTS heartbeats (RFC 9132 section 4.7 with the RFC 9066 section 5.2.1 deviations): both agents
// send NON PUT /.well-known/dots/hb carrying peer-hb-status; a session counts as lost only after
// missing-hb-allowed intervals with no traffic at all from the peer. Shared by both engines.
import { EventEmitter } from "node:events";
import { encodeDotsCbor } from "../cbor";
import type { DotsJson } from "./api";

export const HEARTBEAT_KEY = "ietf-dots-signal-channel:heartbeat";
export const HEARTBEAT_PATH = "/.well-known/dots/hb";

export function buildHeartbeatJson(peerHbStatus: boolean): DotsJson {
  return { [HEARTBEAT_KEY]: { "peer-hb-status": peerHbStatus } };
}

/** The two heartbeat bodies in application/dots+cbor, encoded once (never written to). */
const ENCODED_HEARTBEATS = [false, true].map((status) => Buffer.from(encodeDotsCbor(buildHeartbeatJson(status))));

/** A PUT /hb body as CBOR bytes, shared by every session. */
export function encodedHeartbeat(peerHbStatus: boolean): Buffer {
  return ENCODED_HEARTBEATS[peerHbStatus ? 1 : 0];
}

export class HeartbeatParseError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "HeartbeatParseError";
  }
}

/** Reads a PUT /hb body; throws HeartbeatParseError naming the field when invalid. */
export function parseHeartbeatJson(json: unknown): { peerHbStatus: boolean } {
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new HeartbeatParseError(HEARTBEAT_KEY, "heartbeat body must be an object");
  const root = (json as Record<string, unknown>)[HEARTBEAT_KEY];
  if (typeof root !== "object" || root === null || Array.isArray(root))
    throw new HeartbeatParseError(HEARTBEAT_KEY, `${HEARTBEAT_KEY} is missing`);
  for (const k of Object.keys(json as object)) {
    if (k !== HEARTBEAT_KEY) throw new HeartbeatParseError(k, `unexpected member ${k} in heartbeat`);
  }
  const status = (root as Record<string, unknown>)["peer-hb-status"];
  if (typeof status !== "boolean") throw new HeartbeatParseError("peer-hb-status", "peer-hb-status is mandatory and must be a boolean");
  return { peerHbStatus: status };
}

export interface HeartbeatSchedulerOptions {
  /** heartbeat-interval in seconds; 0 disables sending (and loss detection). */
  intervalSeconds: number;
  missingHbAllowed: number;
  /**
   * Sends one NON PUT /hb with this body, then calls `answered` once: true when a 2.04 came back,
   * false when it was not answered in time or could not go out. A throw counts as unanswered.
   */
  send: (body: DotsJson, answered: (ok: boolean) => void) => void;
  /** Declare the session lost after missing-hb-allowed silent intervals. Default true. */
  detectLoss?: boolean;
  /** Milliseconds per heartbeat-interval second; 1000 unless a lab compresses time. */
  msPerSecond?: number;
  /**
   * When nothing at all arrived from the peer within this many ms after a heartbeat was sent,
   * emit 'silent' once for that heartbeat (the owner may probe liveness). 0 or absent: off.
   */
  silentAfterMs?: number;
  now?: () => number;
}

/**
 * How long after sending a heartbeat the home waits for any answer before it probes liveness:
 * ack-timeout x ack-random-factor, the longest first CoAP retransmission timeout (RFC 7252 4.8).
 */
export function silentAfterMs(ackTimeoutSeconds: number, ackRandomFactor: number): number {
  return Math.ceil(ackTimeoutSeconds * ackRandomFactor * 1000);
}

/**
 * Longest time a UDP CoAP ping (empty CON, RFC 7252 section 4.3) stays unanswered before its
 * exchange gives up: ack-timeout x ack-random-factor x (2^(max-retransmit + 1) - 1).
 */
export function pingGiveUpMs(ackTimeoutSeconds: number, ackRandomFactor: number, maxRetransmit: number): number {
  return Math.ceil(ackTimeoutSeconds * ackRandomFactor * (2 ** (maxRetransmit + 1) - 1) * 1000);
}

/**
 * Worst case from the ISP going silent (crash) to the home starting a new session, over UDP with
 * the given configuration: one heartbeat interval until the next heartbeat leaves, the silence
 * wait, then the CoAP ping giving up. The new session's handshake comes on top.
 */
export function silenceToRedialMs(set: {
  heartbeatInterval: number;
  ackTimeout: number;
  ackRandomFactor: number;
  maxRetransmit: number;
}): number {
  return (
    set.heartbeatInterval * 1000 +
    silentAfterMs(set.ackTimeout, set.ackRandomFactor) +
    pingGiveUpMs(set.ackTimeout, set.ackRandomFactor, set.maxRetransmit)
  );
}

export interface HeartbeatSchedulerEvents {
  sent: [{ peerHbStatus: boolean }];
  answered: [];
  missed: [{ consecutive: number }];
  /** No traffic from the peer for missing-hb-allowed intervals. The scheduler stops itself. */
  lost: [{ silentMs: number; missed: number }];
  /** Nothing arrived from the peer within silentAfterMs of a heartbeat (see the option). */
  silent: [{ silentMs: number }];
}

/**
 * Sends heartbeats every interval and tracks liveness: peer-hb-status is true when the peer's own
 * heartbeats arrived within 2 x interval; loss is declared only when no traffic arrived for
 * missing-hb-allowed x interval, so a saturated link that still delivers anything keeps the session.
 */
export class HeartbeatScheduler extends EventEmitter {
  private intervalSeconds: number;
  private missingHbAllowed: number;
  private readonly sendFn: (body: DotsJson, answered: (ok: boolean) => void) => void;
  private readonly detectLoss: boolean;
  private readonly msPerSecond: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private readonly silentAfterMs: number;
  private running = false;
  private lastPeerHeartbeat = -Infinity;
  private lastTraffic: number;
  private consecutiveMissed = 0;

  constructor(opts: HeartbeatSchedulerOptions) {
    super();
    this.sendFn = opts.send;
    this.detectLoss = opts.detectLoss ?? true;
    this.msPerSecond = opts.msPerSecond ?? 1000;
    this.now = opts.now ?? Date.now;
    this.silentAfterMs = opts.silentAfterMs ?? 0;
    this.intervalSeconds = opts.intervalSeconds;
    this.missingHbAllowed = opts.missingHbAllowed;
    this.validate(opts.intervalSeconds, opts.missingHbAllowed);
    this.lastTraffic = this.now();
  }

  private validate(interval: number, missing: number): void {
    if (!(interval >= 0) || !Number.isFinite(interval)) throw new RangeError(`heartbeat interval must be >= 0, got ${interval}`);
    if (!Number.isInteger(missing) || missing < 1) throw new RangeError(`missing-hb-allowed must be an integer >= 1, got ${missing}`);
  }

  get intervalMs(): number {
    return this.intervalSeconds * this.msPerSecond;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** True if the peer's heartbeats arrived within the last 2 x heartbeat-interval. */
  get peerHbStatus(): boolean {
    if (this.intervalSeconds === 0) return false;
    return this.now() - this.lastPeerHeartbeat <= 2 * this.intervalMs;
  }

  get missedInARow(): number {
    return this.consecutiveMissed;
  }

  get lastTrafficAt(): number {
    return this.lastTraffic;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.lastTraffic = this.now();
    this.consecutiveMissed = 0;
    this.arm();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.timer = this.silenceTimer = undefined;
  }

  /** Apply renegotiated values (PUT /config, idle <-> mitigating switch). */
  reconfigure(intervalSeconds: number, missingHbAllowed: number): void {
    this.validate(intervalSeconds, missingHbAllowed);
    if (intervalSeconds === this.intervalSeconds && missingHbAllowed === this.missingHbAllowed) return;
    this.intervalSeconds = intervalSeconds;
    this.missingHbAllowed = missingHbAllowed;
    if (this.running) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.arm();
    }
  }

  /** The peer's PUT /hb arrived (it is traffic too). */
  peerHeartbeat(): void {
    this.lastPeerHeartbeat = this.now();
    this.traffic();
  }

  /** Any message from the peer arrived. */
  traffic(): void {
    this.lastTraffic = this.now();
    this.consecutiveMissed = 0;
  }

  private arm(): void {
    if (!this.running || this.intervalSeconds === 0) return;
    this.timer = setTimeout(this.onTick, this.intervalMs);
    this.timer.unref();
  }

  /** One Timeout per scheduler, re-armed by refresh(): nothing allocated per heartbeat. */
  private readonly onTick = (): void => {
    if (!this.running) {
      this.timer = undefined;
      return;
    }
    this.tick();
    if (this.running && this.timer !== undefined && this.intervalSeconds !== 0) this.timer.refresh();
  };

  /** One heartbeat interval passed while running (onTick checks). */
  private tick(): void {
    const silentMs = this.now() - this.lastTraffic;
    if (this.detectLoss && this.consecutiveMissed >= this.missingHbAllowed && silentMs >= this.missingHbAllowed * this.intervalMs) {
      this.stop();
      this.emit("lost", { silentMs, missed: this.consecutiveMissed });
      return;
    }
    const peerHbStatus = this.peerHbStatus;
    this.emit("sent", { peerHbStatus });
    // Counted as missed now and cleared by any traffic, so a slow answer never races the next tick.
    this.consecutiveMissed++;
    this.armSilenceCheck();
    try {
      this.sendFn(buildHeartbeatJson(peerHbStatus), this.onAnswered);
    } catch {
      this.onAnswered(false);
    }
  }

  /** The answer to a heartbeat: one function per scheduler, nothing allocated per heartbeat. */
  private readonly onAnswered = (ok: boolean): void => {
    if (!this.running) return;
    if (ok) {
      this.traffic();
      this.emit("answered");
    } else this.emit("missed", { consecutive: this.consecutiveMissed });
  };

  private armSilenceCheck(): void {
    if (this.silentAfterMs <= 0 || this.silenceTimer) return;
    const sentAt = this.now();
    this.silenceTimer = setTimeout(() => {
      this.silenceTimer = undefined;
      if (this.running && this.lastTraffic < sentAt) this.emit("silent", { silentMs: this.now() - this.lastTraffic });
    }, this.silentAfterMs);
    this.silenceTimer.unref();
  }

  override on<E extends keyof HeartbeatSchedulerEvents>(event: E, listener: (...args: HeartbeatSchedulerEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<E extends keyof HeartbeatSchedulerEvents>(event: E, listener: (...args: HeartbeatSchedulerEvents[E]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }
}
