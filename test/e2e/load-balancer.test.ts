// scripts/lb/dots-lb.sh in network namespaces: three listener processes behind one address
// (nftables DNAT, conntrack keeps each flow on its backend), homes over DTLS and TLS from another
// namespace; kill -9 of one listener, the health check drops it from the map and its homes come
// back on the others. Real kernel, real nft and conntrack; no traffic leaves the namespaces.
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CliProcess } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { repoRoot } from "../support/paths";

const LB = path.join(repoRoot(), "scripts", "lb", "dots-lb.sh");
const VIP = "10.8.0.100";
const BACKENDS = ["10.9.0.11", "10.9.0.12", "10.9.0.13"];
const HOMES = Array.from({ length: 6 }, (_, i) => ({
  identity: `home-${i + 1}`,
  key: `text:secret-home-${i + 1}-0123456789`,
  prefix: `203.0.${113 + i}.0/24`,
  transport: i % 2 === 0 ? "udp" : "tcp",
}));

function sh(args: string[], input?: string): string {
  const r = spawnSync(args[0], args.slice(1), { encoding: "utf8", input });
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

describe("scripts/lb/dots-lb.sh: listeners behind one address (netns, nftables DNAT, conntrack)", function () {
  this.timeout(120000);
  const base = `dlb-${process.pid}`;
  const ns = { lb: `${base}-lb`, homes: `${base}-homes` };
  const procs: CliProcess[] = [];
  let dir = "";
  let made = false;

  before(function () {
    requireOrSkip(
      this,
      "root, ip, nft, conntrack and bash",
      isRoot() && hasCommand("ip") && hasCommand("nft") && hasCommand("conntrack") && hasCommand("bash"),
    );
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-lb-"));
    for (const n of Object.values(ns)) {
      sh(["ip", "netns", "add", n]);
      sh(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"]);
    }
    made = true;
    sh(["ip", "link", "add", "eth0", "netns", ns.homes, "type", "veth", "peer", "name", "eth0", "netns", ns.lb]);
    const lb = (...a: string[]) => sh(["ip", "netns", "exec", ns.lb, ...a]);
    lb("ip", "addr", "add", "10.8.0.1/24", "dev", "eth0");
    lb("ip", "addr", "add", `${VIP}/32`, "dev", "eth0");
    lb("ip", "link", "set", "eth0", "up");
    for (const b of BACKENDS) lb("ip", "addr", "add", `${b}/32`, "dev", "lo"); // one address per listener process
    const homes = (...a: string[]) => sh(["ip", "netns", "exec", ns.homes, ...a]);
    homes("ip", "addr", "add", "10.8.0.2/24", "dev", "eth0");
    homes("ip", "link", "set", "eth0", "up");
  });

  after(async () => {
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
    if (made) for (const n of Object.values(ns)) spawnSync("ip", ["netns", "del", n]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("spreads homes over three listeners (round robin), keeps the homes' own addresses, and moves the homes of a killed listener to the others", async () => {
    const cfg = path.join(dir, "listen.json");
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        psk: HOMES.map((h) => ({ identity: h.identity, key: h.key, home: h.identity })),
        homePrefixes: Object.fromEntries(HOMES.map((h) => [h.identity, [h.prefix]])),
      }),
    );
    const listeners = BACKENDS.map(
      (addr) => new CliProcess(["listen", "--config", cfg, "--host", addr, "--port", "4647"], { netns: ns.lb, name: `listen-${addr}` }),
    );
    procs.push(...listeners);
    for (const l of listeners) await l.waitFor((x) => x.event === "listening", 15000, "listening");

    const applied = JSON.parse(
      sh(["ip", "netns", "exec", ns.lb, LB, "apply", "--vip", VIP, "--mode", "rr", ...BACKENDS.flatMap((b) => ["--backend", b])]),
    ) as { live: string[] };
    assert.deepEqual(
      applied.live,
      BACKENDS.map((b) => `${b}:4647`),
    );

    const dial = (h: (typeof HOMES)[number]) =>
      new CliProcess(
        [
          "dial",
          VIP,
          "--transport",
          h.transport,
          "--psk-identity",
          h.identity,
          "--psk-key",
          h.key,
          "--home-prefix",
          h.prefix,
          "--heartbeat-interval",
          "1",
          "--reconnect-min",
          "200",
          "--reconnect-max",
          "1000",
        ],
        { netns: ns.homes, name: `dial-${h.identity}` },
      );
    for (const h of HOMES) {
      // started one at a time: round robin counts new flows, so each listener gets one DTLS and one TLS home
      const d = dial(h);
      procs.push(d);
      await d.waitFor((x) => x.event === "connected", 20000, "connected");
    }
    const upAt = (h: string, among: CliProcess[], ms: number) =>
      Promise.any(
        among.map((l) => l.waitFor((x) => x.event === "session-up" && (x.session as { home?: string }).home === h, ms, `${h} up`)),
      );
    for (const h of HOMES) await upAt(h.identity, listeners, 15000);
    const holders = new Map<string, number>();
    for (const h of HOMES) {
      const i = listeners.findIndex((l) =>
        l.lines.some((x) => x.event === "session-up" && (x.session as { home?: string }).home === h.identity),
      );
      assert.ok(i >= 0, `${h.identity} has a session`);
      holders.set(h.identity, i);
    }
    assert.deepEqual(
      [0, 1, 2].map((i) => [...holders.values()].filter((x) => x === i).length),
      [2, 2, 2],
      "two homes per listener",
    );
    for (const i of [0, 1, 2])
      assert.deepEqual(
        HOMES.filter((h) => holders.get(h.identity) === i)
          .map((h) => h.transport)
          .sort(),
        ["tcp", "udp"],
        `listener ${i} holds one DTLS and one TLS home`,
      );
    for (const l of listeners)
      for (const x of l.lines.filter((y) => y.event === "session-up"))
        assert.equal((x.session as { remoteAddress?: string }).remoteAddress, "10.8.0.2", "DNAT keeps the home's address");

    // kill -9 the first listener; the health check drops it and forgets its flows
    listeners[0].child.kill("SIGKILL");
    await listeners[0].exited;
    const flowsTo = (addr: string) =>
      spawnSync("ip", ["netns", "exec", ns.lb, "conntrack", "-L", "-p", "udp", "--reply-src", addr], { encoding: "utf8" })
        .stdout.split("\n")
        .filter((l) => l.includes("dport=4647")).length;
    assert.ok(flowsTo(BACKENDS[0]) > 0, "the dead backend's DTLS flow is still in conntrack before the check");
    const checked = JSON.parse(
      sh(["ip", "netns", "exec", ns.lb, LB, "check", "--vip", VIP, "--mode", "rr", ...BACKENDS.flatMap((b) => ["--backend", b])]),
    ) as { live: string[]; dead: string[] };
    assert.deepEqual(checked.dead, [`${BACKENDS[0]}:4647`]);
    assert.deepEqual(
      checked.live,
      BACKENDS.slice(1).map((b) => `${b}:4647`),
    );
    const ruleset = sh(["ip", "netns", "exec", ns.lb, "nft", "list", "table", "ip", "dots_lb"]);
    assert.ok(!ruleset.includes(BACKENDS[0]), "the dead backend is out of the map");
    assert.match(ruleset, /numgen inc mod 2 map/);
    assert.equal(flowsTo(BACKENDS[0]), 0, "the check forgot the dead backend's flows");

    const moved = HOMES.filter((h) => holders.get(h.identity) === 0);
    assert.equal(moved.length, 2);
    const t0 = Date.now();
    for (const h of moved) {
      await upAt(h.identity, listeners.slice(1), 90000);
    }
    console.log(
      `      (the killed listener's ${moved.length} homes (${moved.map((h) => h.transport).join(", ")}) were back after ${((Date.now() - t0) / 1000).toFixed(1)} s)`,
    );
    // the others kept their sessions the whole time
    for (const h of HOMES.filter((x) => holders.get(x.identity) !== 0)) {
      const l = listeners[holders.get(h.identity) as number];
      assert.ok(
        !l.lines.some((x) => x.event === "session-down" && (x.session as { home?: string }).home === h.identity),
        `${h.identity} stayed up`,
      );
    }
    const teardown = JSON.parse(sh(["ip", "netns", "exec", ns.lb, LB, "teardown"])) as { action: string };
    assert.equal(teardown.action, "teardown");
    assert.equal(spawnSync("ip", ["netns", "exec", ns.lb, "nft", "list", "table", "ip", "dots_lb"]).status, 1, "the table is gone");
  });
});
