// Call-home mitigation request validation (RFC 9066 section 5.3.1 on top of RFC 9132 section
// 4.4.1), used by both sides with the same rules: the ISP-side client checks what it is about to
// send, the home-side server checks what it received, so a request one side accepts the other
// accepts too. Each failure names the JSON field and a short rule id.
import { DotsCborError, encodeDotsCbor } from "../cbor";
import { ParsedPrefix, PrefixSyntaxError, nonSourceKind, parsePrefix, prefixContains } from "./prefixes";
import { ATTACK_STATUS_CODES, MITIGATION_SCOPE_KEY, SCOPE, SCOPE_ID_MEMBERS, SCOPE_REQUEST_MEMBERS } from "./vocabulary";

export { parsePrefix, prefixContains, prefixesOverlap, parseAddress, nonSourceKind, PrefixSyntaxError } from "./prefixes";
export type { ParsedPrefix, ParsePrefixOptions, IpFamily } from "./prefixes";

export interface MitigationValidationContext {
  /** "isp": the call-home client before sending; "home": the call-home server on receipt. */
  side: "home" | "isp";
  /** The home domain's prefixes; every source prefix must lie inside one of them when given. */
  homePrefixes?: string[];
  /** Accept lifetime -1 (indefinite). RFC 9132 lets a server refuse it; default false. */
  allowIndefiniteLifetime?: boolean;
}

export interface MitigationValidationFailure {
  /** JSON path of the offending member, e.g. "scope[0].ietf-dots-call-home:source-prefix[1]". */
  field: string;
  /** Short rule id, e.g. "required", "prefix-syntax", "source-special", "port-range". */
  rule: string;
  message: string;
}

export interface NumberRange {
  lower: number;
  upper: number;
}

/** What a scope names, parsed once: prefixes canonical, ranges with upper filled in. */
export interface ScopeSelectors {
  targetPrefixes: ParsedPrefix[];
  /** Empty = any. */
  targetPorts: NumberRange[];
  /** IANA protocol numbers; empty = any. */
  targetProtocols: number[];
  sourcePrefixes: ParsedPrefix[];
  /** Empty = any. */
  sourcePorts: NumberRange[];
  /** ICMP/ICMPv6 types; empty = any. */
  sourceIcmpTypes: NumberRange[];
}

/** A validated request scope, typed: what both engines, the enforcer and the nodes consume. */
export interface MitigationScope extends ScopeSelectors {
  /** Seconds, -1 indefinite. */
  lifetime: number;
  /** attack-status code (1 under-attack, 2 mitigated) of an efficacy update. */
  attackStatus?: number;
}

export type MitigationValidationResult =
  { ok: true; scope: Record<string, unknown>; typed: MitigationScope } | { ok: false; errors: MitigationValidationFailure[] };

export class MitigationValidationError extends Error {
  override readonly name = "MitigationValidationError";
  constructor(readonly errors: MitigationValidationFailure[]) {
    super(`invalid mitigation request: ${errors.map((e) => `${e.field}: ${e.message} [${e.rule}]`).join("; ")}`);
  }
}

const MS = MITIGATION_SCOPE_KEY;
const SOURCE_PREFIX = SCOPE.sourcePrefix;
const SOURCE_PORTS = SCOPE.sourcePortRange;
const SOURCE_ICMP = SCOPE.sourceIcmpTypeRange;

/** Longest list we take per field; more is refused rather than processed. */
export const MAX_LIST_ENTRIES = 256;

const REQUEST_MEMBERS = SCOPE_REQUEST_MEMBERS;
const ID_MEMBERS = SCOPE_ID_MEMBERS;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

class Collector {
  readonly errors: MitigationValidationFailure[] = [];
  add(field: string, rule: string, message: string): void {
    this.errors.push({ field, rule, message });
  }
}

