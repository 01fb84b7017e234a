// DOTS signal channel session configuration (RFC 9132 section 4.5): the two parameter sets
// (idle-config, mitigating-config) with their acceptable ranges, the JSON view served by
// GET /config, PUT /config/sid=N negotiation and DELETE reset. Used by the home side (which
// owns the configuration in Call Home) and by the ISP side (which reads the GET answer).
import { EventEmitter } from "node:events";
import { Code } from "../coap/message";
import type { DotsJson } from "./api";

export const SIGNAL_CONFIG_KEY = "ietf-dots-signal-channel:signal-config";

/** One parameter set. Times in seconds, ack-timeout and ack-random-factor are decimals. */
export interface ConfigSet {
  heartbeatInterval: number;
  missingHbAllowed: number;
  maxRetransmit: number;
  ackTimeout: number;
  ackRandomFactor: number;
  probingRate: number;
}

export type ConfigParameter = keyof ConfigSet;

export interface ConfigRange {
  min: number;
  max: number;
}

export type ConfigLimits = Record<ConfigParameter, ConfigRange>;

/** RFC 9132 YANG defaults (section 4.5.2, Appendix C). */
export const DEFAULT_CONFIG_SET: Readonly<ConfigSet> = Object.freeze({
  heartbeatInterval: 30,
  missingHbAllowed: 15,
  maxRetransmit: 3,
  ackTimeout: 2.0,
  ackRandomFactor: 1.5,
  probingRate: 5,
});

/** Acceptable ranges (RFC 9132 Figure 20 values; heartbeat 15..240 is the RECOMMENDED range). */
export const DEFAULT_CONFIG_LIMITS: Readonly<ConfigLimits> = Object.freeze({
  heartbeatInterval: { min: 15, max: 240 },
  missingHbAllowed: { min: 3, max: 20 },
  maxRetransmit: { min: 2, max: 15 },
  ackTimeout: { min: 1.0, max: 30.0 },
  ackRandomFactor: { min: 1.1, max: 4.0 },
  probingRate: { min: 5, max: 20 },
});

/** YANG leaf names and whether the value is decimal64 (JSON string "2.00"). */
const PARAMETERS: ReadonlyArray<{ key: ConfigParameter; name: string; decimal: boolean }> = [
  { key: "heartbeatInterval", name: "heartbeat-interval", decimal: false },
  { key: "missingHbAllowed", name: "missing-hb-allowed", decimal: false },
  { key: "probingRate", name: "probing-rate", decimal: false },
  { key: "maxRetransmit", name: "max-retransmit", decimal: false },
  { key: "ackTimeout", name: "ack-timeout", decimal: true },
  { key: "ackRandomFactor", name: "ack-random-factor", decimal: true },
];

const SET_NAMES = { mitigating: "mitigating-config", idle: "idle-config" } as const;
export type ConfigSetName = keyof typeof SET_NAMES;

/** CoAP transmission parameters derived from a set (milliseconds for the endpoint). */
export interface TransmissionParameters {
  ackTimeoutMs: number;
  ackRandomFactor: number;
  maxRetransmit: number;
}

export function toTransmissionParameters(set: ConfigSet): TransmissionParameters {
  return {
    ackTimeoutMs: Math.round(set.ackTimeout * 1000),
    ackRandomFactor: set.ackRandomFactor,
    maxRetransmit: set.maxRetransmit,
  };
}

function formatDecimal(v: number): string {
  return v.toFixed(2);
}

/** Reads a decimal64 value from its JSON view (string "2.00") or a number; NaN when invalid. */
export function parseDecimal(v: unknown): number {
  if (typeof v === "number") return Number.isFinite(v) ? v : NaN;
  if (typeof v === "string" && /^-?\d+(\.\d+)?$/.test(v.trim())) return Number(v);
  // src/cbor may hand back a decoded tag 4 as [exponent, mantissa].
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === "number" && typeof v[1] === "number") return v[1] * 10 ** v[0];
  return NaN;
}

function parseUint(v: unknown): number {
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === "string" && /^\d+$/.test(v)) return Number(v);
  return NaN;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** JSON view of one parameter set with min/max/current (GET /config answer). */
