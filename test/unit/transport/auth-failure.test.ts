// The words for failed handshakes: what each library says maps to one problem code and sentence.
import { strict as assert } from "node:assert";
import {
  diagnoseClientFailure,
  diagnoseServerFailure,
  describeForDialer,
  describeForListener,
  explainDialFailure,
} from "../../../src/transport/auth-failure";
import { TransportError } from "../../../src/transport/connection";
import { ConnectFailureTracker } from "../../../src/dots/connect-diagnosis";
import { HappyEyeballsError } from "../../../src/dots/dialer-connect";
import { authFailureEvent, clipIdentity } from "../../../src/dots/auth-events";

describe("transport/auth-failure: the libraries' words to one problem", () => {
  it("the listener's view: our DTLS server's reasons and node:tls errors (as seen on loopback)", () => {
    const cases: Array<[Parameters<typeof diagnoseServerFailure>[0], string | undefined]> = [
      [{ transport: "dtls", detail: "bad-finished", identity: "home-1" }, "PSK_MISMATCH"],
      [{ transport: "dtls", detail: "unknown-identity", identity: "x" }, "PSK_UNKNOWN_IDENTITY"],
      [{ transport: "dtls", detail: "timeout" }, undefined],
      [{ transport: "dtls", detail: "decode-error" }, undefined],
      [{ transport: "tls", detail: "...:binder does not verify:... (ERR_SSL_BINDER_DOES_NOT_VERIFY)", identity: "home-1" }, "PSK_MISMATCH"],
      [
        {
          transport: "tls",
          detail: "...decryption failed or bad record mac... (ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)",
          identity: "home-1",
        },
        "PSK_MISMATCH",
      ],
      [
        { transport: "tls", detail: "...psk identity not found... (ERR_SSL_PSK_IDENTITY_NOT_FOUND)", unknownIdentity: "x" },
        "PSK_UNKNOWN_IDENTITY",
      ],
      [
        { transport: "tls", detail: "no suitable signature algorithm (ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM)", unknownIdentity: "x" },
        "PSK_UNKNOWN_IDENTITY",
      ],
      [{ transport: "tls", detail: "client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE" }, "CERT_UNTRUSTED"],
      [{ transport: "tls", detail: "client certificate refused: CERT_HAS_EXPIRED" }, "CERT_EXPIRED"],
      [{ transport: "tls", detail: "client not authenticated: no certificate" }, "CERT_MISSING"],
      [{ transport: "tls", detail: 'client did not negotiate ALPN "coap"' }, "ALPN_MISMATCH"],
      [{ transport: "tls", detail: "no shared cipher (ERR_SSL_NO_SHARED_CIPHER)" }, "NO_SHARED_CIPHER"],
      [{ transport: "tls", detail: "socket hang up (ECONNRESET)" }, undefined],
    ];
    for (const [facts, problem] of cases) assert.equal(diagnoseServerFailure(facts)?.problem, problem, facts.detail);
    assert.equal(
      describeForListener({ problem: "PSK_MISMATCH", identity: "home-1" }, { address: "192.0.2.1", home: "home-1" }),
      'home "home-1" presented a PSK key that does not match (identity home-1, from 192.0.2.1)',
    );
  });

  it("the dialer's view: alerts from our server, OpenSSL and node:tls; certificate checks", () => {
    const cases: Array<[Parameters<typeof diagnoseClientFailure>[0], string | undefined]> = [
      [{ transport: "dtls", detail: "received fatal alert: decrypt_error", identity: "home-1" }, "PSK_MISMATCH"],
      [{ transport: "dtls", detail: "received fatal alert: unknown_psk_identity", identity: "home-1" }, "PSK_UNKNOWN_IDENTITY"],
      // A DTLS 1.2 server's handshake_failure: no suite in common, not a credential problem.
      [
        { transport: "dtls", detail: "DTLS handshake failed: fatal alert: handshake_failure (40) from 127.0.0.1:5684", identity: "home-1" },
        "NO_SHARED_CIPHER",
      ],
      [
        {
          transport: "tls",
          detail: "sslv3 alert bad record mac:SSL alert number 20 (ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC)",
          identity: "home-1",
        },
        "PSK_MISMATCH",
      ],
      [{ transport: "tls", detail: "sslv3 alert illegal parameter:SSL alert number 47", identity: "home-1" }, "PSK_MISMATCH"],
      [{ transport: "tls", detail: "tlsv1 alert unknown psk identity:SSL alert number 115", identity: "home-1" }, "PSK_UNKNOWN_IDENTITY"],
      [{ transport: "tls", detail: "sslv3 alert handshake failure:SSL alert number 40", identity: "home-1" }, "PSK_UNKNOWN_IDENTITY"],
      [
        { transport: "tls", detail: "self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN)", certificate: true },
        "CERT_UNTRUSTED",
      ],
      [{ transport: "tls", detail: "certificate has expired (CERT_HAS_EXPIRED)", certificate: true }, "CERT_EXPIRED"],
      [
        {
          transport: "tls",
          detail: "Hostname/IP does not match certificate's altnames (ERR_TLS_CERT_ALTNAME_INVALID)",
          certificate: true,
          servername: "isp.example",
        },
        "CERT_NAME_MISMATCH",
      ],
      [
        { transport: "tls", detail: "server closed the connection right after the handshake (certificate refused?)", certificate: true },
        "CERT_REFUSED",
      ],
      [{ transport: "dtls", detail: "DTLS handshake with 127.0.0.1:4647 timed out after 1000 ms", identity: "home-1" }, undefined],
      [{ transport: "tls", detail: "connect ECONNREFUSED 127.0.0.1:4647" }, undefined],
    ];
    for (const [facts, problem] of cases) assert.equal(diagnoseClientFailure(facts)?.problem, problem, facts.detail);
    assert.equal(
      describeForDialer({ problem: "PSK_MISMATCH", identity: "home-1" }),
      'the PSK key for identity "home-1" does not match the ISP\'s',
    );
  });

  it("explainDialFailure keeps the code, writes the sentence, keeps the library's text in detail; leaves the rest alone", () => {
    const raw = new TransportError("AUTH_FAILED", "received fatal alert: decrypt_error");
    const e = explainDialFailure(raw, { transport: "dtls", identity: "home-1" });
    assert.equal(e.code, "AUTH_FAILED");
    assert.equal(e.problem, "PSK_MISMATCH");
    assert.equal(e.message, 'the PSK key for identity "home-1" does not match the ISP\'s');
    assert.equal(e.detail, "received fatal alert: decrypt_error");
    const timeout = new TransportError("HANDSHAKE_TIMEOUT", "timed out");
    assert.equal(explainDialFailure(timeout, { transport: "dtls", identity: "home-1" }), timeout);
  });

  it("an identity from the wire is clipped before it reaches an event", () => {
    const long = "a".repeat(5000);
    assert.equal(clipIdentity(long).length, 131);
    const ev = authFailureEvent(
      { address: "192.0.2.1", port: 1, transport: "dtls", reason: "unknown-identity", problem: "PSK_UNKNOWN_IDENTITY", identity: long },
      () => undefined,
    );
    assert.ok(ev.message.length < 300);
    assert.equal(ev.reason, "PSK_UNKNOWN_IDENTITY");
    assert.equal(ev.detail, "dtls: unknown-identity");
  });
});

