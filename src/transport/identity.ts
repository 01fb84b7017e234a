// Peer and local identities as the DOTS layer needs them: the PSK identity, or the certificate's
// subject, DER SubjectPublicKeyInfo (the cuid source, RFC 9132 section 4.4.1.1) and DER.

import { X509Certificate } from "node:crypto";
import type { LocalIdentity, PeerIdentity } from "./connection";
import { TransportError } from "./connection";

/** "CN=home-1.example, O=Example" from X509Certificate.subject's one-RDN-per-line form. */
export function formatSubject(subject: string): string {
  return subject
    .split("\n")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .join(", ");
}

/** Identity of a peer that authenticated with this leaf certificate (DER). */
export function certificatePeerIdentity(der: Buffer): PeerIdentity {
  return certificatePeerIdentityOf(new X509Certificate(der), der);
}

/** The same from an already parsed certificate (parsing costs about 0.1 ms). */
export function certificatePeerIdentityOf(x509: X509Certificate, der: Buffer): PeerIdentity {
  return {
    method: "certificate",
    subject: formatSubject(x509.subject),
    spki: x509.publicKey.export({ type: "spki", format: "der" }),
    certificate: Buffer.from(der),
  };
}

/** Identity of a peer that authenticated with this PSK identity. */
export function pskPeerIdentity(identity: string): PeerIdentity {
  return { method: "psk", pskIdentity: identity };
}

/** This side's identity when it presents the first certificate of a PEM chain. */
export function certificateLocalIdentity(certPem: string | Buffer): LocalIdentity {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(certPem);
  } catch (e) {
    throw new TransportError("CONFIG", `certificate does not parse: ${(e as Error).message}`);
  }
  return { method: "certificate", spki: x509.publicKey.export({ type: "spki", format: "der" }) };
}

export function pskLocalIdentity(identity: string): LocalIdentity {
  return { method: "psk", pskIdentity: identity };
}
