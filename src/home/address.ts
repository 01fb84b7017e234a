// Address and prefix helpers over ipaddr.js, strict about textual forms: nft resolves anything
// that is not an address as a host name, so nothing reaches a script without passing here.
import * as ipaddr from "ipaddr.js";

export type Family = 4 | 6;

export interface ParsedPrefix {
  family: Family;
  /** Network address in canonical text (IPv6 per RFC 5952). */
  network: string;
  length: number;
  /** "network/length" */
  text: string;
  /** Network address bytes, for containment checks. */
  bytes: number[];
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Canonical text of an IP address, or undefined when it is not a plain IPv4/IPv6 literal. */
export function canonicalAddress(text: string): { family: Family; address: string } | undefined {
  if (typeof text !== "string" || text.length === 0 || text.length > 64) return undefined;
  if (text.includes(":")) {
    if (!ipaddr.IPv6.isValid(text) || text.includes("%")) return undefined;
    const a = ipaddr.IPv6.parse(text);
    if (a.isIPv4MappedAddress()) return { family: 4, address: a.toIPv4Address().toString() };
    return { family: 6, address: a.toRFC5952String() };
  }
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  return { family: 4, address: ipaddr.IPv4.parse(text).toString() };
}

/** Parses "addr/len" (a bare address counts as a host prefix); undefined when invalid. */
export function parsePrefixText(text: string): ParsedPrefix | undefined {
  if (typeof text !== "string") return undefined;
  const slash = text.indexOf("/");
  const addrPart = slash >= 0 ? text.slice(0, slash) : text;
  const a = canonicalAddress(addrPart);
  if (!a) return undefined;
  const max = a.family === 4 ? 32 : 128;
  let length = max;
  if (slash >= 0) {
    const lenText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText)) return undefined;
    length = Number(lenText);
    if (length > max) return undefined;
  }
  const bytes = ipaddr.parse(a.address).toByteArray();
  maskBytes(bytes, length);
  const netAddr = ipaddr.fromByteArray(bytes);
  const network = netAddr.kind() === "ipv6" ? (netAddr as ipaddr.IPv6).toRFC5952String() : netAddr.toString();
  return { family: a.family, network, length, text: `${network}/${length}`, bytes };
}

function maskBytes(bytes: number[], length: number): void {
  for (let i = 0; i < bytes.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, length - i * 8));
    bytes[i] &= bitsHere === 0 ? 0 : (0xff << (8 - bitsHere)) & 0xff;
  }
}

export function isHostPrefix(p: ParsedPrefix): boolean {
  return p.length === (p.family === 4 ? 32 : 128);
}

/** True when the canonical address lies inside the prefix. */
export function prefixContains(p: ParsedPrefix, address: string): boolean {
  if (isHostPrefix(p)) return p.network === address;
  const fam: Family = address.includes(":") ? 6 : 4;
  if (fam !== p.family) return false;
  let bytes: number[];
  try {
    bytes = ipaddr.parse(address).toByteArray();
  } catch {
    return false;
  }
  let bits = p.length;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== p.bytes[i]) return false;
  }
  return true;
}

/** Lower-case colon form of a MAC address, or undefined. */
export function canonicalMac(text: string): string | undefined {
  if (typeof text !== "string") return undefined;
  const m = text.trim().toLowerCase();
  return MAC_RE.test(m) ? m : undefined;
}
