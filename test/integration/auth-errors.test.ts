// Wrong credentials said in words on both sides, and the drop-list ban made visible: our dialer
// against our listener over DTLS and TLS, and openssl s_client against our listener.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import type { AuthFailureEvent, DropBanEvent, DropEndInfo } from "../../src/dots/auth-events";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { CallHomeDialer } from "../../src/dots/home-engine";
import { hasCommand, requireOrSkip } from "../support/env";
import { makeTestPki, type TestPki } from "../support/certs";
import { FAST_ISP, PSK_KEY, VARIANTS, dialerOptions, listenerOptions, waitFor, type Variant } from "./harness";

type Disconnected = { reason: string; code?: string; hint?: string; detail?: string; retryInMs?: number };
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const TUNING = { dtlsHandshakeTimeoutMs: 1000, dtlsAttempts: 1 };

describe("auth errors in words (dialer and listener)", function () {
  this.timeout(30000);
  let pki: TestPki;
  const stops: Array<() => Promise<void>> = [];

  before(async function () {
    this.timeout(60000);
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const s of stops.splice(0).reverse()) await s();
  });

  async function listen(
    v: Variant,
    extra: Parameters<typeof listenerOptions>[2] = {},
  ): Promise<{ listener: CallHomeListener; failures: AuthFailureEvent[] }> {
    const listener = new CallHomeListener(
      listenerOptions(v, pki, { psk: [{ identity: "home-1", key: PSK_KEY, home: "Home One" }], ...extra }),
      FAST_ISP,
    );
    listener.on("error", () => undefined);
    const failures: AuthFailureEvent[] = [];
    listener.on("auth-failure", (f: AuthFailureEvent) => failures.push(f));
    await listener.start();
    stops.push(() => listener.stop());
    return { listener, failures };
  }

  function dial(v: Variant, port: number, extra: Parameters<typeof dialerOptions>[3]): CallHomeDialer {
    const dialer = new CallHomeDialer({
      ...dialerOptions(v, pki, port, { reconnect: { minMs: 50, maxMs: 100 }, ...extra }),
      tuning: TUNING,
    });
    dialer.on("error", () => undefined);
    stops.push(() => dialer.stop());
    return dialer;
  }

  for (const v of VARIANTS.filter((x) => x.name !== "tls-cert")) {
    it(`wrong PSK key over ${v.name}: PSK_MISMATCH on both sides, naming identity and home`, async () => {
      const { listener, failures } = await listen(v);
      const dialer = dial(v, listener.port as number, { psk: { identity: "home-1", key: Buffer.from("not-the-key-0123456") } });
      const down = waitFor<[Disconnected]>(dialer, "disconnected", () => true, 10000);
      await dialer.start();
      const [d] = await down;
      assert.equal(d.code, "PSK_MISMATCH", JSON.stringify(d));
      assert.match(d.reason, /the PSK key for identity "home-1" does not match the ISP's/);
      assert.ok(d.detail && d.detail.length > 0, "the library's words stay in detail");
      assert.doesNotMatch(d.reason, /decrypt_error|bad record mac|illegal parameter|alert number/i);
      while (failures.length === 0) await new Promise((r) => setTimeout(r, 10));
      const f = failures[0];
      assert.equal(f.reason, "PSK_MISMATCH", JSON.stringify(f));
      assert.equal(f.identity, "home-1");
      assert.equal(f.home, "Home One");
      assert.match(f.message, /^home "Home One" presented a PSK key that does not match \(identity home-1, from 127\.0\.0\.1\)$/);
      assert.match(f.detail, v.transport === "udp" ? /^dtls: bad-finished$/ : /^tls: .*(binder|bad record mac|decrypt)/i);
    });

    it(`unknown PSK identity over ${v.name}: PSK_UNKNOWN_IDENTITY on both sides, naming it`, async () => {
      const { listener, failures } = await listen(v);
      const dialer = dial(v, listener.port as number, { psk: { identity: "stranger", key: PSK_KEY } });
      const down = waitFor<[Disconnected]>(dialer, "disconnected", () => true, 10000);
      await dialer.start();
      const [d] = await down;
      assert.equal(d.code, "PSK_UNKNOWN_IDENTITY", JSON.stringify(d));
      assert.match(d.reason, /the ISP does not know PSK identity "stranger"/);
      while (failures.length === 0) await new Promise((r) => setTimeout(r, 10));
      assert.equal(failures[0].reason, "PSK_UNKNOWN_IDENTITY", JSON.stringify(failures[0]));
      assert.equal(failures[0].identity, "stranger");
      assert.equal(failures[0].home, undefined);
      assert.match(failures[0].message, /presented PSK identity "stranger", which no configured home has/);
    });
  }

  it("certificates over TLS: the dialer names an untrusted CA, a wrong name, an expired ISP certificate; the listener an untrusted and an expired home", async () => {
    const v = VARIANTS.find((x) => x.name === "tls-cert") as Variant;
    const cases: Array<[string, Parameters<typeof listenerOptions>[2], Parameters<typeof dialerOptions>[3], string, RegExp]> = [
      [
        "untrusted CA",
        {},
        { certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.rogueCa.cert, servername: "localhost" } },
        "CERT_UNTRUSTED",
        /not signed by the CA configured here/,
      ],
      [
        "wrong name",
        {},
        { certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "other.example" } },
        "CERT_NAME_MISMATCH",
        /does not name "other\.example"/,
      ],
      [
        "expired",
        { certificate: { cert: pki.expired.cert, key: pki.expired.key, ca: pki.ca.cert } },
        {},
        "CERT_EXPIRED",
        /the ISP's certificate has expired/,
      ],
    ];
    for (const [label, lx, dx, code, words] of cases) {
      const { listener } = await listen(v, { psk: undefined, ...lx });
      const dialer = dial(v, listener.port as number, dx);
      const down = waitFor<[Disconnected]>(dialer, "disconnected", () => true, 10000);
      await dialer.start();
      const [d] = await down;
      assert.equal(d.code, code, `${label}: ${JSON.stringify(d)}`);
      assert.match(d.reason, words, label);
      await dialer.stop();
      await listener.stop();
    }
    for (const [label, cert, code, words] of [
      ["rogue home", pki.rogueHome, "CERT_UNTRUSTED", /presented a certificate( \(.*\))? not signed by a CA we trust/],
      ["expired home", pki.expired, "CERT_EXPIRED", /presented an expired certificate/],
    ] as const) {
      const { listener, failures } = await listen(v, { psk: undefined });
      const dialer = dial(v, listener.port as number, {
        certificate: { cert: cert.cert, key: cert.key, ca: pki.ca.cert, servername: "localhost" },
      });
      await dialer.start();
      const deadline = Date.now() + 10000;
      while (failures.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(failures[0]?.reason, code, `${label}: ${JSON.stringify(failures)}`);
      assert.match(failures[0].message, words, `${label}: ${JSON.stringify(failures[0])}`);
      await dialer.stop();
      await listener.stop();
    }
  });

  for (const v of VARIANTS.filter((x) => x.name !== "tls-cert")) {
    it(`the ban is visible over ${v.name}: drop (ISO since/until, failures, last reason), drop-end, and the dialer's hint`, async () => {
      const { listener } = await listen(v, { dropList: { maxFailures: 2, windowMs: 60000, banMs: 2500 } });
      const drops: DropBanEvent[] = [];
      const ends: DropEndInfo[] = [];
      listener.on("drop", (d: DropBanEvent) => drops.push(d));
      listener.on("drop-end", (d: DropEndInfo) => ends.push(d));
      const dialer = dial(v, listener.port as number, { psk: { identity: "home-1", key: Buffer.from("not-the-key-0123456") } });
      const hinted = waitFor<[Disconnected]>(dialer, "disconnected", (d) => d.hint !== undefined, 15000);
      const dropped = waitFor<[DropBanEvent]>(listener, "drop", () => true, 15000);
      await dialer.start();
      const [drop] = await dropped;
      assert.equal(drop.remoteAddress, "127.0.0.1");
      assert.equal(drop.failures, 2);
      assert.equal(drop.banSeconds, 2.5);
      assert.match(drop.since, ISO);
      assert.match(drop.until, ISO);
      assert.equal(Date.parse(drop.until) - Date.parse(drop.since), 2500);
      assert.equal(drop.lastReason, "PSK_MISMATCH");
      assert.equal(drop.home, "Home One");
      assert.match(drop.message, /home "Home One" at 127\.0\.0\.1 is ignored until .* after 2 failed handshakes/);
      const [h] = await hinted;
      assert.equal(h.code, "HANDSHAKE_TIMEOUT", JSON.stringify(h));
      assert.match(h.hint as string, /the ISP may have banned this address after failed handshakes/);
      assert.match(h.hint as string, /Earlier attempts failed with PSK_MISMATCH/);
      await dialer.stop();
      const [end] = await waitFor<[DropEndInfo]>(listener, "drop-end", () => true, 5000);
      assert.equal(end.remoteAddress, "127.0.0.1");
      assert.equal(end.since, drop.since);
      assert.match(end.until, ISO);
      assert.ok(Date.parse(end.until) >= Date.parse(drop.until) - 10);
      assert.equal(drops.length, 1);
      assert.equal(ends.length, 1);
    });
  }

  describe("openssl s_client against our listener", () => {
    before(function () {
      requireOrSkip(this, "openssl", hasCommand("openssl"));
    });

    const sClient = (args: string[]): Promise<string> =>
      new Promise((resolve) => {
        const child = spawn("openssl", ["s_client", ...args], { stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (b: Buffer) => (out += b.toString()));
        child.stderr.on("data", (b: Buffer) => (out += b.toString()));
        const kill = setTimeout(() => child.kill(), 8000);
        child.on("exit", () => {
          clearTimeout(kill);
          resolve(out);
        });
        child.stdin.end();
      });

    for (const [label, v, extra] of [
      ["DTLS 1.2", VARIANTS[0], ["-dtls1_2", "-cipher", "PSK-AES128-CCM8"]],
      ["TLS 1.2", VARIANTS[2], ["-tls1_2", "-cipher", "PSK", "-alpn", "coap"]],
      ["TLS 1.3", VARIANTS[2], ["-tls1_3", "-alpn", "coap"]],
    ] as const) {
      it(`${label}: a wrong key is PSK_MISMATCH for home "Home One", an unknown identity is named`, async () => {
        const { listener, failures } = await listen(v);
        const port = String(listener.port);
        await sClient([
          "-connect",
          `127.0.0.1:${port}`,
          "-psk",
          Buffer.from("not-the-key-0123456").toString("hex"),
          "-psk_identity",
          "home-1",
          ...extra,
        ]);
        await sClient(["-connect", `127.0.0.1:${port}`, "-psk", PSK_KEY.toString("hex"), "-psk_identity", "intruder", ...extra]);
        const deadline = Date.now() + 5000;
        while (failures.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        assert.equal(failures[0]?.reason, "PSK_MISMATCH", JSON.stringify(failures));
        assert.equal(failures[0].home, "Home One");
        assert.match(failures[0].message, /home "Home One" presented a PSK key that does not match \(identity home-1/);
        assert.equal(failures[1]?.reason, "PSK_UNKNOWN_IDENTITY", JSON.stringify(failures));
        assert.equal(failures[1].identity, "intruder");
      });
    }
  });
});
