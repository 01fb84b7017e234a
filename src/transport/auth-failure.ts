// Failed (D)TLS handshakes in words. OpenSSL, node:tls, node-dtls-client and our DTLS server each
// name a wrong key differently ("bad-finished", "binder does not verify", "decrypt_error", an
// alert number); both faces show one reason code and one sentence naming the identity, and keep
// the library's text in `detail` for whoever debugs the handshake itself.
import { TransportError } from "./connection";

/** Why a handshake failed, as people and programs match on it. */
export type AuthProblem =
  /** The identity is known but the two sides hold different keys. */
  | "PSK_MISMATCH"
  /** The server has no key for the identity the client presented. */
  | "PSK_UNKNOWN_IDENTITY"
  /** The certificate is not signed by a CA the other side trusts. */
  | "CERT_UNTRUSTED"
  | "CERT_EXPIRED"
  | "CERT_NOT_YET_VALID"
  /** The server's certificate does not name the host (or servername) dialled. */
  | "CERT_NAME_MISMATCH"
  /** A certificate was required and none was presented (e.g. a PSK client at a certificate-only server). */
  | "CERT_MISSING"
  /** The server refused our certificate (it gives no more detail than that). */
  | "CERT_REFUSED"
  | "ALPN_MISMATCH"
  /** No cipher suite (or credential kind) both sides accept: e.g. PSK offered to a certificate-only server. */
  | "NO_SHARED_CIPHER";

/** The same list at run time (help texts, editor tables and tests). */
export const AUTH_PROBLEMS: readonly AuthProblem[] = [
  "PSK_MISMATCH",
  "PSK_UNKNOWN_IDENTITY",
  "CERT_UNTRUSTED",
  "CERT_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_NAME_MISMATCH",
  "CERT_MISSING",
  "CERT_REFUSED",
  "ALPN_MISMATCH",
  "NO_SHARED_CIPHER",
];

export interface AuthDiagnosis {
  problem: AuthProblem;
  /** PSK identity involved, when known. */
  identity?: string;
  /** Subject of the certificate involved, when known (e.g. "CN=home-1.example"). */
  subject?: string;
}

const CERT_UNTRUSTED =
  /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|CERT_UNTRUSTED|CERT_SIGNATURE_FAILURE|UNABLE_TO_DECRYPT_CERT_SIGNATURE|INVALID_CA|CERT_CHAIN_TOO_LONG/;

/** Certificate verification error (node's authorizationError / error code) as a problem. */
function certProblem(text: string): AuthProblem | undefined {
  if (/CERT_HAS_EXPIRED|certificate has expired/i.test(text)) return "CERT_EXPIRED";
  if (/CERT_NOT_YET_VALID|not yet valid/i.test(text)) return "CERT_NOT_YET_VALID";
  if (/ALTNAME|Hostname\/IP does not match/i.test(text)) return "CERT_NAME_MISMATCH";
  if (CERT_UNTRUSTED.test(text) || /self.signed certificate|unable to verify|unable to get (local )?issuer/i.test(text))
    return "CERT_UNTRUSTED";
  return undefined;
}

// ---------------------------------------------------------------------------------- listener

/** What the listener knew about a failed handshake. */
export interface ServerFailureFacts {
  transport: "dtls" | "tls";
  /** The technical reason: our DTLS server's reason word or the node:tls error text/code. */
  detail: string;
  /** PSK identity the client presented and we hold a key for. */
  identity?: string;
  /** PSK identity the client presented that we hold no key for. */
  unknownIdentity?: string;
  /** Subject of a client certificate that failed verification. */
  subject?: string;
}

