import { strict as assert } from "node:assert";
import * as net from "node:net";
import { CallHomeListener } from "../../../src/dots/isp-engine";
import { IspRequestError } from "../../../src/dots/isp-session";

const psk = [{ identity: "home-1", key: Buffer.from("k"), home: "h1" }];

describe("dots/isp-engine", () => {
  describe("CallHomeListener configuration and session lookup", () => {
    it("rejects impossible configurations before opening anything", () => {
      assert.throws(() => new CallHomeListener({ port: 70000, transports: { dtls: true, tls: false }, psk }), RangeError);
      assert.throws(() => new CallHomeListener({ port: 0, transports: { dtls: false, tls: false }, psk }), /DTLS, TLS or both/);
      assert.throws(() => new CallHomeListener({ port: 0, transports: { dtls: true, tls: false }, psk: [...psk, ...psk] }), /twice/);
    });

    it("keeps off the base channel's port 4646 unless told otherwise (R3, RFC 9066 appendix B)", () => {
      assert.throws(
        () => new CallHomeListener({ port: 4646, transports: { dtls: true, tls: false }, psk }),
        (e: unknown) => e instanceof RangeError && /4646/.test(e.message) && /4647/.test(e.message),
      );
      assert.doesNotThrow(
        () => new CallHomeListener({ port: 4646, transports: { dtls: true, tls: false }, psk }, { allowBaseChannelPort: true }),
      );
      assert.doesNotThrow(() => new CallHomeListener({ port: 4647, transports: { dtls: true, tls: false }, psk }));
    });

    it("fails start() clearly for DTLS without PSK or certificates without a CA", async () => {
      const a = new CallHomeListener({ port: 0, host: "127.0.0.1", transports: { dtls: true, tls: false } });
      await assert.rejects(a.start(), /PSK/);
      const b = new CallHomeListener({
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: false, tls: true },
        certificate: { cert: "x", key: "y" },
      });
      await assert.rejects(b.start(), /certificate\.ca/);
      await a.stop();
      await b.stop();
    });

    it("fails start() when the port is taken, and frees what it opened", async () => {
      const blocker = net.createServer();
      await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
      const port = (blocker.address() as net.AddressInfo).port;
      try {
        const l = new CallHomeListener({ port, host: "127.0.0.1", transports: { dtls: false, tls: true }, psk });
        await assert.rejects(l.start());
        await l.stop();
      } finally {
        await new Promise<void>((r) => blocker.close(() => r()));
      }
    });

    it("names unknown sessions, and refuses everything once stopped", async () => {
      const l = new CallHomeListener({
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: true, tls: false },
        psk,
        homePrefixes: { h1: ["203.0.113.0/24"] },
      });
      await l.start();
      assert.ok((l.port as number) > 0);
      assert.deepEqual(l.sessions(), []);
      assert.equal(l.findSession("h1"), undefined);
      // A configured home that is not connected is "down"; a name nobody configured is "unknown".
      await assert.rejects(l.mitigate("h1", {}), (e: unknown) => e instanceof IspRequestError && e.code === "SESSION_DOWN");
      await assert.rejects(l.get("nobody"), (e: unknown) => e instanceof IspRequestError && e.code === "UNKNOWN_SESSION");
      await l.stop();
      await assert.rejects(l.withdraw("h1", 1), (e: unknown) => e instanceof IspRequestError && e.code === "STOPPED");
    });
  });
});
