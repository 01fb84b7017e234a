// Address and prefix helpers over ipaddr.js, strict about textual forms: nft resolves anything
// that is not an address as a host name, so nothing reaches a script without passing here.
import * as ipaddr from "ipaddr.js";
import { type ParsedPrefix, PrefixSyntaxError, parseAddress, parsePrefix } from "../dots/prefixes";

export type Family = 4 | 6;

/** The one prefix type of the project (src/dots/prefixes.ts). */
export type { ParsedPrefix };

/** Address family as the kernel tools number it. */
export function familyOf(p: ParsedPrefix): Family {
  return p.family === "ipv4" ? 4 : 6;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Canonical text of an IP address, or undefined when it is not a plain IPv4/IPv6 literal. */
export function canonicalAddress(text: string): { family: Family; address: string } | undefined {
  if (typeof text !== "string" || text.length === 0 || text.length > 64) return undefined;
  const a = parseAddress(text);
  if (!a) return undefined;
  if (a.kind() === "ipv4") return { family: 4, address: a.toString() };
  const v6 = a as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return { family: 4, address: v6.toIPv4Address().toString() };
  return { family: 6, address: v6.toRFC5952String() };
}

/** Parses "addr/len" (a bare address counts as a host prefix, host bits are cleared); undefined when invalid. */
export function parsePrefixText(text: string): ParsedPrefix | undefined {
  try {
    const p = parsePrefix(text, { allowBareAddress: true, allowHostBits: true });
    // An IPv4-mapped IPv6 prefix names IPv4 addresses: match it as IPv4, like canonicalAddress does.
    if (p.family === "ipv6" && p.length >= 96 && (p.address as ipaddr.IPv6).isIPv4MappedAddress()) {
      return parsePrefix(`${(p.address as ipaddr.IPv6).toIPv4Address().toString()}/${p.length - 96}`);
    }
    return p;
  } catch (e) {
    if (e instanceof PrefixSyntaxError) return undefined;
    throw e;
  }
}

export function isHostPrefix(p: ParsedPrefix): boolean {
  return p.length === (p.family === "ipv4" ? 32 : 128);
}

/** True when the canonical address lies inside the prefix. */
export function prefixContains(p: ParsedPrefix, address: string): boolean {
  if (isHostPrefix(p)) return p.network === address;
  const a = parseAddress(address);
  if (!a || a.kind() !== p.family) return false;
  return a.match(p.address as ipaddr.IPv4, p.length);
}

/** Lower-case colon form of a MAC address, or undefined. */
export function canonicalMac(text: string): string | undefined {
  if (typeof text !== "string") return undefined;
  const m = text.trim().toLowerCase();
  return MAC_RE.test(m) ? m : undefined;
}
