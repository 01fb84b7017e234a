// Drives two real `dots-call-home` processes (listen and dial) through their stdin/stdout over
// loopback DTLS-PSK: JSON commands in, one JSON event per line out.
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { makeTestPki } from "../support/certs";
import { CLI_MAIN, CliProcess, type CliLine } from "../support/cli-process";
import { startTestDns, type TestDnsServer } from "../nodes/dns-server";

const PSK = ["--psk-identity", "home-1", "--psk-key", "text:secretPSK-0123456789"];

describe("dots-call-home command (two processes over stdin/stdout)", function () {
  this.timeout(30000);
  const procs: CliProcess[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
  });

  it("--help documents both commands and exits 0", () => {
    const r = spawnSync(process.execPath, [CLI_MAIN, "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /dots-call-home listen/);
    assert.match(r.stdout, /dots-call-home dial/);
    assert.match(r.stdout, /--auto-decide/);
  });

  it("--version prints the package.json version, alone or after a command, and exits 0", () => {
    const version = (JSON.parse(fs.readFileSync(path.join(__dirname, "../../../package.json"), "utf8")) as { version: string }).version;
    for (const args of [["--version"], ["listen", "--version"], ["dial", "--version"]]) {
      const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { encoding: "utf8" });
      assert.equal(r.status, 0, args.join(" "));
      assert.equal(r.stdout, `dots-call-home ${version}\n`);
    }
  });

  it("refuses an impossible home prefix and a short PSK key before listening, as dial does (exit 2, words)", () => {
    for (const [args, re] of [
      [["listen", ...PSK, "--home-prefix", "300.1.1.1/24"], /--home-prefix 300\.1\.1\.1\/24: "300\.1\.1\.1" is not a valid IPv4/],
      [["listen", ...PSK, "--home-prefix", "203.0.113.0/99"], /prefix length 99 exceeds 32/],
      [["dial", "127.0.0.1", ...PSK, "--home-prefix", "203.0.113.0/99"], /prefix length 99 exceeds 32/],
      [
        ["listen", "--psk-identity", "home-1", "--psk-key", "text:short", "--home-prefix", "203.0.113.0/24"],
        /PSK key is 40 bits; at least 128 bits/,
      ],
      [
        ["dial", "127.0.0.1", "--psk-identity", "home-1", "--psk-key", "0102030405", "--home-prefix", "203.0.113.0/24"],
        /PSK key is 40 bits/,
      ],
    ] as const) {
      const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { encoding: "utf8" });
      assert.equal(r.status, 2, args.join(" "));
      const line = JSON.parse(r.stdout.trim().split("\n")[0]) as CliLine;
      assert.equal(line.event, "error");
      assert.equal(line.code, "USAGE");
      assert.match(String(line.message), re);
    }
  });

  it("a wrong PSK in words on both processes; the listener's ban and its end as drop / drop-end lines with ISO times", async () => {
    const isp = new CliProcess([
      "listen",
      "--dtls",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      ...PSK,
      "--home-prefix",
      "203.0.113.0/24",
      "--drop-after",
      "2",
      "--drop-ban-ms",
      "2s",
    ]);
    procs.push(isp);
    const port = (await isp.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
    const home = new CliProcess([
      "dial",
      "127.0.0.1",
      "--port",
      String(port),
      "--transport",
      "udp",
      "--psk-identity",
      "home-1",
      "--psk-key",
      "text:not-the-right-key-0123",
      "--home-prefix",
      "203.0.113.0/24",
      "--reconnect-min",
      "100ms",
      "--reconnect-max",
      "0.2s",
    ]);
    procs.push(home);
    const down = await home.waitFor((l) => l.event === "disconnected", 15000, "disconnected");
    assert.equal(down.code, "PSK_MISMATCH");
    assert.match(String(down.reason), /the PSK key for identity "home-1" does not match the ISP's/);
    const failure = await isp.waitFor((l) => l.event === "auth-failure", 5000, "auth-failure");
    assert.equal(failure.reason, "PSK_MISMATCH");
    assert.match(String(failure.message), /home "home-1" presented a PSK key that does not match \(identity home-1/);
    assert.equal(failure.detail, "dtls: bad-finished");
    const drop = await isp.waitFor((l) => l.event === "drop", 15000, "drop");
    const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
    assert.match(String(drop.since), iso);
    assert.match(String(drop.until), iso);
    assert.equal(drop.failures, 2);
    assert.equal(drop.banSeconds, 2);
    assert.equal(drop.lastReason, "PSK_MISMATCH");
    assert.equal(drop.home, "home-1");
    await home.stop();
    const end = await isp.waitFor((l) => l.event === "drop-end", 5000, "drop-end");
    assert.equal(end.remoteAddress, "127.0.0.1");
    assert.match(String(end.until), iso);
  });

  it("refuses a bad flag with an error line and exit code 2", () => {
    const r = spawnSync(process.execPath, [CLI_MAIN, "listen", "--bogus"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    const line = JSON.parse(r.stdout.trim().split("\n")[0]) as CliLine;
    assert.equal(line.event, "error");
    assert.match(String(line.message), /--bogus/);
  });

  it("listen + dial: session up, mitigate -> auto decision -> 2.01, status, withdraw, bad input survives, clean stop", async () => {
    const isp = new CliProcess([
      "listen",
      "--dtls",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      ...PSK,
      "--home-prefix",
      "203.0.113.0/24",
      "--request-repeat-ms",
      "200",
      "--request-timeout-ms",
      "5000",
    ]);
    procs.push(isp);
    const listening = await isp.waitFor((l) => l.event === "listening", 10000, "listening");
    const port = listening.port as number;
    assert.ok(port > 0);

    const home = new CliProcess([
      "dial",
      "127.0.0.1",
      "--port",
      String(port),
      "--transport",
      "udp",
      ...PSK,
      "--home-prefix",
      "203.0.113.0/24",
      "--auto-decide",
      "enforced",
      "--heartbeat-interval",
      "1",
      "--reconnect-min",
      "100",
      "--reconnect-max",
      "500",
    ]);
    procs.push(home);
    const up = await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
    assert.equal((up.session as Record<string, unknown>).home, "home-1");
    await home.waitFor((l) => l.event === "connected", 5000, "connected");

    // A bare scope is accepted by the CLI and wrapped into the JSON view.
    isp.send({
      cmd: "mitigate",
      id: "m1",
      session: "home-1",
      request: { "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 },
    });
    const res = await isp.waitFor((l) => l.event === "response" && l.id === "m1", 10000, "mitigate response");
    const outcome = res.outcome as Record<string, unknown>;
    assert.equal(outcome.code, "2.01");
    const mid = outcome.mid as number;
    const got = await home.waitFor((l) => l.event === "mitigation" && l.mid === mid, 5000, "mitigation at the home");
    assert.equal(got.kind, "new");
    await home.waitFor((l) => l.event === "decision" && l.mid === mid && l.outcome === "enforced", 5000, "decision");
    await isp.waitFor((l) => l.event === "status" && l.mid === mid, 5000, "status notification");

    // Bad lines become error events; the process carries on.
    isp.send("{this is not json");
    await isp.waitFor((l) => l.event === "error" && l.code === "BAD_JSON", 5000, "BAD_JSON");
    isp.send({ cmd: "mitigate", id: "bad", session: "nobody", request: {} });
    await isp.waitFor((l) => l.event === "error" && l.id === "bad", 5000, "error for bad command");
    isp.send({ cmd: "sessions", id: "s" });
    const sessions = await isp.waitFor((l) => l.event === "sessions" && l.id === "s", 5000, "sessions");
    assert.equal((sessions.sessions as unknown[]).length, 1);
    home.send({ cmd: "decide", mid: 424242, outcome: "enforced" });
    await home.waitFor((l) => l.event === "error" && l.cmd === "decide", 5000, "decide error");
    home.send({ cmd: "mitigations", id: "list" });
    const list = await home.waitFor((l) => l.event === "mitigations" && l.id === "list", 5000, "mitigations");
    assert.ok((list.mitigations as Array<{ mid: number }>).some((m) => m.mid === mid));

    isp.send({ cmd: "withdraw", id: "w", session: "home-1", mid });
    const w = await isp.waitFor((l) => l.event === "response" && l.id === "w", 10000, "withdraw response");
    assert.equal((w.outcome as Record<string, unknown>).code, "2.02");

    // SIGTERM: clean stop, a final "stopped" line, exit 0.
    assert.equal(await home.stop(), 0);
    assert.ok(home.lines.some((l) => l.event === "stopped"));
    await isp.waitFor((l) => l.event === "session-down", 15000, "session-down");
    assert.equal(await isp.stop(), 0);
    assert.ok(isp.lines.some((l) => l.event === "stopped"));
    assert.ok(
      isp.lines.every((l) => l.event !== "__not-json__"),
      "every stdout line is JSON",
    );
  });

  it("dial --enforce dry-run: lookup, consent on stdin, scripts printed, outcomes become the ISP's statuses, withdrawal removes the block", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-enf-"));
    try {
      const nat = path.join(dir, "nat.json");
      fs.writeFileSync(
        nat,
        JSON.stringify([
          {
            protocol: "udp",
            device: "192.168.1.10",
            devicePort: 40001,
            public: "198.51.100.2",
            publicPort: 61001,
            target: "203.0.113.5",
            targetPort: 5555,
            mac: "02:00:00:00:00:10",
          },
        ]),
      );
      const isp = new CliProcess([
        "listen",
        "--dtls",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        ...PSK,
        "--home-prefix",
        "198.51.100.0/24",
        "--request-repeat-ms",
        "200",
        "--request-timeout-ms",
        "5000",
      ]);
      procs.push(isp);
      const port = (await isp.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
      const home = new CliProcess([
        "dial",
        "127.0.0.1",
        "--port",
        String(port),
        "--transport",
        "udp",
        ...PSK,
        "--home-prefix",
        "198.51.100.0/24",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
        "--terminating-period",
        "300",
        "--enforce",
        "dry-run",
        "--nat",
        `static:${nat}`,
        "--consent",
        "manual",
        "--consent-timeout",
        "60000",
        "--nft-table",
        "cli_test",
      ]);
      procs.push(home);
      const ready = await home.waitFor((l) => l.event === "enforcer-ready", 10000, "enforcer-ready");
      assert.deepEqual([ready.backend, ready.table, ready.action, ready.nat], ["dry-run", "cli_test", "block", "static"]);
      await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
      const scope = (port: number, lifetime = 600) => ({
        "target-prefix": ["203.0.113.5/32"],
        "target-port-range": [{ "lower-port": 5555 }],
        "target-protocol": [17],
        "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": port }],
        lifetime,
      });
      const body = (l: CliLine) => JSON.stringify(l.outcome ?? l.body);

      // 1: consent asked, the PUT answered status 1, the admin rejects -> conflict-cause 4 at the ISP
      isp.send({ cmd: "mitigate", id: "r", session: "home-1", request: scope(61001) });
      const r1 = await isp.waitFor((l) => l.event === "response" && l.id === "r", 10000, "response to the first request");
      const mid1 = (r1.outcome as { mid: number }).mid;
      assert.equal((r1.outcome as { code: string }).code, "2.01");
      assert.match(body(r1), /attack-mitigation-in-progress/);
      const found = await home.waitFor((l) => l.event === "lookup" && l.mid === mid1, 5000, "lookup");
      assert.equal(found.found, true);
      assert.deepEqual(
        (found.devices as Array<Record<string, unknown>>).map((d) => [d.address, d.mac, d.ports, d.publicPorts]),
        [["192.168.1.10", "02:00:00:00:00:10", [40001], [61001]]],
      );
      const asked = await home.waitFor((l) => l.event === "consent-request" && l.mid === mid1, 5000, "consent-request");
      assert.match(
        String(asked.script),
        /add element inet cli_test block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/,
      );
      assert.ok(!home.lines.some((l) => l.event === "enforcement"), "nothing applied before consent");
      home.send({ cmd: "approve", mid: 999 });
      await home.waitFor(
        (l) => l.event === "error" && l.cmd === "approve" && /no mitigation with mid 999/.test(String(l.message)),
        5000,
        "approve of an unknown mid refused",
      );
      home.send({ cmd: "decide", mid: mid1, outcome: "enforced" });
      await home.waitFor(
        (l) => l.event === "error" && l.cmd === "decide" && /enforcer decides/.test(String(l.message)),
        5000,
        "decide refused under --enforce",
      );
      home.send({ cmd: "reject", mid: mid1 });
      await home.waitFor((l) => l.event === "consent" && l.mid === mid1 && l.answer === "rejected", 5000, "consent echo");
      const legit = await home.waitFor(
        (l) => l.event === "decision" && l.mid === mid1 && l.outcome === "legitimate",
        5000,
        "legitimate decision",
      );
      assert.equal(legit.reason, "consent-rejected");
      const note = await isp.waitFor(
        (l) => l.event === "status" && l.mid === mid1 && l.conflictCause !== undefined,
        5000,
        "conflict notification",
      );
      assert.match(String(note.conflictCause), /legitimate/);
      assert.ok(!home.lines.some((l) => l.event === "enforcement"), "a rejected mitigation applies nothing");

      // the home's 4.09 carried retry-timer: the ISP holds the very same scope back (R39)
      isp.send({ cmd: "mitigate", id: "again", session: "home-1", request: scope(61001) });
      const held = await isp.waitFor((l) => l.event === "error" && l.id === "again", 5000, "the resend held back");
      assert.equal(held.code, "RETRY_TIMER");

      // 2: a new request (another source-port range) approved -> the script is applied (dry-run)
      // -> status 2; withdrawal removes exactly it
      const wider = { ...scope(61001), "ietf-dots-call-home:source-port-range": [{ "lower-port": 61001, "upper-port": 61002 }] };
      isp.send({ cmd: "mitigate", id: "a", session: "home-1", request: wider });
      const r2 = await isp.waitFor((l) => l.event === "response" && l.id === "a", 10000, "response to the second request");
      const mid2 = (r2.outcome as { mid: number }).mid;
      await home.waitFor((l) => l.event === "consent-request" && l.mid === mid2, 5000, "second consent-request");
      home.send({ cmd: "approve", id: 7, mid: mid2 });
      const added = await home.waitFor(
        (l) => l.event === "enforcement" && l.mid === mid2 && l.change === "added",
        5000,
        "enforcement added",
      );
      assert.match(String(added.script), /192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/);
      const enforced = await home.waitFor(
        (l) => l.event === "decision" && l.mid === mid2 && l.outcome === "enforced",
        5000,
        "enforced decision",
      );
      assert.equal(enforced.script, added.script);
      await isp.waitFor(
        (l) => l.event === "status" && l.mid === mid2 && l.status === "attack-successfully-mitigated",
        5000,
        "status 2 at the ISP",
      );
      home.send({ cmd: "mitigations", id: "m" });
      const list = await home.waitFor((l) => l.event === "mitigations" && l.id === "m", 5000, "mitigations");
      assert.deepEqual(
        (list.enforced as Array<{ mid: number }>).map((x) => x.mid),
        [mid2],
      );
      isp.send({ cmd: "withdraw", id: "w", session: "home-1", mid: mid2 });
      const removed = await home.waitFor(
        (l) => l.event === "enforcement" && l.mid === mid2 && l.change === "removed",
        5000,
        "enforcement removed",
      );
      assert.match(String(removed.script), /delete element inet cli_test block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 \}/);

      // 3: nothing behind the NAT matches -> failed, status 4 (attack-exceeded-capability)
      isp.send({ cmd: "mitigate", id: "n", session: "home-1", request: scope(61999) });
      const r3 = await isp.waitFor((l) => l.event === "response" && l.id === "n", 10000, "response to the third request");
      const mid3 = (r3.outcome as { mid: number }).mid;
      const miss = await home.waitFor((l) => l.event === "lookup" && l.mid === mid3, 5000, "lookup miss");
      assert.equal(miss.found, false);
      const failed = await home.waitFor((l) => l.event === "decision" && l.mid === mid3, 5000, "failed decision");
      assert.deepEqual([failed.outcome, failed.reason], ["failed", "no-device"]);
      assert.ok(
        body(r3).includes("attack-exceeded-capability") ||
          (await isp.waitFor((l) => l.event === "status" && l.mid === mid3 && l.status === "attack-exceeded-capability", 5000, "status 4")),
      );

      assert.equal(await home.stop(), 0);
      assert.equal(await isp.stop(), 0);
      assert.ok([...home.lines, ...isp.lines].every((l) => l.event !== "__not-json__"));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("dial --discover-domain: finds the ISP by SRV on a loopback DNS server, prints discovered, connects to the port the record names", async () => {
    let dns: TestDnsServer | undefined;
    try {
      const isp = new CliProcess(["listen", "--dtls", "--host", "127.0.0.1", "--port", "0", ...PSK, "--home-prefix", "203.0.113.0/24"]);
      procs.push(isp);
      const port = (await isp.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
      dns = await startTestDns({
        srv: { "_dots-call-home._udp.isp.test": [{ priority: 0, weight: 0, port, target: "ch.isp.test" }] },
        a: { "ch.isp.test": ["127.0.0.1"] },
      });
      // --port 9 (discard) would never answer: the SRV record's port must win
      const home = new CliProcess([
        "dial",
        "--discover-domain",
        "isp.test",
        "--dns-server",
        dns.server,
        "--port",
        "9",
        "--transport",
        "udp",
        ...PSK,
        "--home-prefix",
        "203.0.113.0/24",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
      ]);
      procs.push(home);
      const found = await home.waitFor((l) => l.event === "discovered", 10000, "discovered");
      assert.equal(found.domain, "isp.test");
      assert.deepEqual(found.candidates, [{ host: "ch.isp.test", address: "127.0.0.1", port, transport: "dtls" }]);
      assert.ok(typeof found.time === "string");
      const connected = await home.waitFor((l) => l.event === "connected", 15000, "connected");
      assert.equal(connected.remotePort, port);
      assert.ok(home.lines.indexOf(found) < home.lines.indexOf(connected), "discovered is printed before connected");
      assert.ok(dns.queries.includes("SRV _dots-call-home._udp.isp.test"), dns.queries.join(","));
      await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
      assert.equal(await home.stop(), 0);
      assert.equal(await isp.stop(), 0);
    } finally {
      await dns?.close();
    }
  });

  it("dial without HOST and without --discover-domain is refused with an error line and exit code 2", () => {
    const r = spawnSync(process.execPath, [CLI_MAIN, "dial", ...PSK, "--home-prefix", "203.0.113.0/24"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    const line = JSON.parse(r.stdout.trim().split("\n")[0]) as CliLine;
    assert.equal(line.event, "error");
    assert.match(String(line.message), /needs the ISP's address.*--discover-domain/);
  });

  it("dial --enforce refuses to start when the NAT table is unusable, with an error line and exit 1", async () => {
    const home = new CliProcess([
      "dial",
      "127.0.0.1",
      "--port",
      "9",
      ...PSK,
      "--home-prefix",
      "198.51.100.0/24",
      "--enforce",
      "dry-run",
      "--nat",
      "static:/nonexistent/nat.json",
    ]);
    procs.push(home);
    const err = await home.waitFor((l) => l.event === "error", 10000, "error");
    assert.match(String(err.message), /nonexistent\/nat\.json/);
    assert.equal(await home.exited, 1);
    assert.ok(!home.lines.some((l) => l.event === "connecting"), "no session attempt with a broken enforcer");
  });

  it("listen from a JSON --config with certificates, dial with --cert/--key/--ca over TLS", async () => {
    const pki = await makeTestPki();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-cfg-"));
    try {
      const cfg = path.join(dir, "listen.json");
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          port: 0,
          host: "127.0.0.1",
          tls: true,
          dtls: false,
          cert: pki.isp.certPath,
          key: pki.isp.keyPath,
          ca: pki.ca.certPath,
          homePrefixes: { "home-1.example": ["203.0.113.0/24"] },
          requestRepeatMs: 200,
        }),
      );
      const isp = new CliProcess(["listen", "--config", cfg]);
      procs.push(isp);
      const listening = await isp.waitFor((l) => l.event === "listening", 10000, "listening");
      assert.deepEqual(listening.transports, ["tls"]);
      const home = new CliProcess([
        "dial",
        "127.0.0.1",
        "--port",
        String(listening.port),
        "--transport",
        "tcp",
        "--cert",
        pki.home1.certPath,
        "--key",
        pki.home1.keyPath,
        "--ca",
        pki.ca.certPath,
        "--servername",
        "localhost",
        "--home-prefix",
        "203.0.113.0/24",
        "--auto-decide",
        "enforced",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
      ]);
      procs.push(home);
      const up = await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
      const session = up.session as Record<string, unknown>;
      assert.equal(session.home, "home-1.example");
      assert.equal(session.transport, "tls");
      isp.send({
        cmd: "mitigate",
        id: 1,
        session: session.id,
        request: {
          "ietf-dots-signal-channel:mitigation-scope": {
            scope: [{ "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 60 }],
          },
        },
      });
      const res = await isp.waitFor((l) => l.event === "response" && l.id === 1, 10000, "response");
      assert.equal((res.outcome as Record<string, unknown>).code, "2.01");
      assert.equal(await home.stop(), 0);
      assert.equal(await isp.stop(), 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
