// Strict IP prefix handling for DOTS (inet:ip-prefix, RFC 6991): the text must be an address, a
// slash and a decimal length, with no octal/short IPv4 forms ("010.1.1.1", "1.2.3"), no IPv6
// zone index and no host bits beyond the length. ipaddr.js does the arithmetic.
import * as ipaddr from "ipaddr.js";

export type IpFamily = "ipv4" | "ipv6";

export interface ParsedPrefix {
  readonly family: IpFamily;
  /** The network address (equal to the written address: host bits are refused). */
  readonly address: ipaddr.IPv4 | ipaddr.IPv6;
  readonly length: number;
  /** The network address as canonical text (dotted decimal, or RFC 5952). */
  readonly network: string;
  /** Canonical text: dotted decimal, or RFC 5952 for IPv6, plus "/length". */
  readonly text: string;
}

/** Why a prefix text was refused; `reason` is a short rule name. */
export class PrefixSyntaxError extends Error {
  override readonly name = "PrefixSyntaxError";
  constructor(
    readonly reason: "syntax" | "length" | "host-bits",
    message: string,
  ) {
    super(message);
  }
}

export interface ParsePrefixOptions {
  /** Accept "192.0.2.7/24" and return 192.0.2.0/24 instead of refusing it. Default false. */
  allowHostBits?: boolean;
  /** Accept a bare address as a host prefix (/32 or /128). Default false. */
  allowBareAddress?: boolean;
}

const DECIMAL_LENGTH = /^(0|[1-9][0-9]{0,2})$/;
const EMBEDDED_IPV4 = /^(.*:)([^:]*\.[^:]*)$/;

