// Why the home cannot reach its ISP, in words, for the dialer's `disconnected` event. A wrong
// credential is named (PSK_MISMATCH, CERT_EXPIRED, ...). Handshakes that only ever time out or are
// cut off, again and again, look from here exactly like the ISP's drop-list (RFC 9066 section 8)
// ignoring this address after earlier failures: say so, as a hint, since the home cannot know.
import { TransportError } from "../transport/connection";
import type { AuthProblem } from "../transport/auth-failure";
import { HappyEyeballsError } from "./dialer-connect";

/** Consecutive silent connect rounds after which the ban hint is given. */
export const BAN_HINT_AFTER_ROUNDS = 2;

export interface ConnectFailureReport {
  /** One line: what went wrong, in words. */
  reason: string;
  /** PSK_MISMATCH, CERT_UNTRUSTED, ... or HANDSHAKE_TIMEOUT / CONNECT_FAILED / HANDSHAKE_FAILED. */
  code?: string;
  /** A likely cause the home cannot confirm (the ISP's drop-list). */
  hint?: string;
  /** The libraries' own words for every attempt. */
  detail?: string;
}

function attemptsOf(e: unknown): Error[] {
  if (e instanceof HappyEyeballsError) return e.failures.map((f) => f.error);
  return e instanceof Error ? [e] : [new Error(String(e))];
}

/** A handshake that got no answer, or was cut off before any alert: what a banned address sees. */
function silent(e: Error): boolean {
  if (!(e instanceof TransportError)) return false;
  if (e.code === "HANDSHAKE_TIMEOUT") return true;
  return (
    e.code === "HANDSHAKE_FAILED" && /closed during the (D)?TLS handshake|ECONNRESET|socket disconnected|socket closed/i.test(e.message)
  );
}

export class ConnectFailureTracker {
  private silentRounds = 0;
  private lastCredentialProblem: { code: AuthProblem; reason: string } | undefined;

  /** Call when a session is up again. */
  succeeded(): void {
    this.silentRounds = 0;
    this.lastCredentialProblem = undefined;
  }

  /** Describes one failed connect round (all candidates failed). */
  failed(e: unknown): ConnectFailureReport {
    const errors = attemptsOf(e);
    const detail = (e as Error)?.message ?? String(e);
    const credential = errors.find((x): x is TransportError => x instanceof TransportError && x.problem !== undefined);
    if (credential?.problem) {
      this.silentRounds = 0;
      this.lastCredentialProblem = { code: credential.problem, reason: credential.message };
      return { reason: `connect failed: ${credential.message}`, code: credential.problem, detail };
    }
    if (errors.length > 0 && errors.every(silent)) {
      this.silentRounds++;
      const out: ConnectFailureReport = {
        reason: `connect failed: no handshake completed (${errors.length === 1 ? "the attempt timed out or was cut off" : `all ${errors.length} attempts timed out or were cut off`})`,
        code: "HANDSHAKE_TIMEOUT",
        detail,
      };
      if (this.silentRounds >= BAN_HINT_AFTER_ROUNDS) {
        const earlier = this.lastCredentialProblem
          ? ` Earlier attempts failed with ${this.lastCredentialProblem.code} (${this.lastCredentialProblem.reason}).`
          : "";
        out.hint = `the ISP may have banned this address after failed handshakes (its drop-list ignores an address for some minutes, 300 s by default); fix the credentials if they were wrong, then the first attempt after the ban gets through.${earlier}`;
      }
      return out;
    }
    this.silentRounds = 0;
    const code = errors.find((x): x is TransportError => x instanceof TransportError)?.code;
    return { reason: `connect failed: ${detail}`, ...(code ? { code } : {}), detail };
  }
}