export function configSetToJson(set: ConfigSet, limits: ConfigLimits): DotsJson {
  const out: DotsJson = {};
  for (const p of PARAMETERS) {
    out[p.name] = p.decimal
      ? {
          "max-value-decimal": formatDecimal(limits[p.key].max),
          "min-value-decimal": formatDecimal(limits[p.key].min),
          "current-value-decimal": formatDecimal(set[p.key]),
        }
      : { "max-value": limits[p.key].max, "min-value": limits[p.key].min, "current-value": set[p.key] };
  }
  return out;
}

/** Builds the JSON view of a whole configuration (both sets) as GET /config returns it. */
export function buildConfigJson(sets: Record<ConfigSetName, ConfigSet>, limits: Record<ConfigSetName, ConfigLimits>): DotsJson {
  return {
    [SIGNAL_CONFIG_KEY]: {
      [SET_NAMES.mitigating]: configSetToJson(sets.mitigating, limits.mitigating),
      [SET_NAMES.idle]: configSetToJson(sets.idle, limits.idle),
    },
  };
}

/** Body of PUT /config/sid=N: current values only (RFC 9132 Figure 22). */
export function buildConfigPutJson(sets: Partial<Record<ConfigSetName, Partial<ConfigSet>>>): DotsJson {
  const body: Record<string, unknown> = {};
  for (const which of ["mitigating", "idle"] as const) {
    const set = sets[which];
    if (!set) continue;
    const out: Record<string, unknown> = {};
    for (const p of PARAMETERS) {
      const v = set[p.key];
      if (v === undefined) continue;
      out[p.name] = p.decimal ? { "current-value-decimal": formatDecimal(v) } : { "current-value": v };
    }
    body[SET_NAMES[which]] = out;
  }
  return { [SIGNAL_CONFIG_KEY]: body };
}

export interface ParsedConfigSet {
  values: Partial<ConfigSet>;
  limits: Partial<ConfigLimits>;
}

export class ConfigParseError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "ConfigParseError";
  }
}

function parseSet(json: unknown, setName: string): ParsedConfigSet {
  if (!isRecord(json)) throw new ConfigParseError(setName, `${setName} must be an object`);
  const values: Partial<ConfigSet> = {};
  const limits: Partial<ConfigLimits> = {};
  const known = new Set(PARAMETERS.map((p) => p.name));
  for (const name of Object.keys(json)) {
    if (!known.has(name)) throw new ConfigParseError(`${setName}/${name}`, `unknown parameter ${setName}/${name}`);
  }
  for (const p of PARAMETERS) {
    const entry = json[p.name];
    if (entry === undefined) continue;
    const field = `${setName}/${p.name}`;
    if (!isRecord(entry)) throw new ConfigParseError(field, `${field} must be an object`);
    const suffix = p.decimal ? "-decimal" : "";
    const read = (leaf: string): number | undefined => {
      const raw = entry[leaf + suffix];
      if (raw === undefined) {
        if (entry[p.decimal ? leaf : leaf + "-decimal"] !== undefined) {
          throw new ConfigParseError(field, `${field} uses ${p.decimal ? leaf : leaf + "-decimal"}; expected ${leaf + suffix}`);
        }
        return undefined;
      }
      const v = p.decimal ? parseDecimal(raw) : parseUint(raw);
      if (!Number.isFinite(v))
        throw new ConfigParseError(field, `${field}/${leaf + suffix} is not a valid ${p.decimal ? "decimal" : "unsigned integer"}`);
      return v;
    };
    const current = read("current-value");
    const min = read("min-value");
    const max = read("max-value");
    if (current !== undefined) values[p.key] = current;
    if (min !== undefined && max !== undefined) limits[p.key] = { min, max };
  }
  return { values, limits };
}

/**
 * Reads a signal-config JSON view (a GET /config answer or a PUT body). Throws ConfigParseError
 * naming the field when it is malformed.
 */
export function parseConfigJson(json: unknown): Partial<Record<ConfigSetName, ParsedConfigSet>> {
  if (!isRecord(json)) throw new ConfigParseError(SIGNAL_CONFIG_KEY, "body must be an object");
  const root = json[SIGNAL_CONFIG_KEY];
  for (const k of Object.keys(json)) {
    if (k !== SIGNAL_CONFIG_KEY) throw new ConfigParseError(k, `unexpected top-level member ${k}`);
  }
  if (!isRecord(root)) throw new ConfigParseError(SIGNAL_CONFIG_KEY, `${SIGNAL_CONFIG_KEY} is missing or not an object`);
  const out: Partial<Record<ConfigSetName, ParsedConfigSet>> = {};
  for (const k of Object.keys(root)) {
    if (k !== SET_NAMES.mitigating && k !== SET_NAMES.idle && k !== "sid") {
      throw new ConfigParseError(k, `unknown member ${k} in signal-config`);
    }
  }
  if (root[SET_NAMES.mitigating] !== undefined) out.mitigating = parseSet(root[SET_NAMES.mitigating], SET_NAMES.mitigating);
  if (root[SET_NAMES.idle] !== undefined) out.idle = parseSet(root[SET_NAMES.idle], SET_NAMES.idle);
  return out;
}

