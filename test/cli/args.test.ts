import { strict as assert } from "node:assert";
import { generateKeyPairSync } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DEFAULTS, MIN_PSK_KEY_BYTES } from "../../src/dots/defaults";
import {
  CliUsageError,
  DEFAULT_STATE_DIR,
  FLAG_NAMES,
  HELP,
  defaultStateDir,
  parseDialArgs,
  parseListenArgs,
  parsePskKey,
  type ListenConfig,
  type DialConfig,
} from "../../src/cli/args";

const files: Record<string, string> = {
  "/x/isp.crt": "CERT",
  "/x/isp.key": "KEY",
  "/x/ca.crt": "CA",
  "/x/psk.txt": "  hex:0a0b0c0d0e0f101112131415161718191a\n",
  "/x/ticket.secret": "k6Vt0l3mR9X2b1uQ8sPzA4cW7yHn5eJd0fGiLoMkNq2rTs6U\n",
  "/x/short.secret": "0123456789abcdef0123456789abcde\n",
};
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
    const c = listen(
      "--psk-identity",
      "home-1",
      "--psk-key",
      "text:sixteen-byte-key",
      "--home-prefix",
      "203.0.113.0/24",
      "--home-prefix",
      "other=198.51.100.0/24",
    );
    assert.equal(c.options.port, 4647);
    assert.equal(c.options.host, "::");
    assert.deepEqual(c.options.transports, { dtls: true, tls: true });
    assert.deepEqual(c.options.psk, [{ identity: "home-1", key: Buffer.from("sixteen-byte-key") }]);
    assert.deepEqual(c.options.homePrefixes, { "home-1": ["203.0.113.0/24"], other: ["198.51.100.0/24"] });
    assert.deepEqual(c.options.dropList, { maxFailures: 5, windowMs: 60000, banMs: 300000 });
  });

  it("listen: --tls alone with a certificate; --dtls without a PSK is refused", () => {
    const c = listen("--tls", "--cert", "/x/isp.crt", "--key", "/x/isp.key", "--ca", "/x/ca.crt", "--port", "0");
    assert.deepEqual(c.options.transports, { dtls: false, tls: true });
    assert.equal(String(c.options.certificate?.cert), "CERT");
    assert.equal(c.options.port, 0);
    // A key that is neither EC P-256 nor RSA >= 2048 bits signs no DTLS suite of ours: DTLS needs a PSK then.
    assert.throws(
      () => listen("--dtls", "--cert", "/x/isp.crt", "--key", "/x/isp.key"),
      /--dtls with certificates needs an EC P-256 or RSA \(>= 2048 bits\) key/,
    );
    assert.throws(() => listen("--dtls", "--port", "0"), /PSK credentials or a certificate|--dtls needs a PSK or a certificate/);
    assert.throws(() => listen("--cert", "/x/isp.crt"), /go together/);
  });

  it("listen: P-256 and RSA-2048 certificates serve DTLS and TLS by default; another key TLS only; dial --transport udp takes the first two", () => {
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const withKey =
      (key: string) =>
      (f: string): Buffer =>
        f === "/x/k.key" ? Buffer.from(key) : read(f);
    const ecListen = parseListenArgs(["--cert", "/x/isp.crt", "--key", "/x/k.key", "--ca", "/x/ca.crt"], withKey(ec)) as ListenConfig;
    assert.deepEqual(ecListen.options.transports, { dtls: true, tls: true });
    const rsaListen = parseListenArgs(["--cert", "/x/isp.crt", "--key", "/x/k.key", "--ca", "/x/ca.crt"], withKey(rsa)) as ListenConfig;
    assert.deepEqual(rsaListen.options.transports, { dtls: true, tls: true });
    const p384Listen = parseListenArgs(["--cert", "/x/isp.crt", "--key", "/x/k.key", "--ca", "/x/ca.crt"], withKey(p384)) as ListenConfig;
    assert.deepEqual(p384Listen.options.transports, { dtls: false, tls: true });
    const dialArgs = [
      "--host",
      "192.0.2.1",
      "--home-prefix",
      "203.0.113.0/24",
      "--transport",
      "udp",
      "--cert",
      "/x/isp.crt",
      "--key",
      "/x/k.key",
      "--ca",
      "/x/ca.crt",
    ];
    assert.equal((parseDialArgs(dialArgs, withKey(ec)) as DialConfig).options.transport, "udp");
    assert.equal((parseDialArgs(dialArgs, withKey(rsa)) as DialConfig).options.transport, "udp");
    assert.throws(() => parseDialArgs(dialArgs, withKey(p384)), /needs an EC P-256 or RSA \(>= 2048 bits\) key/);
  });

  it("listen: reads --psk-file, and merges a JSON --config with flags overriding it", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      fs.writeFileSync(path.join(dir, "k.txt"), "text:from-file-0123456789\n");
      const cfg = path.join(dir, "c.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          port: 5000,
          psk: [{ identity: "h1", keyFile: "k.txt", home: "first" }],
          homePrefixes: { first: ["203.0.113.0/24"] },
          requestRepeatMs: 50,
        }),
      );
      const c = parseListenArgs(["--config", cfg, "--port", "6000"]) as ListenConfig;
      assert.equal(c.options.port, 6000);
      assert.deepEqual(c.options.psk, [{ identity: "h1", key: Buffer.from("from-file-0123456789"), home: "first" }]);
      assert.equal(c.requestRepeatMs, 50);
      const viaFlag = listen("--psk-identity", "h", "--psk-file", "/x/psk.txt");
      assert.deepEqual(viaFlag.options.psk?.[0].key, Buffer.from("0a0b0c0d0e0f101112131415161718191a", "hex"));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("listen: --ticket-secret-file (or ticketSecretFile in --config) gives the DTLS ticket secret, trailing newline dropped", () => {
    const psk = ["--psk-identity", "a", "--psk-key", "text:sixteen-byte-key"];
    assert.equal(listen(...psk).options.ticketSecret, undefined);
    const c = listen(...psk, "--ticket-secret-file", "/x/ticket.secret");
    assert.deepEqual(c.options.ticketSecret, Buffer.from("k6Vt0l3mR9X2b1uQ8sPzA4cW7yHn5eJd0fGiLoMkNq2rTs6U"));
    assert.throws(() => listen(...psk, "--ticket-secret-file", "/x/short.secret"), /31 bytes; a ticket secret needs at least 32/);
    assert.throws(() => listen(...psk, "--ticket-secret-file", "/x/none"), /cannot read \/x\/none/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      fs.writeFileSync(path.join(dir, "t.secret"), "a".repeat(40), { mode: 0o600 });
      const cfg = path.join(dir, "c.json");
      fs.writeFileSync(cfg, JSON.stringify({ psk: [{ identity: "h1", key: "text:sixteen-byte-key" }], ticketSecretFile: "t.secret" }));
      assert.deepEqual((parseListenArgs(["--config", cfg]) as ListenConfig).options.ticketSecret, Buffer.from("a".repeat(40)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names the bad flag or value instead of starting", () => {
    assert.throws(() => listen("--bogus"), /unknown option --bogus/);
    assert.throws(() => listen("--port", "x", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key"), /--port needs a number/);
    assert.throws(() => listen("--port", "70000", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key"), /port must be/);
    assert.throws(() => listen(), /nothing to listen on/);
    assert.throws(
      () => listen("--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--nat", "auto"),
      /--nat belongs to the home side's enforcement layer: it is a dial option/,
    );
    assert.throws(() => parseListenArgs(["--config", "/nonexistent/x.json"]), /cannot read --config/);
  });

  it("dial: host, transport, credentials, decisions and lab reconnect timers", () => {
    const c = dial(
      "127.0.0.1",
      "--transport",
      "udp",
      "--psk-identity",
      "home-1",
      "--psk-key",
      "hex:000102030405060708090a0b0c0d0e0f",
      "--home-prefix",
      "203.0.113.0/24",
      "--auto-decide",
      "enforced",
      "--decision-wait",
      "100",
      "--reconnect-min",
      "200",
      "--reconnect-max",
      "1000",
      "--heartbeat-interval",
      "15",
      "--terminating-period",
      "500",
    );
    assert.equal(c.terminatingPeriodMs, 500);
    assert.deepEqual(c.options.hosts, ["127.0.0.1"]);
    assert.equal(c.options.transport, "udp");
    assert.deepEqual(c.options.psk, { identity: "home-1", key: Buffer.from("000102030405060708090a0b0c0d0e0f", "hex") });
    assert.deepEqual(c.options.homePrefixes, ["203.0.113.0/24"]);
    assert.equal(c.autoDecide, "enforced");
    assert.equal(c.options.decisionWaitMs, 100);
    assert.deepEqual(c.options.reconnect, { minMs: 200, maxMs: 1000 });
    assert.equal(c.options.heartbeatInterval, 15);
  });

  it("dial: --max-lifetime sets the longest granted lifetime in seconds (issue 12 #1); beyond 365 days or 0 is refused", () => {
    const base = ["h", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(dial(...base).options.maxLifetime, undefined, "absent: the engine's default (DEFAULTS.maxLifetimeS) applies");
    assert.equal(dial(...base, "--max-lifetime", "7200").options.maxLifetime, 7200);
    assert.equal(dial(...base, "--max-lifetime", "2h").options.maxLifetime, 7200);
    assert.throws(() => dial(...base, "--max-lifetime", "31536001"), /max-lifetime/);
    assert.throws(() => dial(...base, "--max-lifetime", "0"), /max-lifetime/);
  });

  it("dial: --status-period sets the periodic status notifications (with dropped traffic), 0 = only on change", () => {
    const base = ["h", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(dial(...base).statusPeriodMs, undefined, "absent: the engine's default applies");
    assert.equal(dial(...base, "--status-period", "1000").statusPeriodMs, 1000);
    assert.equal(dial(...base, "--status-period", "0").statusPeriodMs, 0);
    assert.throws(() => dial(...base, "--status-period", "3600001"), /status-period/);
  });

  it("dial: refuses missing host, credentials, prefixes and unknown outcomes", () => {
    assert.throws(
      () => dial("--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"),
      /needs the ISP's address/,
    );
    assert.throws(() => dial("h", "--home-prefix", "203.0.113.0/24"), /needs credentials/);
    assert.throws(() => dial("h", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key"), /--home-prefix/);
    assert.throws(
      () =>
        dial("h", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24", "--auto-decide", "maybe"),
      /--auto-decide/,
    );
    assert.throws(
      () =>
        dial("h", "--transport", "sctp", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"),
      /--transport/,
    );
  });

  it("--help is recognised and the text documents every flag the parsers accept", () => {
    assert.equal(parseListenArgs(["--help"], read), "help");
    assert.equal(parseDialArgs(["--help"], read), "help");
    const all = new Set([...FLAG_NAMES.listen, ...FLAG_NAMES.dial]);
    for (const flag of [
      "port",
      "dtls",
      "auto-decide",
      "enforce",
      "nat",
      "action",
      "consent",
      "consent-timeout",
      "consent-on-timeout",
      "nft-table",
      "nft-owner",
    ])
      assert.ok(all.has(flag), flag);
    for (const flag of all) {
      // documented as a flag at the start of a help line, not just mentioned in passing
      assert.match(HELP, new RegExp(`^ +(--[a-z-]+ [^\\n]*)?--${flag}(?![\\w-])`, "m"), `help documents --${flag}`);
    }
    for (const cmd of ["decide", "approve", "reject", "mitigations"])
      assert.ok(HELP.includes(`{"cmd":"${cmd}"`), `help shows the ${cmd} command`);
    for (const flag of ["discover-domain", "dns-server", "discover-dnssec"]) assert.ok(FLAG_NAMES.dial.includes(flag), flag);
    for (const ev of ["enforcer-ready", "lookup", "consent-request", "enforcement", "discovered"])
      assert.ok(HELP.includes(ev), `help lists the ${ev} event`);
  });

  const base = ["h", "--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "198.51.100.2/32"];
  const creds = ["--psk-identity", "a", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "198.51.100.2/32"];

  it("dial: --discover-domain stands in for HOST; --dns-server is repeatable; a HOST stays as fallback", () => {
    const c = dial(
      ...creds,
      "--discover-domain",
      "isp.example",
      "--dns-server",
      "127.0.0.1:5353",
      "--dns-server=[::1]:53",
      "--dns-server",
      "192.0.2.53",
    );
    assert.deepEqual(c.options.hosts, []);
    assert.deepEqual(c.options.discover, { domain: "isp.example", dnsServers: ["127.0.0.1:5353", "[::1]:53", "192.0.2.53"] });
    const bare = dial(...creds, "--discover-domain", "isp.example.");
    assert.deepEqual(bare.options.discover, { domain: "isp.example." }, "no --dns-server: the system's resolvers");
    const both = dial("fallback.isp.example", ...creds, "--discover-domain", "isp.example");
    assert.deepEqual([both.options.hosts, both.options.discover?.domain], [["fallback.isp.example"], "isp.example"]);
    assert.equal(dial(...base).options.discover, undefined);
    // RFC 6125: the SRV target is the certificate name only when the answers are DNSSEC-validated.
    const dnssec = dial(...creds, "--discover-domain", "isp.example", "--discover-dnssec");
    assert.deepEqual(dnssec.options.discover, { domain: "isp.example", dnssecValidated: true });
    assert.throws(
      () => dial(...base, "--discover-dnssec"),
      (e: unknown) => e instanceof CliUsageError && /--discover-dnssec needs --discover-domain/.test(e.message),
    );
  });

  it("dial: discoverDomain and dnsServers in --config, flags winning", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-disc-"));
    try {
      const cfg = path.join(dir, "dial.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.2/32"],
          discoverDomain: "isp.example",
          dnsServers: ["127.0.0.1:53", "::1"],
        }),
      );
      const c = parseDialArgs(["--config", cfg]) as DialConfig;
      assert.deepEqual(c.options.hosts, []);
      assert.deepEqual(c.options.discover, { domain: "isp.example", dnsServers: ["127.0.0.1:53", "::1"] });
      const over = parseDialArgs(["--config", cfg, "--discover-domain", "other.example", "--dns-server", "127.0.0.2"]) as DialConfig;
      assert.deepEqual(over.options.discover, { domain: "other.example", dnsServers: ["127.0.0.2"] });
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.2/32"],
          discoverDomain: "isp.example",
          discoverDnssec: true,
        }),
      );
      assert.deepEqual((parseDialArgs(["--config", cfg]) as DialConfig).options.discover, { domain: "isp.example", dnssecValidated: true });
      fs.writeFileSync(
        cfg,
        JSON.stringify({ psk: { identity: "h", key: "text:k" }, discoverDomain: "isp.example", discoverDnssec: "yes" }),
      );
      assert.throws(() => parseDialArgs(["--config", cfg]), /"discoverDnssec" must be true or false/);
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.2/32"],
          discoverDomain: "isp.example",
          dnsServers: "127.0.0.1",
        }),
      );
      assert.throws(() => parseDialArgs(["--config", cfg]), /"dnsServers" must be a list/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("dial: neither HOST nor --discover-domain, or a bad domain or DNS server, is refused by name", () => {
    assert.throws(
      () => dial(...creds),
      (e: unknown) => e instanceof CliUsageError && /needs the ISP's address/.test(e.message) && /--discover-domain/.test(e.message),
    );
    const bad: Array<[string[], RegExp]> = [
      [["--dns-server", "127.0.0.1"], /--dns-server needs --discover-domain/],
      [["--discover-domain", "bad domain"], /--discover-domain "bad domain" is not a DNS domain name/],
      [["--discover-domain", "192.0.2.1"], /is not a DNS domain name/],
      [["--discover-domain", "-x.example"], /is not a DNS domain name/],
      [["--discover-domain", "isp.example", "--dns-server", "dns.example"], /--dns-server "dns.example": expected an IP address/],
      [["--discover-domain", "isp.example", "--dns-server", "127.0.0.1:70000"], /port must be 1..65535/],
      [["--discover-domain", "isp.example", "--dns-server", "999.1.1.1"], /is not an IP address/],
      [["--discover-domain"], /--discover-domain needs a value/],
    ];
    for (const [extra, re] of bad)
      assert.throws(
        () => dial(...creds, ...extra),
        (e: unknown) => e instanceof CliUsageError && re.test(e.message),
        extra.join(" "),
      );
  });

  it("dial: no --enforce keeps decisions on stdin / --auto-decide", () => {
    assert.equal(dial(...base).enforcement, undefined);
    assert.equal(dial(...base, "--auto-decide", "enforced").enforcement, undefined);
  });

  it("dial: --enforce with its defaults, and every enforcement flag read through", () => {
    assert.deepEqual(dial(...base, "--enforce", "nftables").enforcement, { enforce: "nftables" });
    const c = dial(
      ...base,
      "--enforce",
      "dry-run",
      "--nat",
      "static:/x/nat.json",
      "--action",
      "quarantine",
      "--consent",
      "manual",
      "--consent-timeout",
      "1500",
      "--consent-on-timeout",
      "approve",
      "--nft-table",
      "lab_dots",
      "--nft-owner",
      "isp-a",
    );
    assert.deepEqual(c.enforcement, {
      enforce: "dry-run",
      nat: "static:/x/nat.json",
      action: "quarantine",
      consent: "manual",
      consentTimeoutMs: 1500,
      consentOnTimeout: "approve",
      table: "lab_dots",
      owner: "isp-a",
    });
    for (const nat of ["auto", "conntrack", "conntrack-list", "proc", "proc:/x/nf_conntrack"])
      assert.equal(dial(...base, "--enforce", "nftables", `--nat=${nat}`).enforcement?.nat, nat);
    assert.equal(dial(...base, "--enforce", "nftables", "--consent", "auto").enforcement?.consent, "auto");
  });

  it("dial: enforcement settings from --config, a static table relative to the file, flags winning", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-enf-"));
    try {
      const cfg = path.join(dir, "dial.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          hosts: ["isp"],
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.2/32"],
          enforce: "nftables",
          nat: "static:nat.json",
          consent: "manual",
          consentTimeoutMs: 9000,
          nftTable: "t1",
        }),
      );
      const c = parseDialArgs(["--config", cfg, "--consent-on-timeout", "approve"]) as DialConfig;
      assert.deepEqual(c.enforcement, {
        enforce: "nftables",
        nat: `static:${dir}/nat.json`,
        consent: "manual",
        consentTimeoutMs: 9000,
        consentOnTimeout: "approve",
        table: "t1",
      });
      const over = parseDialArgs(["--config", cfg, "--enforce", "dry-run", "--nat", "static:other.json"]) as DialConfig;
      assert.equal(over.enforcement?.enforce, "dry-run");
      assert.equal(over.enforcement?.nat, "static:other.json", "a flag's path stays as typed (relative to the working directory)");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("dial: refuses bad or orphaned enforcement flags by name before anything starts", () => {
    const bad: Array<[string[], RegExp]> = [
      [["--enforce", "iptables"], /--enforce must be nftables or dry-run/],
      [["--enforce", "nftables", "--nat", "magic"], /--nat: unknown NAT source "magic"/],
      [["--enforce", "nftables", "--nat", "static:"], /--nat/],
      [["--enforce", "nftables", "--action", "nuke"], /--action must be block or quarantine/],
      [["--enforce", "nftables", "--consent", "maybe"], /--consent must be auto or manual/],
      [["--enforce", "nftables", "--consent", "manual", "--consent-on-timeout", "shrug"], /--consent-on-timeout must be reject or approve/],
      [["--enforce", "nftables", "--consent", "manual", "--consent-timeout", "0"], /consent-timeout must be an integer/],
      [["--enforce", "nftables", "--consent-timeout", "5000"], /--consent-timeout needs --consent manual/],
      [["--enforce", "nftables", "--consent", "auto", "--consent-on-timeout", "approve"], /--consent-on-timeout needs --consent manual/],
      [["--enforce", "nftables", "--nft-table", "x; flush ruleset"], /--nft-table: .*not a safe nft table name/],
      [["--enforce", "nftables", "--nft-owner", "isp a:1"], /--nft-owner: 1 to 48/],
      [["--nft-owner", "isp-a"], /--nft-owner needs --enforce/],
      [["--nat", "conntrack"], /--nat needs --enforce/],
      [["--action", "block"], /--action needs --enforce/],
      [["--consent", "manual"], /--consent needs --enforce/],
      [["--enforce", "nftables", "--auto-decide", "enforced"], /--auto-decide and --enforce exclude each other/],
      [["--enforce"], /--enforce needs a value/],
    ];
    for (const [extra, re] of bad)
      assert.throws(
        () => dial(...base, ...extra),
        (e: unknown) => e instanceof CliUsageError && re.test(e.message),
        extra.join(" "),
      );
  });
  it('listen: --state-dir DIR, "none" for memory only, stateDir in --config relative to the file, and the daemon default', () => {
    const psk = ["--psk-identity", "home-1", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(listen(...psk, "--state-dir", "/srv/dots").options.stateDir, "/srv/dots");
    assert.equal(listen(...psk, "--state-dir", "none").options.stateDir, undefined);
    assert.equal(listen(...psk).options.stateDir, defaultStateDir());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      const cfg = path.join(dir, "c.json");
      fs.writeFileSync(cfg, JSON.stringify({ stateDir: "state" }));
      assert.equal(listen(...psk, "--config", cfg).options.stateDir, path.join(dir, "state"));
      assert.equal(listen(...psk, "--config", cfg, "--state-dir", "/y").options.stateDir, "/y");
      fs.writeFileSync(cfg, JSON.stringify({ stateDir: 5 }));
      assert.throws(() => listen(...psk, "--config", cfg), /state-dir/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(defaultStateDir({ STATE_DIRECTORY: "/run/sd:/other" }, 1000), "/run/sd");
    assert.equal(defaultStateDir({}, 0), DEFAULT_STATE_DIR);
    assert.equal(defaultStateDir({ HOME: "/home/op" }, 1000), "/home/op/.local/state/dots-call-home");
    assert.equal(defaultStateDir({ HOME: "/home/op", XDG_STATE_HOME: "/xdg" }, 1000), "/xdg/dots-call-home");
  });
  it("listen --mqtt: URL, prefix, client id, user, password from a file or the environment (never the URL), TLS files", () => {
    const psk = ["--psk-identity", "home-1", "--psk-key", "text:sixteen-byte-key"];
    const plain = listen(...psk, "--port", "4700", "--mqtt", "mqtt://127.0.0.1:1883");
    assert.equal(plain.mqtt?.prefix, "dots");
    assert.equal(plain.mqtt?.clientId, `dots-listen-${os.hostname()}-4700`);
    assert.deepEqual(
      [plain.mqtt?.holdSeconds, plain.mqtt?.keepaliveSeconds, plain.mqtt?.heartbeats, plain.mqtt?.password],
      [600, 30, false, undefined],
    );
    assert.equal(listen(...psk).mqtt, undefined);
    const full = parseListenArgs(
      [
        ...psk,
        "--mqtt",
        "mqtts://broker:8883",
        "--mqtt-prefix",
        "isp/dots",
        "--mqtt-client-id",
        "isp-a",
        "--mqtt-username",
        "isp",
        "--mqtt-password-file",
        "/x/psk.txt",
        "--mqtt-ca",
        "/x/ca.crt",
        "--mqtt-cert",
        "/x/isp.crt",
        "--mqtt-key",
        "/x/isp.key",
        "--mqtt-hold",
        "0",
        "--mqtt-heartbeats",
      ],
      read,
      {},
    ) as ListenConfig;
    assert.deepEqual(
      [
        full.mqtt?.prefix,
        full.mqtt?.clientId,
        full.mqtt?.username,
        full.mqtt?.password?.toString(),
        full.mqtt?.ca?.toString(),
        full.mqtt?.cert?.toString(),
        full.mqtt?.holdSeconds,
        full.mqtt?.heartbeats,
      ],
      ["isp/dots", "isp-a", "isp", "hex:0a0b0c0d0e0f101112131415161718191a", "CA", "CERT", 0, true],
    );
    const env = parseListenArgs([...psk, "--mqtt", "mqtt://isp@broker"], read, { DOTS_MQTT_PASSWORD: "pw" }) as ListenConfig;
    assert.deepEqual([env.mqtt?.username, env.mqtt?.password?.toString()], ["isp", "pw"]);
    assert.throws(() => listen(...psk, "--mqtt", "mqtt://isp:pw@broker"), /no password in the URL/);
    assert.throws(() => listen(...psk, "--mqtt", "http://broker"), /mqtt:\/\/ or mqtts:\/\//);
    assert.throws(() => listen(...psk, "--mqtt-hold", "5"), /--mqtt-hold needs --mqtt URL/);
    assert.throws(() => listen(...psk, "--mqtt", "mqtt://b", "--mqtt-prefix", "a/#"), /--mqtt-prefix/);
    assert.throws(() => listen(...psk, "--mqtt", "mqtt://b", "--mqtt-client-id", "a/b"), /--mqtt-client-id/);
    assert.throws(() => listen(...psk, "--mqtt", "mqtt://b", "--mqtt-ca", "/x/ca.crt"), /need an mqtts:\/\/ URL/);
    assert.throws(
      () => parseListenArgs([...psk, "--mqtt", "mqtt://b", "--mqtt-password-file", "/x/psk.txt"], read, {}),
      /needs --mqtt-username/,
    );
    assert.throws(() => listen(...psk, "--mqtt", "mqtt://b", "--mqtt-hold", "86401"), /mqtt-hold/);
  });
  it("listen --max-handshakes-per-source sets the per-source DTLS handshake cap; bad values are usage errors", () => {
    const base = ["--psk-identity", "h", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(listen(...base).maxHandshakesPerSource, undefined, "transport default (16) unless asked");
    assert.equal(listen(...base, "--max-handshakes-per-source", "500").maxHandshakesPerSource, 500);
    assert.throws(() => listen(...base, "--max-handshakes-per-source", "0"), CliUsageError);
    assert.throws(() => listen(...base, "--max-handshakes-per-source", "2.5"), CliUsageError);
    assert.throws(() => listen(...base, "--max-handshakes-per-source", "100001"), CliUsageError);
  });
  it('listen --dtls-cookie-always (or "dtlsCookieAlways": true in --config) asks a ticket for the cookie round too', () => {
    const base = ["--psk-identity", "h", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(listen(...base).dtlsCookieAlways, undefined, "transport default: a ticket is answered at once");
    assert.equal(listen(...base, "--dtls-cookie-always").dtlsCookieAlways, true);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      const cfg = path.join(dir, "c.json");
      const withSetting = (value: unknown): ListenConfig => {
        fs.writeFileSync(
          cfg,
          JSON.stringify({ psk: [{ identity: "h", key: "text:sixteen-byte-key", home: "h" }], dtlsCookieAlways: value }),
        );
        return parseListenArgs(["--config", cfg]) as ListenConfig;
      };
      assert.equal(withSetting(true).dtlsCookieAlways, true);
      assert.equal(withSetting(false).dtlsCookieAlways, false);
      assert.throws(() => withSetting("yes"), CliUsageError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it("listen --max-tcp-per-address raises the per-source TCP cap (homes behind one CGN address); bad values are usage errors", () => {
    const base = ["--psk-identity", "h", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "203.0.113.0/24"];
    assert.equal(listen(...base).maxTcpPerAddress, undefined, "engine default (256) unless asked");
    assert.equal(listen(...base, "--max-tcp-per-address", "5000").maxTcpPerAddress, 5000);
    assert.throws(() => listen(...base, "--max-tcp-per-address", "0"), CliUsageError);
    assert.throws(() => listen(...base, "--max-tcp-per-address", "1.5"), CliUsageError);
  });
});

describe("cli/args: one set of rules and defaults with the nodes", () => {
  const K = ["--psk-identity", "home-1", "--psk-key", "text:sixteen-byte-key"];

  it("every millisecond option takes a bare number or a unit (ms, s, m, h); heartbeat-interval takes seconds the same way", () => {
    for (const [written, expected] of [
      ["1500", 1500],
      ["1500ms", 1500],
      ["1.5s", 1500],
      ["2m", 120_000],
      ["1h", 3_600_000],
    ] as const) {
      const l = listen(
        ...K,
        "--drop-window-ms",
        written,
        "--drop-ban-ms",
        written,
        "--request-timeout-ms",
        written,
        ...(expected <= 600_000 ? ["--request-repeat-ms", written] : []),
      );
      assert.deepEqual(
        [l.options.dropList?.windowMs, l.options.dropList?.banMs, l.requestTimeoutMs],
        [expected, expected, expected],
        written,
      );
      if (expected <= 600_000) assert.equal(l.requestRepeatMs, expected);
      const d = dial(
        "h",
        ...K,
        "--home-prefix",
        "198.51.100.0/24",
        "--decision-wait",
        written,
        "--reconnect-min",
        written,
        "--reconnect-max",
        written,
        "--terminating-period",
        written,
        "--enforce",
        "dry-run",
        "--consent",
        "manual",
        "--consent-timeout",
        written,
      );
      assert.deepEqual(
        [
          d.options.decisionWaitMs,
          d.options.reconnect?.minMs,
          d.options.reconnect?.maxMs,
          d.terminatingPeriodMs,
          d.enforcement?.consentTimeoutMs,
        ],
        [expected, expected, expected, expected, expected],
        written,
      );
    }
    assert.equal(dial("h", ...K, "--home-prefix", "198.51.100.0/24", "--heartbeat-interval", "45").options.heartbeatInterval, 45);
    assert.equal(dial("h", ...K, "--home-prefix", "198.51.100.0/24", "--heartbeat-interval", "2m").options.heartbeatInterval, 120);
    for (const bad of ["1.5", "5 days", "-1", "1e3", "s", ""]) {
      assert.throws(
        () => dial("h", ...K, "--home-prefix", "198.51.100.0/24", "--decision-wait", bad),
        /--decision-wait needs a duration such as 1500, 1500ms, 1.5s, 5m or 1h/,
        bad,
      );
    }
    assert.throws(() => dial("h", ...K, "--home-prefix", "198.51.100.0/24", "--heartbeat-interval", "1500ms"), /whole number of seconds/);
    assert.throws(
      () => dial("h", ...K, "--home-prefix", "198.51.100.0/24", "--decision-wait", "2h"),
      /decision-wait must be an integer in 0\.\.3600000/,
    );
  });

  it("--config durations: milliseconds as numbers, or text with a unit", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-"));
    try {
      const cfg = path.join(dir, "c.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          hosts: ["isp"],
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.0/24"],
          decisionWaitMs: "2s",
          terminatingPeriodMs: 500,
          heartbeatInterval: "1m",
          reconnect: { minMs: "1s", maxMs: "1m" },
        }),
      );
      const d = parseDialArgs(["--config", cfg]) as DialConfig;
      assert.deepEqual(
        [d.options.decisionWaitMs, d.terminatingPeriodMs, d.options.heartbeatInterval, d.options.reconnect],
        [2000, 500, 60, { minMs: 1000, maxMs: 60_000 }],
      );
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          hosts: ["isp"],
          psk: { identity: "h", key: "text:sixteen-byte-key" },
          homePrefixes: ["198.51.100.0/24"],
          decisionWaitMs: "soon",
        }),
      );
      assert.throws(() => parseDialArgs(["--config", cfg]), /decision-wait must be a duration/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("defaults come from src/dots/defaults.ts, and --help states the same numbers", () => {
    const l = listen(...K);
    assert.deepEqual(l.options.dropList, {
      maxFailures: DEFAULTS.dropAfterFailures,
      windowMs: DEFAULTS.dropWindowMs,
      banMs: DEFAULTS.dropBanMs,
    });
    assert.equal(l.options.port, DEFAULTS.port);
    assert.match(HELP, new RegExp(`--decision-wait MS .*\\(default ${DEFAULTS.decisionWaitMs}\\)`));
    assert.match(HELP, new RegExp(`--drop-ban-ms MS .*\\(default ${DEFAULTS.dropBanMs}\\)`));
    assert.match(HELP, new RegExp(`--drop-after N .*\\(default ${DEFAULTS.dropAfterFailures}\\)`));
    assert.match(HELP, new RegExp(`--reconnect-min MS .*\\(default ${DEFAULTS.reconnectMinMs},`));
    assert.match(HELP, new RegExp(`\\(default ${DEFAULTS.terminatingPeriodMs}, RFC 9132`));
    assert.match(HELP, new RegExp(`--heartbeat-interval S [^\\n]*\\(default ${DEFAULTS.heartbeatIntervalS}\\)`));
    assert.match(
      HELP,
      new RegExp(`--max-handshakes-per-source N\\s+DTLS handshakes [^\\n]*\\n\\s+\\(default ${DEFAULTS.maxHandshakesPerSource}\\)`),
    );
  });

  it("home prefixes follow the runtime's parser on both commands: bad address, length, host bits, no length", () => {
    for (const [prefix, re] of [
      ["300.1.1.1/24", /"300\.1\.1\.1" is not a valid IPv4/],
      ["203.0.113.0/99", /prefix length 99 exceeds 32/],
      ["2001:db8::/129", /prefix length 129 exceeds 128/],
      ["203.0.113.7/24", /host bits set; did you mean 203\.0\.113\.0\/24/],
      ["203.0.113.0", /not a prefix: expected address\/length/],
      [":/64", /not a valid IPv4 .* or IPv6 address/],
      ["1.2.3.4:5/32", /not a valid IPv4 .* or IPv6 address/],
    ] as const) {
      assert.throws(
        () => listen(...K, "--home-prefix", prefix),
        (e: unknown) => e instanceof CliUsageError && /--home-prefix/.test(e.message) && re.test(e.message),
        `listen ${prefix}`,
      );
      assert.throws(
        () => listen(...K, "--home-prefix", `other=${prefix}`),
        (e: unknown) => e instanceof CliUsageError && re.test(e.message),
        `listen other=${prefix}`,
      );
      assert.throws(
        () => dial("h", ...K, "--home-prefix", prefix),
        (e: unknown) => e instanceof CliUsageError && re.test(e.message),
        `dial ${prefix}`,
      );
    }
    // written the canonical way (RFC 5952) for the engines
    assert.deepEqual(listen(...K, "--home-prefix", "2001:DB8:0:0::/32").options.homePrefixes, { "home-1": ["2001:db8::/32"] });
  });

  it("a PSK key under 128 bits and an empty or over-long identity are refused on both commands, from flags, files and --config", () => {
    for (const key of ["text:short", "hex:0102030405", "0102030405", "text:fifteen-bytes!"]) {
      assert.throws(() => listen("--psk-identity", "h", "--psk-key", key), /at least 128 bits \(16 bytes, 32 hex digits\)/, key);
      assert.throws(() => dial("h", "--psk-identity", "h", "--psk-key", key, "--home-prefix", "198.51.100.0/24"), /at least 128 bits/, key);
    }
    assert.equal(
      listen("--psk-identity", "h", "--psk-key", "hex:000102030405060708090a0b0c0d0e0f").options.psk?.[0].key.length,
      MIN_PSK_KEY_BYTES,
    );
    assert.throws(() => listen("--psk-identity", "x".repeat(129), "--psk-key", "text:sixteen-byte-key"), /longer than 128/);
    const saved = files["/x/short.txt"];
    files["/x/short.txt"] = "hex:0a0b0c\n";
    try {
      assert.throws(() => listen("--psk-identity", "h", "--psk-file", "/x/short.txt"), /24 bits; at least 128 bits/);
    } finally {
      if (saved === undefined) delete files["/x/short.txt"];
    }
  });
});