function parseIPv6Strict(text: string): ipaddr.IPv6 | null {
  if (text.includes("%")) return null; // zone indexes are not part of inet:ip-prefix
  let hexOnly = text;
  const embedded = EMBEDDED_IPV4.exec(text);
  if (embedded) {
    // ipaddr.js reads "::1.2.3.4" as "::ffff:1.2.3.4" and accepts octal quads, so the dotted
    // part is checked and turned into two hex groups here.
    if (!ipaddr.IPv4.isValidFourPartDecimal(embedded[2])) return null;
    const [a, b, c, d] = ipaddr.IPv4.parse(embedded[2]).octets;
    hexOnly = `${embedded[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  if (!/^[0-9A-Fa-f:]+$/.test(hexOnly) || !ipaddr.IPv6.isValid(hexOnly)) return null;
  return ipaddr.IPv6.parse(hexOnly);
}

/** Parses one address strictly (no prefix length); null when it is not a valid address. */
export function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  if (typeof text !== "string") return null;
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (text.includes(":")) return parseIPv6Strict(text);
  return null;
}

function canonical(address: ipaddr.IPv4 | ipaddr.IPv6): string {
  return address.kind() === "ipv4" ? address.toString() : (address as ipaddr.IPv6).toRFC5952String();
}

/** Network address of `address`/`length`. */
function networkOf(address: ipaddr.IPv4 | ipaddr.IPv6, length: number): ipaddr.IPv4 | ipaddr.IPv6 {
  const bytes = address.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, length - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes);
}

/** Strict inet:ip-prefix parser. Throws PrefixSyntaxError. */
export function parsePrefix(text: string, opts: ParsePrefixOptions = {}): ParsedPrefix {
  if (typeof text !== "string") throw new PrefixSyntaxError("syntax", `prefix must be a string, got ${typeof text}`);
  const slash = text.indexOf("/");
  let addressText = text;
  let lengthText: string | undefined;
  if (slash >= 0) {
    addressText = text.slice(0, slash);
    lengthText = text.slice(slash + 1);
  } else if (!opts.allowBareAddress) {
    throw new PrefixSyntaxError("syntax", `"${text}" is not a prefix: expected address/length`);
  }
  const address = parseAddress(addressText);
  if (!address) throw new PrefixSyntaxError("syntax", `"${addressText}" is not a valid IPv4 (four-part decimal) or IPv6 address`);
  const max = address.kind() === "ipv4" ? 32 : 128;
  let length = max;
  if (lengthText !== undefined) {
    if (!DECIMAL_LENGTH.test(lengthText)) throw new PrefixSyntaxError("syntax", `"${text}": prefix length must be a decimal number`);
    length = Number(lengthText);
    if (length > max) throw new PrefixSyntaxError("length", `"${text}": prefix length ${length} exceeds ${max}`);
  }
  const network = networkOf(address, length);
  if (network.toString() !== address.toString() && !opts.allowHostBits) {
    throw new PrefixSyntaxError("host-bits", `"${text}" has host bits set; did you mean ${canonical(network)}/${length}?`);
  }
  return {
    family: network.kind() as IpFamily,
    address: network,
    length,
    network: canonical(network),
    text: `${canonical(network)}/${length}`,
  };
}

function asPrefix(p: string | ParsedPrefix): ParsedPrefix {
  return typeof p === "string" ? parsePrefix(p, { allowHostBits: true, allowBareAddress: true }) : p;
}

/**
 * True when every address of `inner` lies in `outer` (same family only). Strings are parsed
 * leniently here (bare addresses and host bits allowed), so an address can be tested directly.
 */
export function prefixContains(outer: string | ParsedPrefix, inner: string | ParsedPrefix): boolean {
  const o = asPrefix(outer);
  const i = asPrefix(inner);
  if (o.family !== i.family || i.length < o.length) return false;
  return (i.address as ipaddr.IPv4).match(o.address as ipaddr.IPv4, o.length);
}

/** True when the two prefixes share at least one address. */
export function prefixesOverlap(a: string | ParsedPrefix, b: string | ParsedPrefix): boolean {
  return prefixContains(a, b) || prefixContains(b, a);
}

const V4_SPECIAL: ReadonlyArray<readonly [string, string]> = [
  ["0.0.0.0/8", "unspecified"],
  ["127.0.0.0/8", "loopback"],
  ["224.0.0.0/4", "multicast"],
  ["255.255.255.255/32", "broadcast"],
];
const V6_SPECIAL: ReadonlyArray<readonly [string, string]> = [
  ["::/128", "unspecified"],
  ["::1/128", "loopback"],
  ["ff00::/8", "multicast"],
];
const V4_SPECIAL_PARSED = V4_SPECIAL.map(([p, what]) => [parsePrefix(p), what] as const);
const V6_SPECIAL_PARSED = V6_SPECIAL.map(([p, what]) => [parsePrefix(p), what] as const);
const V4_MAPPED = parsePrefix("::ffff:0:0/96");

/**
 * The kind of invalid source this prefix covers (RFC 9066 section 5.3.1: broadcast, loopback,
 * multicast; unspecified added), or null. A prefix counts when it overlaps such a block, so
 * 0.0.0.0/0 or 192.0.0.0/2 are caught too; IPv4-mapped IPv6 prefixes are checked as IPv4.
 */
export function nonSourceKind(prefix: string | ParsedPrefix): string | null {
  const p = asPrefix(prefix);
  if (p.family === "ipv4") {
    for (const [block, what] of V4_SPECIAL_PARSED) if (prefixesOverlap(block, p)) return what;
    return null;
  }
  for (const [block, what] of V6_SPECIAL_PARSED) if (prefixesOverlap(block, p)) return what;
  if (prefixContains(V4_MAPPED, p)) {
    const v4 = (p.address as ipaddr.IPv6).toIPv4Address();
    return nonSourceKind({ family: "ipv4", address: v4, length: p.length - 96, network: v4.toString(), text: `${v4}/${p.length - 96}` });
  }
  if (prefixContains(p, V4_MAPPED)) return "unspecified"; // covers all of ::ffff:0:0/96 (and so mapped loopback etc.)
  return null;
}