/**
 * What the ISP side uses after GET /config: both sets with the server's values, defaults where a
 * parameter was absent (RFC 9132 section 4.5: "use the default where nothing was negotiated").
 */
export function negotiatedSetsFromJson(json: unknown): Record<ConfigSetName, ConfigSet> {
  const parsed = parseConfigJson(json);
  return {
    mitigating: { ...DEFAULT_CONFIG_SET, ...(parsed.mitigating?.values ?? {}) },
    idle: { ...DEFAULT_CONFIG_SET, ...(parsed.idle?.values ?? {}) },
  };
}

export interface SessionConfigOptions {
  /** heartbeat-interval the home side offers (seconds), chosen to suit on-path NAT timers. Default 30. */
  heartbeatInterval?: number;
  /** Overrides for both sets (after heartbeatInterval). */
  idle?: Partial<ConfigSet>;
  mitigating?: Partial<ConfigSet>;
  /** Range overrides, applied to both sets. */
  limits?: Partial<ConfigLimits>;
  /** Whether a peer may set heartbeat-interval 0 (disables heartbeats). Default false: Call Home needs them for NAT. */
  allowHeartbeatDisable?: boolean;
  /** Max-Age of GET /config answers, seconds. Default 3600. */
  maxAgeSeconds?: number;
}

export interface ConfigPutResult {
  /** Code.Created (2.01), Code.Changed (2.04), Code.BadRequest (4.00) or Code.UnprocessableEntity (4.22). */
  code: number;
  diagnostic?: string;
}

export interface SessionConfigEvents {
  /** The active parameter set changed (PUT, DELETE, or switching idle <-> mitigating). */
  change: [ConfigSet];
}

/**
 * The home side's session configuration: defaults, ranges, client-negotiated overrides (by sid),
 * and the automatic switch between idle-config and mitigating-config.
 */
export class SessionConfig extends EventEmitter {
  readonly maxAgeSeconds: number;
  private readonly base: Record<ConfigSetName, ConfigSet>;
  private readonly limits: Record<ConfigSetName, ConfigLimits>;
  private sets: Record<ConfigSetName, ConfigSet>;
  private currentSid: number | undefined;
  private mitigatingNow = false;
  private readonly allowHeartbeatDisable: boolean;

  constructor(opts: SessionConfigOptions = {}) {
    super();
    this.allowHeartbeatDisable = opts.allowHeartbeatDisable ?? false;
    this.maxAgeSeconds = opts.maxAgeSeconds ?? 3600;
    const hb = opts.heartbeatInterval ?? DEFAULT_CONFIG_SET.heartbeatInterval;
    if (!Number.isInteger(hb) || hb < 0 || hb > 65535) throw new RangeError(`heartbeatInterval must be an integer 0..65535, got ${hb}`);
    if (hb === 0 && !this.allowHeartbeatDisable)
      throw new RangeError("heartbeatInterval 0 disables heartbeats; set allowHeartbeatDisable to allow it");
    const limits: ConfigLimits = { ...DEFAULT_CONFIG_LIMITS };
    for (const [k, r] of Object.entries(opts.limits ?? {}) as Array<[ConfigParameter, ConfigRange]>) limits[k] = { ...r };
    const base = (over?: Partial<ConfigSet>): ConfigSet => ({ ...DEFAULT_CONFIG_SET, heartbeatInterval: hb, ...(over ?? {}) });
    this.base = { idle: base(opts.idle), mitigating: base(opts.mitigating) };
    // The configured values are always inside the advertised range (labs use short heartbeats).
    const widen = (set: ConfigSet): ConfigLimits => {
      const l: ConfigLimits = { ...limits };
      for (const p of PARAMETERS) {
        const v = set[p.key];
        if (p.key === "heartbeatInterval" && v === 0) continue;
        if (v < l[p.key].min) l[p.key] = { ...l[p.key], min: v };
        if (v > l[p.key].max) l[p.key] = { ...l[p.key], max: v };
      }
      return l;
    };
    this.limits = { idle: widen(this.base.idle), mitigating: widen(this.base.mitigating) };
    this.sets = { idle: { ...this.base.idle }, mitigating: { ...this.base.mitigating } };
  }