describe("dots/connect-diagnosis: the dialer's disconnected reason and ban hint", () => {
  const candidate = { transport: "dtls" as const, address: "192.0.2.1", family: 4 as const, host: "isp" };
  const round = (...errors: Error[]) => new HappyEyeballsError(errors.map((error) => ({ candidate, error })));

  it("names a credential problem; hints at a ban only after repeated silent rounds, citing the earlier problem; a success resets", () => {
    const t = new ConnectFailureTracker();
    const bad = explainDialFailure(new TransportError("AUTH_FAILED", "received fatal alert: decrypt_error"), {
      transport: "dtls",
      identity: "home-1",
    });
    const r1 = t.failed(round(bad));
    assert.equal(r1.code, "PSK_MISMATCH");
    assert.match(r1.reason, /does not match the ISP's/);
    assert.equal(r1.hint, undefined);
    const silent = () =>
      round(
        new TransportError("HANDSHAKE_TIMEOUT", "DTLS handshake timed out"),
        new TransportError("HANDSHAKE_FAILED", "connection closed during the TLS handshake"),
      );
    const r2 = t.failed(silent());
    assert.equal(r2.code, "HANDSHAKE_TIMEOUT");
    assert.equal(r2.hint, undefined, "one silent round is not yet a pattern");
    const r3 = t.failed(silent());
    assert.match(r3.hint as string, /may have banned this address/);
    assert.match(r3.hint as string, /Earlier attempts failed with PSK_MISMATCH/);
    t.succeeded();
    assert.equal(t.failed(silent()).hint, undefined);
    // a refused connection is not a ban
    const refused = t.failed(round(new TransportError("CONNECT_FAILED", "connect ECONNREFUSED")));
    assert.equal(refused.code, "CONNECT_FAILED");
    assert.equal(t.failed(silent()).hint, undefined);
  });
});
