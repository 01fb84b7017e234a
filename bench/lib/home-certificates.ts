// Client certificates for many homes, each its own P-256 key and X.509 v3 certificate (CN and SAN
// DNS home-<i>.example, clientAuth, digitalSignature, not a CA) signed by the test CA of
// test/support/certs.ts, written to a temporary folder removed when the process exits.
// Made with node:crypto and a few lines of DER rather than the openssl CLI: openssl costs about
// 25 ms of process start-up per certificate (some 25 s for 1,000 homes on two cores), this well
// under 1 ms.
import { X509Certificate, createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { TestPki } from "../../test/support/certs";

export interface HomeCertificate {
  /** home-<i>: the name in CN and SAN (with .example). */
  readonly name: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/** Serials above those certs.ts gives (1, 2, ...), so no two certificates of the CA share one. */
const FIRST_SERIAL = 100000;
const VALID_DAYS = 30;

// DER (X.690) encoding of the few types a certificate needs.
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}
const sequence = (...c: Buffer[]): Buffer => der(0x30, ...c);
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const bytes = [40 * a + b];
  for (const arc of rest) {
    const groups = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) groups.unshift((v & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return der(0x06, Buffer.from(bytes));
}
function integer(value: number): Buffer {
  let hex = value.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  const bytes = Buffer.from(hex, "hex");
  // A set top bit would read as negative.
  return der(0x02, bytes[0] & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}
/** UTCTime (RFC 5280 4.1.2.5.1: dates before 2050), YYMMDDHHMMSSZ. */
function utcTime(d: Date): Buffer {
  const iso = d.toISOString(); // 2026-12-05T09:19:16.000Z
  const text = iso.slice(2, 4) + iso.slice(5, 7) + iso.slice(8, 10) + iso.slice(11, 13) + iso.slice(14, 16) + iso.slice(17, 19) + "Z";
  return der(0x17, Buffer.from(text, "latin1"));
}
function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [der(0x01, Buffer.from([0xff]))] : []), der(0x04, value));
}

/** The raw subject Name of a certificate (DER walk: Certificate, TBSCertificate, its sixth field). */
function subjectOf(certDer: Buffer): Buffer {
  // [start of value, end] of the TLV at `at`.
  const tlv = (at: number): { start: number; end: number } => {
    let len = certDer[at + 1];
    let start = at + 2;
    if (len & 0x80) {
      const count = len & 0x7f;
      len = 0;
      for (let i = 0; i < count; i++) len = (len << 8) | certDer[start + i];
      start += count;
    }
    return { start, end: start + len };
  };
  const tbs = tlv(tlv(0).start);
  let at = tbs.start;
  if (certDer[at] === 0xa0) at = tlv(at).end; // version
  for (let field = 0; field < 4; field++) at = tlv(at).end; // serial, signature, issuer, validity
  return certDer.subarray(at, tlv(at).end);
}

const ECDSA_WITH_SHA256 = sequence(oid("1.2.840.10045.4.3.2"));

/** `count` home certificates (home-0 .. home-<count-1>): their files, and the time taken. */
export function makeHomeCertificates(pki: TestPki, count: number): { homes: HomeCertificate[]; ms: number } {
  const t0 = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-homes-"));
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  const ca = new X509Certificate(pki.ca.cert);
  const caKey = createPrivateKey(pki.ca.key);
  const issuer = subjectOf(ca.raw);
  // An hour of slack for clocks, but not before the CA itself.
  const notBefore = new Date(Math.max(Date.now() - 3600_000, Date.parse(ca.validFrom)));
  const validity = sequence(utcTime(notBefore), utcTime(new Date(notBefore.getTime() + VALID_DAYS * 86400_000)));
  const extensions = (dnsName: string): Buffer =>
    der(
      0xa3,
      sequence(
        extension("2.5.29.19", true, sequence()), // basicConstraints: CA FALSE
        extension("2.5.29.15", true, der(0x03, Buffer.from([0x07, 0x80]))), // keyUsage: digitalSignature
        extension("2.5.29.37", false, sequence(oid("1.3.6.1.5.5.7.3.2"))), // extKeyUsage: clientAuth
        extension("2.5.29.17", false, sequence(der(0x82, Buffer.from(dnsName, "latin1")))), // subjectAltName: dNSName
      ),
    );
  const homes: HomeCertificate[] = [];
  for (let i = 0; i < count; i++) {
    const name = `home-${i}`;
    const dnsName = `${name}.example`;
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const subject = sequence(der(0x31, sequence(oid("2.5.4.3"), der(0x0c, Buffer.from(dnsName, "utf8")))));
    const tbs = sequence(
      der(0xa0, integer(2)), // v3
      integer(FIRST_SERIAL + i),
      ECDSA_WITH_SHA256,
      issuer,
      validity,
      subject,
      publicKey.export({ type: "spki", format: "der" }),
      extensions(dnsName),
    );
    const signature = sign("sha256", tbs, caKey); // DER ECDSA-Sig-Value, as X.509 wants it
    const cert = sequence(tbs, ECDSA_WITH_SHA256, der(0x03, Buffer.from([0]), signature));
    const pem = `-----BEGIN CERTIFICATE-----\n${cert
      .toString("base64")
      .replace(/.{64}/g, "$&\n")
      .replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
    if (i === 0 && !new X509Certificate(pem).verify(ca.publicKey)) throw new Error("home certificate does not verify with the CA key");
    const certPath = path.join(dir, `${name}.crt`);
    const keyPath = path.join(dir, `${name}.key`);
    fs.writeFileSync(certPath, pem);
    fs.writeFileSync(keyPath, privateKey.export({ type: "pkcs8", format: "pem" }));
    homes.push({ name, certPath, keyPath });
  }
  return { homes, ms: Date.now() - t0 };
}