  /** The sid of the last accepted PUT, if any. */
  get sid(): number | undefined {
    return this.currentSid;
  }

  get mitigating(): boolean {
    return this.mitigatingNow;
  }

  /** The set in force now (mitigating-config while any mitigation is active). */
  active(): ConfigSet {
    return { ...this.sets[this.mitigatingNow ? "mitigating" : "idle"] };
  }

  set(which: ConfigSetName): ConfigSet {
    return { ...this.sets[which] };
  }

  /** Switch sets as mitigation activity changes (RFC 9132 section 4.5). */
  setMitigating(on: boolean): void {
    if (on === this.mitigatingNow) return;
    const before = this.active();
    this.mitigatingNow = on;
    if (!sameSet(before, this.active())) this.emit("change", this.active());
  }

  /** JSON view for GET /config. */
  toJson(): DotsJson {
    return buildConfigJson(this.sets, this.limits);
  }

  /** PUT /config/sid=N. `sid` is the parsed Uri-Path value. */
  put(sid: number, body: unknown): ConfigPutResult {
    if (!Number.isInteger(sid) || sid < 0 || sid > 0xffffffff) return { code: Code.BadRequest, diagnostic: "sid must be a uint32" };
    if (this.currentSid !== undefined && sid < this.currentSid) {
      return { code: Code.BadRequest, diagnostic: `sid ${sid} is lower than the current sid ${this.currentSid}` };
    }
    let parsed: Partial<Record<ConfigSetName, ParsedConfigSet>>;
    try {
      parsed = parseConfigJson(body);
    } catch (e) {
      return { code: Code.BadRequest, diagnostic: (e as Error).message };
    }
    const count =
      (parsed.mitigating ? Object.keys(parsed.mitigating.values).length : 0) + (parsed.idle ? Object.keys(parsed.idle.values).length : 0);
    if (count === 0) return { code: Code.BadRequest, diagnostic: "PUT /config must carry at least one current-value" };
    // Validate every value before changing anything.
    const next: Record<ConfigSetName, ConfigSet> = { idle: { ...this.base.idle }, mitigating: { ...this.base.mitigating } };
    for (const which of ["mitigating", "idle"] as const) {
      const values = parsed[which]?.values ?? {};
      for (const p of PARAMETERS) {
        const v = values[p.key];
        if (v === undefined) continue;
        const field = `${SET_NAMES[which]}/${p.name}`;
        const range = this.limits[which][p.key];
        if (p.key === "heartbeatInterval" && v === 0) {
          if (!this.allowHeartbeatDisable)
            return {
              code: Code.UnprocessableEntity,
              diagnostic: `${field}: 0 (disabled) is not acceptable; heartbeats keep the call-home NAT binding alive`,
            };
        } else if (v < range.min || v > range.max) {
          const fmt = (n: number): string => (p.decimal ? formatDecimal(n) : String(n));
          return { code: Code.UnprocessableEntity, diagnostic: `${field}: ${fmt(v)} is outside ${fmt(range.min)}..${fmt(range.max)}` };
        }
        next[which][p.key] = p.decimal ? Math.round(v * 100) / 100 : v;
      }
    }
    const before = this.active();
    const isNew = this.currentSid !== sid;
    this.currentSid = sid;
    this.sets = next;
    if (!sameSet(before, this.active())) this.emit("change", this.active());
    return { code: isNew ? Code.Created : Code.Changed };
  }

  /** DELETE /config[/sid=N]: back to the home side's configured defaults. */
  reset(): void {
    const before = this.active();
    this.currentSid = undefined;
    this.sets = { idle: { ...this.base.idle }, mitigating: { ...this.base.mitigating } };
    if (!sameSet(before, this.active())) this.emit("change", this.active());
  }

  override on<E extends keyof SessionConfigEvents>(event: E, listener: (...args: SessionConfigEvents[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }
}

function sameSet(a: ConfigSet, b: ConfigSet): boolean {
  return PARAMETERS.every((p) => a[p.key] === b[p.key]);
}