/** Maps what the listener saw to a problem; undefined when it is not about credentials (timeouts, garbage). */
export function diagnoseServerFailure(f: ServerFailureFacts): AuthDiagnosis | undefined {
  const d = f.detail;
  const withId = (problem: AuthProblem, identity?: string): AuthDiagnosis => ({
    problem,
    ...(identity !== undefined ? { identity } : {}),
    ...(f.subject ? { subject: f.subject } : {}),
  });
  if (f.transport === "dtls") {
    if (d === "bad-finished") return withId("PSK_MISMATCH", f.identity);
    if (d === "unknown-identity") return withId("PSK_UNKNOWN_IDENTITY", f.identity ?? f.unknownIdentity);
    if (d === "no-shared-cipher") return withId("NO_SHARED_CIPHER");
    if (d === "certificate-required") return withId("CERT_MISSING");
    if (d === "certificate-untrusted") return withId("CERT_UNTRUSTED");
    if (d === "certificate-expired") return withId("CERT_EXPIRED");
    if (d === "certificate-not-yet-valid") return withId("CERT_NOT_YET_VALID");
    return undefined;
  }
  if (f.unknownIdentity !== undefined && f.identity === undefined) return withId("PSK_UNKNOWN_IDENTITY", f.unknownIdentity);
  if (/PSK_IDENTITY_NOT_FOUND|psk identity not found/i.test(d)) return withId("PSK_UNKNOWN_IDENTITY", f.unknownIdentity);
  if (f.identity !== undefined && /BINDER|binder does not verify|BAD_RECORD_MAC|DECRYPTION_FAILED|DECRYPT_ERROR|bad record mac/i.test(d))
    return withId("PSK_MISMATCH", f.identity);
  if (/ALPN|NO_APPLICATION_PROTOCOL|did not negotiate ALPN/i.test(d)) return withId("ALPN_MISMATCH", f.identity);
  const cert = certProblem(d);
  if (cert) return withId(cert);
  if (/no certificate|PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED/i.test(d)) return withId("CERT_MISSING");
  if (/NO_SHARED_CIPHER|no shared cipher|NO_SUITABLE_SIGNATURE_ALGORITHM/i.test(d)) return withId("NO_SHARED_CIPHER");
  return undefined;
}

/** One sentence for the ISP's operator. `home` is the home name the identity belongs to, if any. */
export function describeForListener(d: AuthDiagnosis, who: { address: string; home?: string }): string {
  const id = d.identity !== undefined ? JSON.stringify(d.identity) : undefined;
  const homeName = who.home ?? d.identity;
  switch (d.problem) {
    case "PSK_MISMATCH":
      return id !== undefined
        ? `home ${JSON.stringify(homeName)} presented a PSK key that does not match (identity ${d.identity}, from ${who.address})`
        : `a home at ${who.address} presented a PSK key that does not match ours`;
    case "PSK_UNKNOWN_IDENTITY":
      return id !== undefined
        ? `a home at ${who.address} presented PSK identity ${id}, which no configured home has`
        : `a home at ${who.address} presented a PSK identity no configured home has`;
    case "CERT_UNTRUSTED":
      return `a home at ${who.address} presented a certificate${d.subject ? ` (${d.subject})` : ""} not signed by a CA we trust`;
    case "CERT_EXPIRED":
      return `a home at ${who.address} presented an expired certificate${d.subject ? ` (${d.subject})` : ""}`;
    case "CERT_NOT_YET_VALID":
      return `a home at ${who.address} presented a certificate${d.subject ? ` (${d.subject})` : ""} that is not valid yet (check its clock)`;
    case "CERT_NAME_MISMATCH":
      return `a home at ${who.address} presented a certificate for another name`;
    case "CERT_MISSING":
      return `a home at ${who.address} presented no certificate (and no PSK we accept)`;
    case "CERT_REFUSED":
      return `a home at ${who.address} refused our certificate`;
    case "ALPN_MISMATCH":
      return `a client at ${who.address} did not ask for CoAP (ALPN "coap"): not a DOTS home?`;
    case "NO_SHARED_CIPHER":
      return `a client at ${who.address} offered no cipher suite or credential kind we accept (PSK to a certificate-only listener, or the reverse?)`;
  }
}

// ------------------------------------------------------------------------------------ dialer

/**
 * A dial failure rewritten in words when its cause is a credential: same code, the sentence as
 * message, the problem, and the library's text in detail. Anything else comes back unchanged.
 */
export function explainDialFailure(err: TransportError, facts: Omit<ClientFailureFacts, "detail">): TransportError {
  if (err.problem !== undefined || err.code === "CONFIG" || err.code === "CLOSED") return err;
  const d = diagnoseClientFailure({
    ...facts,
    detail: `${err.message} ${String((err as Error & { cause?: { code?: string } }).cause?.code ?? "")}`,
  });
  if (!d) return err;
  const out = new TransportError(d.problem === "ALPN_MISMATCH" ? "ALPN_MISMATCH" : "AUTH_FAILED", describeForDialer(d, facts));
  out.problem = d.problem;
  out.detail = err.message;
  (out as Error & { cause?: unknown }).cause = (err as Error & { cause?: unknown }).cause ?? err;
  return out;
}