/** Validates a non-empty list of prefixes; returns the parsed ones (null where invalid). */
function checkPrefixList(c: Collector, value: unknown, field: string, required: boolean): Array<ParsedPrefix | null> {
  if (value === undefined) {
    if (required) c.add(field, "required", `${field.replace(/^scope\[0\]\./, "")} is mandatory in a call-home request`);
    return [];
  }
  if (!Array.isArray(value)) {
    c.add(field, "type", "must be an array of prefix strings");
    return [];
  }
  if (value.length === 0) {
    if (required) c.add(field, "required", "must hold at least one prefix");
    return [];
  }
  if (value.length > MAX_LIST_ENTRIES) {
    c.add(field, "too-many", `${value.length} entries; at most ${MAX_LIST_ENTRIES}`);
    return [];
  }
  const seen = new Set<string>();
  return value.map((text, i) => {
    const where = `${field}[${i}]`;
    try {
      const p = parsePrefix(text as string);
      if (seen.has(p.text)) c.add(where, "duplicate", `${p.text} is listed twice`);
      seen.add(p.text);
      return p;
    } catch (e) {
      if (!(e instanceof PrefixSyntaxError)) throw e;
      const rule = e.reason === "length" ? "prefix-length" : e.reason === "host-bits" ? "prefix-host-bits" : "prefix-syntax";
      c.add(where, rule, e.message);
      return null;
    }
  });
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Port or ICMP-type ranges: lower mandatory, upper optional and >= lower, keys unique. */
function checkRanges(c: Collector, value: unknown, field: string, lowerName: string, upperName: string, max: number, what: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) return c.add(field, "type", `must be an array of {${lowerName}, ${upperName}?} objects`);
  if (value.length > MAX_LIST_ENTRIES) return c.add(field, "too-many", `${value.length} entries; at most ${MAX_LIST_ENTRIES}`);
  const lowers = new Set<number>();
  value.forEach((entry, i) => {
    const where = `${field}[${i}]`;
    if (!isObject(entry)) return c.add(where, "type", `must be an object with ${lowerName}`);
    const extra = Object.keys(entry).filter((k) => k !== lowerName && k !== upperName);
    if (extra.length) c.add(where, "unknown-field", `unknown fields: ${extra.join(", ")}`);
    const lower = entry[lowerName];
    const upper = entry[upperName];
    if (lower === undefined) return c.add(`${where}.${lowerName}`, "required", `${lowerName} is mandatory`);
    if (!isUint(lower, max))
      return c.add(`${where}.${lowerName}`, what, `${lowerName} must be an integer 0..${max}, got ${JSON.stringify(lower)}`);
    if (lowers.has(lower)) c.add(`${where}.${lowerName}`, "duplicate", `${lowerName} ${lower} is listed twice`);
    lowers.add(lower);
    if (upper === undefined) return;
    if (!isUint(upper, max))
      return c.add(`${where}.${upperName}`, what, `${upperName} must be an integer 0..${max}, got ${JSON.stringify(upper)}`);
    if (upper < lower) c.add(`${where}.${upperName}`, what, `${upperName} ${upper} is below ${lowerName} ${lower}`);
  });
}

function checkLifetime(c: Collector, value: unknown, ctx: MitigationValidationContext): void {
  const field = "scope[0].lifetime";
  if (value === undefined) return c.add(field, "required", "lifetime is mandatory (3600 is the recommended value)");
  if (typeof value !== "number" || !Number.isInteger(value))
    return c.add(field, "lifetime", `must be an integer, got ${JSON.stringify(value)}`);
  if (value === 0) return c.add(field, "lifetime", "lifetime 0 is invalid (RFC 9132 section 4.4.1)");
  if (value === -1) {
    if (!ctx.allowIndefiniteLifetime) c.add(field, "lifetime-indefinite", "indefinite lifetime (-1) is not allowed by this configuration");
    return;
  }
  if (value < 0 || value > 0xffffffff) c.add(field, "lifetime", `must be -1 or 1..4294967295, got ${value}`);
}

/** "a.b.c.d/32" of the directed broadcast address of every IPv4 home prefix that has one (/30 or shorter). */
function directedBroadcasts(homes: ParsedPrefix[]): Set<string> {
  const out = new Set<string>();
  for (const h of homes) {
    if (h.family !== "ipv4" || h.length > 30) continue;
    const bytes = h.address.toByteArray();
    for (let i = 0; i < 4; i++) bytes[i] |= 0xff >> Math.max(0, Math.min(8, h.length - i * 8));
    out.add(`${bytes.join(".")}/32`);
  }
  return out;
}

