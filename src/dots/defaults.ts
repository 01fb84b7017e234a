// One set of defaults and limits for both faces: the `dots-call-home` command and the Node-RED
// nodes read them from here, so a setting left out means the same thing everywhere. Durations are
// in milliseconds unless the name says seconds (heartbeat-interval is seconds on the wire).
import { DEFAULT_MAX_HANDSHAKING_PER_SOURCE } from "../transport/dtls/constants";

/** Defaults of every tunable setting the CLI and the nodes expose. */
export const DEFAULTS = Object.freeze({
  /** UDP and TCP port of the Call Home listener (RFC 9066 section 9). */
  port: 4647,
  /** heartbeat-interval the home offers in /config, seconds (RFC 9132 default). */
  heartbeatIntervalS: 30,
  /** How long a PUT /mitigate waits for a decision before answering 2.01 status 1 (pending). */
  decisionWaitMs: 1000,
  /** After a withdrawal, keep mitigating this long with status 5 (RFC 9132 section 4.4.4 suggests 120 s). */
  terminatingPeriodMs: 120_000,
  /** Longest lifetime the home grants, seconds (RFC 9132 4.4.1 lets the server grant less than asked; 1 day). */
  maxLifetimeS: 86_400,
  /** retry-timer sent when the home deactivates a request as legitimate traffic, seconds (RFC 9132 4.4.1). */
  legitimateRetryS: 300,
  /** Reconnect back-off floor and ceiling (RFC 9132 section 4.3: 60 s minimum between attempts). */
  reconnectMinMs: 60_000,
  reconnectMaxMs: 300_000,
  /** Drop-list (RFC 9066 section 8): failed handshakes within the window that ban a source, and the ban. */
  dropAfterFailures: 5,
  dropWindowMs: 60_000,
  dropBanMs: 300_000,
  /** NON repeat interval of mitigation requests and the time an unanswered one is given up. */
  requestRepeatMs: 3000,
  requestTimeoutMs: 60_000,
  /** Manual consent: how long a pending block waits for the owner's answer. */
  consentTimeoutMs: 300_000,
  /** DTLS handshakes in progress per source address (IPv6: per /64); homes behind one CGN address share it. */
  maxHandshakesPerSource: DEFAULT_MAX_HANDSHAKING_PER_SOURCE,
});

/** Inclusive bounds of the same settings (a value outside is refused with both bounds named). */
export const LIMITS = Object.freeze({
  port: [0, 65535],
  /** 1 s admitted for labs; RFC 9132's advertised range is 15..240. */
  heartbeatIntervalS: [1, 65535],
  decisionWaitMs: [0, 3_600_000],
  terminatingPeriodMs: [0, 3_600_000],
  statusPeriodMs: [0, 3_600_000],
  /** Up to 365 days: the nftables timeout the enforcer can express. */
  maxLifetimeS: [1, 31_536_000],
  reconnectMs: [0, 86_400_000],
  dropAfterFailures: [1, 1_000_000],
  dropWindowMs: [1, 86_400_000],
  dropBanMs: [1, 86_400_000],
  maxHandshakesPerSource: [1, 100_000],
  requestRepeatMs: [1, 600_000],
  requestTimeoutMs: [1, 3_600_000],
  consentTimeoutMs: [1, 86_400_000],
} as const satisfies Record<string, readonly [number, number]>);

/** Shortest PSK key accepted: under 128 bits a key can be guessed offline from one captured handshake. */
export const MIN_PSK_KEY_BYTES = 16;
/** Longest PSK identity accepted (the editor's limit; RFC 4279 allows 2^16-1 bytes). */
export const MAX_PSK_IDENTITY_LENGTH = 128;

/** Why a PSK key is refused, or undefined when it is acceptable. */
export function pskKeyProblem(key: Buffer | Uint8Array): string | undefined {
  if (key.length === 0) return "the PSK key is empty";
  if (key.length < MIN_PSK_KEY_BYTES)
    return `the PSK key is ${key.length * 8} bits; at least ${MIN_PSK_KEY_BYTES * 8} bits (${MIN_PSK_KEY_BYTES} bytes, ${MIN_PSK_KEY_BYTES * 2} hex digits) are needed`;
  return undefined;
}

/** Why a PSK identity is refused, or undefined when it is acceptable. */
export function pskIdentityProblem(identity: string): string | undefined {
  if (typeof identity !== "string" || identity.length === 0) return "the PSK identity is empty";
  if (identity.length > MAX_PSK_IDENTITY_LENGTH) return `the PSK identity is longer than ${MAX_PSK_IDENTITY_LENGTH} characters`;
  return undefined;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/;

/**
 * A duration written as a number with or without a unit (ms, s, m, h): "1500", "1500ms", "1.5s",
 * "5m", "1h". A bare number is in `bareUnit` (milliseconds unless told). Returns milliseconds, or
 * undefined when the text is not a duration or does not come to a whole number of milliseconds.
 */
export function parseDuration(text: string | number, bareUnit: "ms" | "s" = "ms"): number | undefined {
  if (typeof text === "number") {
    const ms = text * UNIT_MS[bareUnit];
    return Number.isSafeInteger(ms) && ms >= 0 ? ms : undefined;
  }
  const m = DURATION.exec(String(text));
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] ?? bareUnit];
  return Number.isSafeInteger(ms) ? ms : undefined;
}
