// Turns a mitigation scope in the DOTS JSON view (RFC 9132 / RFC 9066 YANG names) into the
// query the NAT lookup and the filter work with. Syntax was checked by the DOTS validator; this
// re-checks what enforcement relies on, so a bad scope can never become a half-made rule.
import { scopeSelectors, type NumberRange, type ScopeSelectors } from "../dots/validation";
import { CALL_HOME_MODULE as CH, MITIGATION_SCOPE_KEY, SCOPE } from "../dots/vocabulary";
import { parsePrefixText, type ParsedPrefix } from "./address";
import { InvalidScopeError } from "./errors";

export type { NumberRange };

/**
 * The scope's selectors as the NAT lookup and the filter use them (the typed scope of
 * src/dots/validation.ts). sourcePrefixes: the public (post-NAT) source of the attack, the
 * router's WAN address(es) or the device itself (IPv6); sourcePorts are after NAT.
 */
export type NatQuery = ScopeSelectors;
const MAX_LIST = 64;

function field(scope: Record<string, unknown>, name: string, moduleQualified: boolean): unknown {
  if (moduleQualified) return scope[CH + name] ?? scope[name];
  return scope[name];
}

function list(value: unknown, name: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new InvalidScopeError(name, "must be a list");
  if (value.length > MAX_LIST) throw new InvalidScopeError(name, `more than ${MAX_LIST} entries`);
  return value;
}

function prefixes(value: unknown, name: string): ParsedPrefix[] {
  return list(value, name).map((v, i) => {
    const p = typeof v === "string" ? parsePrefixText(v) : undefined;
    if (!p) throw new InvalidScopeError(`${name}[${i}]`, `not an IP prefix: ${JSON.stringify(v)}`);
    return p;
  });
}

function ranges(value: unknown, name: string, lowerKey: string, upperKey: string, max: number): NumberRange[] {
  return list(value, name).map((v, i) => {
    if (typeof v !== "object" || v === null) throw new InvalidScopeError(`${name}[${i}]`, "must be an object");
    const o = v as Record<string, unknown>;
    const lower = o[lowerKey];
    const upper = o[upperKey] ?? lower;
    if (!isInt(lower, max)) throw new InvalidScopeError(`${name}[${i}].${lowerKey}`, `must be an integer 0..${max}`);
    if (!isInt(upper, max)) throw new InvalidScopeError(`${name}[${i}].${upperKey}`, `must be an integer 0..${max}`);
    if ((upper as number) < (lower as number)) throw new InvalidScopeError(`${name}[${i}]`, `${upperKey} is below ${lowerKey}`);
    return { lower: lower as number, upper: upper as number };
  });
}

function isInt(v: unknown, max: number): boolean {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Accepts one scope entry, or a whole mitigation-scope body with exactly one entry. */
export function unwrapScope(input: unknown): Record<string, unknown> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new InvalidScopeError("scope", "must be an object");
  }
  const o = input as Record<string, unknown>;
  const ms = (o[MITIGATION_SCOPE_KEY] ?? o["mitigation-scope"]) as Record<string, unknown> | undefined;
  if (ms && typeof ms === "object") {
    const entries = ms.scope;
    if (!Array.isArray(entries) || entries.length !== 1)
      throw new InvalidScopeError("mitigation-scope/scope", "must hold exactly one entry");
    return unwrapScope(entries[0]);
  }
  return o;
}

export function scopeToQuery(input: unknown): NatQuery {
  const raw = unwrapScope(input);
  // Hand-written flows may use the call-home names without their module prefix.
  const scope: Record<string, unknown> = { ...raw };
  for (const name of [SCOPE.sourcePrefix, SCOPE.sourcePortRange, SCOPE.sourceIcmpTypeRange]) {
    scope[name] = field(raw, name.slice(CH.length), true);
  }
  // Re-checked here because a flow can hand in a scope no validator saw; the typed result comes
  // from the one reader in src/dots/validation.ts.
  const sourcePrefixes = prefixes(scope[SCOPE.sourcePrefix], "source-prefix");
  ranges(scope[SCOPE.sourcePortRange], "source-port-range", "lower-port", "upper-port", 65535);
  ranges(scope[SCOPE.sourceIcmpTypeRange], "source-icmp-type-range", "lower-type", "upper-type", 255);
  const targetPrefixes = prefixes(scope[SCOPE.targetPrefix], "target-prefix");
  ranges(scope[SCOPE.targetPortRange], "target-port-range", "lower-port", "upper-port", 65535);
  list(scope[SCOPE.targetProtocol], "target-protocol").forEach((v, i) => {
    if (!isInt(v, 255)) throw new InvalidScopeError(`target-protocol[${i}]`, "must be an integer 0..255");
  });
  if (sourcePrefixes.length === 0) throw new InvalidScopeError("source-prefix", "is mandatory in Call Home (RFC 9066 section 5.3.1)");
  if (targetPrefixes.length === 0) throw new InvalidScopeError("target-prefix", "is mandatory in Call Home (RFC 9066 section 5.3.1)");
  return scopeSelectors(scope, targetPrefixes, sourcePrefixes);
}

/** Lifetime in seconds: a positive integer or -1 (indefinite). */
export function checkLifetime(lifetime: unknown): number {
  if (lifetime === -1) return -1;
  if (typeof lifetime !== "number" || !Number.isInteger(lifetime) || lifetime <= 0 || lifetime > 0xffffffff) {
    throw new InvalidScopeError("lifetime", "must be a positive integer number of seconds or -1");
  }
  return lifetime;
}

export function inRanges(value: number | undefined, rs: NumberRange[]): boolean {
  if (rs.length === 0) return true;
  if (value === undefined) return false;
  for (const r of rs) if (value >= r.lower && value <= r.upper) return true;
  return false;
}