/** The checks of the module comment. Never throws for bad input. */
export function validateMitigationRequest(json: unknown, ctx: MitigationValidationContext): MitigationValidationResult {
  const c = new Collector();
  if (!isObject(json)) return { ok: false, errors: [{ field: "", rule: "type", message: "a mitigation request must be a JSON object" }] };
  const topExtra = Object.keys(json).filter((k) => k !== MS);
  if (topExtra.length) c.add("", "unknown-field", `unknown top-level fields: ${topExtra.join(", ")}`);
  const ms = json[MS];
  if (!isObject(ms)) {
    c.add(MS, "required", `"${MS}" object is mandatory`);
    return { ok: false, errors: c.errors };
  }
  const msExtra = Object.keys(ms).filter((k) => k !== "scope");
  if (msExtra.length) c.add(MS, "unknown-field", `unknown fields: ${msExtra.join(", ")}`);
  const scopes = ms.scope;
  if (!Array.isArray(scopes) || scopes.length !== 1) {
    const n = Array.isArray(scopes) ? scopes.length : 0;
    c.add("scope", "exactly-one-scope", `a mitigation request carries exactly one scope entry, got ${n}`);
    return { ok: false, errors: c.errors };
  }
  const scope = scopes[0];
  if (!isObject(scope)) {
    c.add("scope[0]", "type", "scope entry must be an object");
    return { ok: false, errors: c.errors };
  }

  const ids = Object.keys(scope).filter((k) => ID_MEMBERS.has(k));
  if (ids.length)
    c.add(`scope[0].${ids[0]}`, "no-ids-in-body", `${ids.join(", ")} belong in the Uri-Path, never in the body (RFC 9132 section 4.4.1)`);
  const unknown = Object.keys(scope).filter((k) => !REQUEST_MEMBERS.has(k) && !ID_MEMBERS.has(k));
  if (unknown.length) {
    const hint = unknown.includes("alias-name") ? " (alias-name needs the data channel, which call home does not have)" : "";
    c.add("scope[0]", "unknown-field", `unknown or response-only fields in scope: ${unknown.join(", ")}${hint}`);
  }

  let homes: ParsedPrefix[] | undefined;
  if (ctx.homePrefixes !== undefined) {
    homes = [];
    for (const [i, text] of (Array.isArray(ctx.homePrefixes) ? ctx.homePrefixes : []).entries()) {
      try {
        homes.push(parsePrefix(text, { allowBareAddress: true, allowHostBits: true })); // config may name an interface address "192.168.1.1/24"
      } catch (e) {
        if (!(e instanceof PrefixSyntaxError)) throw e;
        c.add(`context.homePrefixes[${i}]`, "prefix-syntax", e.message);
      }
    }
  }
  const homeBroadcasts = directedBroadcasts(homes ?? []);

  // target-prefix: mandatory, strict syntax, a unicast destination: no loopback, unspecified,
  // multicast or broadcast block (an attack on those is not something a per-flow filter can stop).
  const targets = checkPrefixList(c, scope["target-prefix"], "scope[0].target-prefix", true);
  targets.forEach((p, i) => {
    if (!p) return;
    const where = `scope[0].target-prefix[${i}]`;
    const kind = nonSourceKind(p);
    if (kind) c.add(where, "target-routable", `${p.text} covers ${kind} addresses, which are not a unicast target`);
    else if (homeBroadcasts.has(p.text))
      c.add(where, "target-routable", `${p.network} is the broadcast address of a home prefix, not a unicast target`);
  });

  // source-prefix: mandatory in call home, no special-purpose blocks, inside the home domain.
  const sourceField = `scope[0].${SOURCE_PREFIX}`;
  const sources = checkPrefixList(c, scope[SOURCE_PREFIX], sourceField, true);
  sources.forEach((p, i) => {
    if (!p) return;
    const where = `${sourceField}[${i}]`;
    const kind = nonSourceKind(p);
    if (kind) c.add(where, "source-special", `${p.text} covers ${kind} addresses, which are invalid sources (RFC 9066 section 5.3.1)`);
    else if (homeBroadcasts.has(p.text))
      c.add(where, "source-special", `${p.network} is the broadcast address of a home prefix, an invalid source (RFC 9066 section 5.3.1)`);
    if (homes && !homes.some((h) => prefixContains(h, p))) {
      const list = homes.map((h) => h.text).join(", ") || "none configured";
      const whose = ctx.side === "home" ? "this home's prefixes" : "the prefixes configured for this home";
      c.add(where, "source-outside-home", `${p.text} is not inside ${whose} (${list})`);
    }
  });

  checkRanges(c, scope["target-port-range"], "scope[0].target-port-range", "lower-port", "upper-port", 0xffff, "port-range");
  checkRanges(c, scope[SOURCE_PORTS], `scope[0].${SOURCE_PORTS}`, "lower-port", "upper-port", 0xffff, "port-range");
  checkRanges(c, scope[SOURCE_ICMP], `scope[0].${SOURCE_ICMP}`, "lower-type", "upper-type", 0xff, "icmp-type-range");

  const protocols = scope["target-protocol"];
  if (protocols !== undefined) {
    if (!Array.isArray(protocols)) c.add("scope[0].target-protocol", "type", "must be an array of protocol numbers");
    else if (protocols.length > MAX_LIST_ENTRIES) c.add("scope[0].target-protocol", "too-many", `at most ${MAX_LIST_ENTRIES} entries`);
    else
      protocols.forEach((p, i) => {
        if (!isUint(p, 255)) c.add(`scope[0].target-protocol[${i}]`, "protocol", `must be an integer 0..255, got ${JSON.stringify(p)}`);
      });
  }

  checkLifetime(c, scope.lifetime, ctx);

  const trigger = scope["trigger-mitigation"];
  if (trigger === false)
    c.add(
      "scope[0].trigger-mitigation",
      "trigger-mitigation",
      "trigger-mitigation false is not allowed in call home (RFC 9066 section 5.3.1)",
    );
  else if (trigger !== undefined && trigger !== true) c.add("scope[0].trigger-mitigation", "type", "must be a boolean");

  // Whatever else is typed wrong (target-fqdn, attack-detail, attack-status labels, ...) the CBOR
  // schema reports; only run it once the explicit rules pass, to avoid reporting a thing twice.
  if (c.errors.length === 0) {
    try {
      encodeDotsCbor({ [MS]: { scope: [scope] } });
    } catch (e) {
      if (!(e instanceof DotsCborError)) throw e;
      const field = e.path
        .replace(`/${MS}/scope/0`, "scope[0]")
        .replace(/\/(\d+)(?=\/|$)/g, "[$1]")
        .replace(/\//g, ".");
      c.add(field, "schema", e.message.replace(/ \(at [^)]*\)$/, ""));
    }
  }
  if (c.errors.length) return { ok: false, errors: c.errors };

  // Return the scope with canonical prefix text, so later comparisons (refresh must repeat the
  // parameters) do not depend on how an address was spelled.
  const normalised: Record<string, unknown> = { ...scope };
  normalised["target-prefix"] = targets.map((p) => p!.text);
  normalised[SOURCE_PREFIX] = sources.map((p) => p!.text);
  const typed: MitigationScope = {
    ...scopeSelectors(scope, targets as ParsedPrefix[], sources as ParsedPrefix[]),
    lifetime: scope.lifetime as number,
  };
  const attack = scope[SCOPE.attackStatus];
  if (attack !== undefined) typed.attackStatus = typeof attack === "number" ? attack : ATTACK_STATUS_CODES[String(attack)];
  return { ok: true, scope: normalised, typed };
}