/** What the dialer knew about a failed handshake. */
export interface ClientFailureFacts {
  transport: "dtls" | "tls";
  /** The library's error text (and code). */
  detail: string;
  /** Our PSK identity, when we dialled with a PSK. */
  identity?: string;
  /** We dialled with a certificate. */
  certificate?: boolean;
  /** The name the ISP's certificate had to carry. */
  servername?: string;
}

/** Maps what the dialer saw to a problem; undefined when it is not about credentials. */
export function diagnoseClientFailure(f: ClientFailureFacts): AuthDiagnosis | undefined {
  const d = f.detail;
  const id = f.identity !== undefined ? { identity: f.identity } : {};
  // A DTLS 1.2 server names an unknown identity (115); its handshake_failure means no shared suite.
  if (f.transport === "dtls" && /fatal alert: handshake_failure/.test(d)) return { problem: "NO_SHARED_CIPHER" };
  if (f.identity !== undefined) {
    if (/unknown_psk_identity|UNKNOWN_PSK_IDENTITY|alert number 115/i.test(d)) return { problem: "PSK_UNKNOWN_IDENTITY", ...id };
    // DTLS: our server and OpenSSL answer a wrong key with decrypt_error (or the library finds our
    // Finished unverifiable); TLS 1.2: bad_record_mac; TLS 1.3: the binder fails, illegal_parameter.
    if (
      /decrypt_error|DECRYPT_ERROR|bad_record_mac|BAD_RECORD_MAC|DECRYPTION_FAILED|alert number (20|51)\b|Finished did not verify|DTLS handshake failed/i.test(
        d,
      )
    )
      return { problem: "PSK_MISMATCH", ...id };
    if (f.transport === "tls" && /ILLEGAL_PARAMETER|alert number 47\b/i.test(d)) return { problem: "PSK_MISMATCH", ...id };
    // TLS 1.3 server without a key for the identity: it has nothing to fall back on.
    if (f.transport === "tls" && /HANDSHAKE_FAILURE|handshake_failure|alert number 40\b/i.test(d))
      return { problem: "PSK_UNKNOWN_IDENTITY", ...id };
  }
  if (/NO_APPLICATION_PROTOCOL|did not select ALPN/i.test(d)) return { problem: "ALPN_MISMATCH" };
  const cert = certProblem(d);
  if (cert) return { problem: cert };
  if (f.certificate && /UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_REQUIRED|ACCESS_DENIED|certificate refused/i.test(d))
    return { problem: "CERT_REFUSED" };
  if (/HANDSHAKE_FAILURE|NO_SHARED_CIPHER/i.test(d)) return { problem: "NO_SHARED_CIPHER" };
  return undefined;
}

/** One sentence for the home's owner. */
export function describeForDialer(d: AuthDiagnosis, ctx: { servername?: string } = {}): string {
  const id = JSON.stringify(d.identity ?? "");
  switch (d.problem) {
    case "PSK_MISMATCH":
      return `the PSK key for identity ${id} does not match the ISP's`;
    case "PSK_UNKNOWN_IDENTITY":
      return `the ISP does not know PSK identity ${id} (check the identity, or ask the ISP to add it)`;
    case "CERT_UNTRUSTED":
      return `the ISP's certificate is not signed by the CA configured here`;
    case "CERT_EXPIRED":
      return `the ISP's certificate has expired`;
    case "CERT_NOT_YET_VALID":
      return `the ISP's certificate is not valid yet (check this router's clock)`;
    case "CERT_NAME_MISMATCH":
      return `the ISP's certificate does not name ${ctx.servername ? JSON.stringify(ctx.servername) : "the host dialled"} (set the server name it carries)`;
    case "CERT_MISSING":
      return `the ISP wants a certificate from this home`;
    case "CERT_REFUSED":
      return `the ISP refused this home's certificate (not signed by a CA it trusts, expired, or not registered there)`;
    case "ALPN_MISMATCH":
      return `the server did not agree to CoAP (ALPN "coap"): is it a DOTS Call Home listener?`;
    case "NO_SHARED_CIPHER":
      return `the ISP accepts none of the cipher suites or credential kinds offered (PSK to a certificate-only listener, or the reverse?)`;
  }
}
