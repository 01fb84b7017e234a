import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CliUsageError, HELP, parseDialArgs, parseListenArgs, parsePskKey, type ListenConfig, type DialConfig } from "../../src/cli/args";

const files: Record<string, string> = { "/x/isp.crt": "CERT", "/x/isp.key": "KEY", "/x/ca.crt": "CA", "/x/psk.txt": "  hex:0a0b0c\n" };
const read = (f: string): Buffer => {
  if (!(f in files)) throw new CliUsageError(`cannot read ${f}`);
  return Buffer.from(files[f]);
};
const listen = (...a: string[]): ListenConfig => parseListenArgs(a, read) as ListenConfig;
const dial = (...a: string[]): DialConfig => parseDialArgs(a, read) as DialConfig;

describe("cli/args", () => {
  it("reads PSK keys as hex or text, with explicit prefixes winning", () => {
    assert.deepEqual(parsePskKey("hex:0a0b"), Buffer.from([10, 11]));
    assert.deepEqual(parsePskKey("0a0b"), Buffer.from([10, 11]));
    assert.deepEqual(parsePskKey("0x0a0b"), Buffer.from([10, 11]));
    assert.equal(parsePskKey("text:0a0b").toString(), "0a0b");
    assert.equal(parsePskKey("secretPSK-0123456789").toString(), "secretPSK-0123456789");
    assert.throws(() => parsePskKey("hex:abc"), CliUsageError);
    assert.throws(() => parsePskKey(""), CliUsageError);
  });

  it("listen: a PSK alone enables DTLS and TLS, binds bare prefixes to the home, defaults port 4647", () => {
    const c = listen("--psk-identity", "home-1", "--psk-key", "text:k", "--home-prefix", "203.0.113.0/24", "--home-prefix", "other=198.51.100.0/24");
    assert.equal(c.options.port, 4647);
    assert.equal(c.options.host, "::");
    assert.deepEqual(c.options.transports, { dtls: true, tls: true });
    assert.deepEqual(c.options.psk, [{ identity: "home-1", key: Buffer.from("k") }]);
    assert.deepEqual(c.options.homePrefixes, { "home-1": ["203.0.113.0/24"], other: ["198.51.100.0/24"] });
    assert.deepEqual(c.options.dropList, { maxFailures: 5, windowMs: 60000, banMs: 300000 });
  });

  it("listen: --tls alone with a certificate; --dtls without a PSK is refused", () => {
    const c = listen("--tls", "--cert", "/x/isp.crt", "--key", "/x/isp.key", "--ca", "/x/ca.crt", "--port", "0");
    assert.deepEqual(c.options.transports, { dtls: false, tls: true });
    assert.equal(String(c.options.certificate?.cert), "CERT");
    assert.equal(c.options.port, 0);
    assert.throws(() => listen("--dtls", "--cert", "/x/isp.crt", "--key", "/x/isp.key"), /--dtls needs at least one PSK/);
    assert.throws(() => listen("--cert", "/x/isp.crt"), /go together/);
  });

  it("listen: reads --psk-file, and merges a JSON --config with flags overriding it", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      fs.writeFileSync(path.join(dir, "k.txt"), "text:from-file\n");
      const cfg = path.join(dir, "c.json");
      fs.writeFileSync(cfg, JSON.stringify({ port: 5000, psk: [{ identity: "h1", keyFile: "k.txt", home: "first" }], homePrefixes: { first: ["203.0.113.0/24"] }, requestRepeatMs: 50 }));
      const c = parseListenArgs(["--config", cfg, "--port", "6000"]) as ListenConfig;
      assert.equal(c.options.port, 6000);
      assert.deepEqual(c.options.psk, [{ identity: "h1", key: Buffer.from("from-file"), home: "first" }]);
      assert.equal(c.requestRepeatMs, 50);
      const viaFlag = listen("--psk-identity", "h", "--psk-file", "/x/psk.txt");
      assert.deepEqual(viaFlag.options.psk?.[0].key, Buffer.from([10, 11, 12]));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names the bad flag or value instead of starting", () => {
    assert.throws(() => listen("--bogus"), /unknown option --bogus/);
    assert.throws(() => listen("--port", "x", "--psk-identity", "a", "--psk-key", "b"), /--port needs a number/);
    assert.throws(() => listen("--port", "70000", "--psk-identity", "a", "--psk-key", "b"), /port must be/);
    assert.throws(() => listen(), /nothing to listen on/);
    assert.throws(() => listen("--psk-identity", "a", "--psk-key", "b", "--nat"), /enforcement layer/);
    assert.throws(() => parseListenArgs(["--config", "/nonexistent/x.json"]), /cannot read --config/);
  });

  it("dial: host, transport, credentials, decisions and lab reconnect timers", () => {
    const c = dial("127.0.0.1", "--transport", "udp", "--psk-identity", "home-1", "--psk-key", "hex:0102", "--home-prefix", "203.0.113.0/24", "--auto-decide", "enforced", "--decision-wait", "100", "--reconnect-min", "200", "--reconnect-max", "1000", "--heartbeat-interval", "15");
    assert.deepEqual(c.options.hosts, ["127.0.0.1"]);
    assert.equal(c.options.transport, "udp");
    assert.deepEqual(c.options.psk, { identity: "home-1", key: Buffer.from([1, 2]) });
    assert.deepEqual(c.options.homePrefixes, ["203.0.113.0/24"]);
    assert.equal(c.autoDecide, "enforced");
    assert.equal(c.options.decisionWaitMs, 100);
    assert.deepEqual(c.options.reconnect, { minMs: 200, maxMs: 1000 });
    assert.equal(c.options.heartbeatInterval, 15);
  });

  it("dial: refuses missing host, credentials, prefixes and unknown outcomes", () => {
    assert.throws(() => dial("--psk-identity", "a", "--psk-key", "b", "--home-prefix", "203.0.113.0/24"), /needs the ISP's address/);
    assert.throws(() => dial("h", "--home-prefix", "203.0.113.0/24"), /needs credentials/);
    assert.throws(() => dial("h", "--psk-identity", "a", "--psk-key", "b"), /--home-prefix/);
    assert.throws(() => dial("h", "--psk-identity", "a", "--psk-key", "b", "--home-prefix", "203.0.113.0/24", "--auto-decide", "maybe"), /--auto-decide/);
    assert.throws(() => dial("h", "--transport", "sctp", "--psk-identity", "a", "--psk-key", "b", "--home-prefix", "203.0.113.0/24"), /--transport/);
  });

  it("--help is recognised and the text documents every flag the parsers accept", () => {
    assert.equal(parseListenArgs(["--help"], read), "help");
    assert.equal(parseDialArgs(["--help"], read), "help");
    for (const flag of ["--port", "--host", "--dtls", "--tls", "--psk-identity", "--psk-key", "--psk-file", "--cert", "--key", "--ca", "--home-prefix", "--decision-wait", "--auto-decide", "--heartbeat-interval", "--reconnect-min", "--reconnect-max", "--transport", "--config", "--drop-after", "--request-repeat-ms"]) {
      assert.ok(HELP.includes(flag), `help mentions ${flag}`);
    }
  });
});