function rangesOf(value: unknown, lowerName: string, upperName: string): NumberRange[] {
  if (!Array.isArray(value)) return [];
  return value.map((e: Record<string, number>) => ({ lower: e[lowerName], upper: e[upperName] ?? e[lowerName] }));
}

/**
 * The typed selectors of a scope whose members were checked (prefixes already parsed): the one
 * reader behind validateMitigationRequest and the enforcer's scopeToQuery.
 */
export function scopeSelectors(scope: Record<string, unknown>, targets: ParsedPrefix[], sources: ParsedPrefix[]): ScopeSelectors {
  const protocols = scope[SCOPE.targetProtocol];
  return {
    targetPrefixes: targets,
    targetPorts: rangesOf(scope[SCOPE.targetPortRange], "lower-port", "upper-port"),
    targetProtocols: Array.isArray(protocols) ? (protocols as number[]) : [],
    sourcePrefixes: sources,
    sourcePorts: rangesOf(scope[SOURCE_PORTS], "lower-port", "upper-port"),
    sourceIcmpTypes: rangesOf(scope[SOURCE_ICMP], "lower-type", "upper-type"),
  };
}

/** Like validateMitigationRequest, but returns the scope or throws MitigationValidationError. */
export function assertValidMitigationRequest(json: unknown, ctx: MitigationValidationContext): Record<string, unknown> {
  const result = validateMitigationRequest(json, ctx);
  if (!result.ok) throw new MitigationValidationError(result.errors);
  return result.scope;
}
