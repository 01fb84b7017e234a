// Issue #12 finding 11: a PSK home and a certificate home with the same name must not share it.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { DotsJson, MitigationEvent, SessionInfo } from "../../src/dots/api";
import { CallHomeDialer } from "../../src/dots/home-engine";
import type { IdentityConflictEvent } from "../../src/dots/home-names";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { makeTestPki } from "../support/certs";
import { FAST_ISP, HOME_PREFIX, waitFor } from "./harness";

const NAME = "home-2.example"; // the CN of the test PKI's home2 certificate
const KEY = Buffer.from("home-two-psk-0123456789");
const MS = "ietf-dots-signal-channel:mitigation-scope";
const REQUEST: DotsJson = {
  [MS]: { scope: [{ "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 }] },
};

describe("call-home: one home name, one credential (issue #12 finding 11)", function () {
  this.timeout(40000);

  it("refuses a certificate home whose CN is a PSK home's name, with identity-conflict, and commands reach the PSK home only; a restart keeps it", async () => {
    const pki = await makeTestPki();
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-names-"));
    const open: Array<{ stop(): Promise<void> }> = [];
    const listen = async (): Promise<CallHomeListener> => {
      const l = new CallHomeListener(
        {
          port: 0,
          host: "127.0.0.1",
          transports: { dtls: true, tls: true },
          certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert },
          psk: [{ identity: NAME, key: KEY, home: NAME }],
          homePrefixes: { [NAME]: [HOME_PREFIX] },
          stateDir,
        },
        FAST_ISP,
      );
      l.on("error", () => undefined);
      await l.start();
      open.push(l);
      return l;
    };
    const dial = (port: number, kind: "psk" | "cert"): CallHomeDialer => {
      const d = new CallHomeDialer({
        hosts: ["127.0.0.1"],
        port,
        transport: kind === "psk" ? "udp" : "tcp",
        homePrefixes: [HOME_PREFIX],
        heartbeatInterval: 1,
        reconnect: { minMs: 100, maxMs: 500 },
        ...(kind === "psk"
          ? { psk: { identity: NAME, key: KEY } }
          : { certificate: { cert: pki.home2.cert, key: pki.home2.key, ca: pki.ca.cert, servername: "localhost" } }),
        tuning: { dtlsHandshakeTimeoutMs: 500 },
      });
      d.on("error", () => undefined);
      open.push(d);
      return d;
    };
    try {
      const l1 = await listen();
      const pskHome = dial(l1.port as number, "psk");
      const got: string[] = [];
      pskHome.on("mitigation", (m: MitigationEvent) => m.kind === "new" && got.push("psk"));
      const up = waitFor<[SessionInfo]>(l1, "session-up");
      await pskHome.start();
      const [s1] = await up;
      assert.equal(s1.home, NAME);
      assert.equal(s1.peer.method, "psk");

      const certHome = dial(l1.port as number, "cert");
      certHome.on("mitigation", (m: MitigationEvent) => m.kind === "new" && got.push("cert"));
      const conflict = waitFor<[IdentityConflictEvent]>(l1, "identity-conflict", undefined, 10000);
      await certHome.start();
      const [c] = await conflict;
      assert.equal(c.home, NAME);
      assert.equal(c.refused.credential, "certificate");
      assert.equal(c.owner.credential, `psk:${NAME}`);
      assert.match(c.message, /refused a certificate .*home name "home-2\.example" belongs to PSK identity "home-2\.example"/);
      assert.doesNotMatch(JSON.stringify(c), new RegExp(KEY.toString()));
      assert.deepEqual(
        l1.sessions().map((s) => s.peer.method),
        ["psk"],
      );
      const out = await l1.mitigate(NAME, REQUEST);
      assert.equal(out.code, "2.01");
      assert.equal(out.sessionId, s1.id);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(got, ["psk"]);

      // Restart: the certificate home comes first this time and still does not get the name.
      await pskHome.stop();
      await certHome.stop();
      await l1.stop();
      const l2 = await listen();
      const again = dial(l2.port as number, "cert");
      const conflict2 = waitFor<[IdentityConflictEvent]>(l2, "identity-conflict", undefined, 10000);
      await again.start();
      const [c2] = await conflict2;
      assert.equal(c2.owner.credential, `psk:${NAME}`);
      assert.equal(l2.sessions().length, 0);
    } finally {
      for (const x of open.reverse()) await x.stop().catch(() => undefined);
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
