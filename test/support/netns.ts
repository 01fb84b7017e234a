// A home network in network namespaces, created and removed by the tests that need it:
//   lan (IoT device 192.168.1.10, 2001:db8:1::10)    lan2 (second host 192.168.1.11)
//        \                                           /
//         br0 192.168.1.1 [router] wan 198.51.100.2 (masquerade in its own nft nat table)
//                              |
//            [isp] 198.51.100.1, victim 203.0.113.5 / 2001:db8:c000::5 on its loopback
// The victim counts UDP packets per sender (payload tag) and records the source address/port
// the attack arrives from, as an ISP detector would. No traffic leaves these namespaces.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { CommandRunner, netnsRunner } from "../../src/home/runner";

let seq = 0;

export interface Lab {
  ns: { lan: string; lan2: string; router: string; isp: string };
  router: CommandRunner;
  isp: CommandRunner;
  deviceMac: string;
  /** Packets counted at the victim from the device ("dev", IPv6: "dev6"), the other host ("other"), and to port 7777 ("probe"). */
  counters(): Promise<{ dev: number; other: number; dev6: number; probe: number }>;
  /** Source address and port the device's flood arrives from at the ISP (after NAT). */
  seenDeviceSources(): Promise<Array<{ address: string; port: number }>>;
  /** Starts a bounded UDP flood from a LAN namespace; stop() ends it. */
  startSender(opts: SenderOptions): Sender;
  /** Runs a command in one of the lab's namespaces. */
  exec(where: keyof Lab["ns"], argv: string[]): string;
  destroy(): Promise<void>;
}

export interface SenderOptions {
  from: "lan" | "lan2";
  target: string;
  port: number;
  /** Three-letter payload tag: "dev" or "h2x" are counted by the victim. */
  tag: string;
  sourcePort: number;
  /** Source address to send from (e.g. a new IPv6 privacy address); default: the kernel's choice. */
  sourceAddress?: string;
  packetsPerSecond?: number;
  maxSeconds?: number;
}

export interface Sender {
  stop(): Promise<void>;
}

function sh(argv: string[]): void {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr || r.error?.message}`);
}

function nsSh(ns: string, argv: string[], input?: string): string {
  const r = spawnSync("ip", ["netns", "exec", ns, ...argv], { encoding: "utf8", input });
  if (r.status !== 0) throw new Error(`[${ns}] ${argv.join(" ")} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

const SENDER_CODE = `
const dgram = require("node:dgram");
const [target, port, tag, pps, sport, maxSeconds, saddr] = process.argv.slice(1);
const s = dgram.createSocket(target.includes(":") ? "udp6" : "udp4");
s.on("error", () => {});
s.bind(Number(sport), saddr || undefined, () => {
  const buf = Buffer.from(tag + "-flood-packet");
  const iv = setInterval(() => s.send(buf, Number(port), target, () => {}), Math.max(1, Math.round(1000 / Number(pps))));
  setTimeout(() => { clearInterval(iv); s.close(); }, Number(maxSeconds) * 1000);
});
process.on("SIGTERM", () => process.exit(0));
`;

export async function createLab(): Promise<Lab> {
  const base = `dch-${process.pid}-${++seq}`;
  const ns = { lan: `${base}-lan`, lan2: `${base}-lan2`, router: `${base}-rtr`, isp: `${base}-isp` };
  const created: string[] = [];
  const senders = new Set<ChildProcess>();
  const destroySync = (): void => {
    for (const c of senders) c.kill("SIGKILL");
    senders.clear();
    for (const n of created) {
      // whatever still runs inside the lab (an orphaned `conntrack -E` of a killed dialer) was started
      // by this test; namespaces do not end their processes
      const pids = spawnSync("ip", ["netns", "pids", n], { encoding: "utf8" }).stdout ?? "";
      for (const pid of pids
        .split("\n")
        .map(Number)
        .filter((p) => Number.isInteger(p) && p > 1 && p !== process.pid)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
    for (const n of created.reverse()) spawnSync("ip", ["netns", "del", n]);
    created.length = 0;
    process.off("exit", destroySync);
  };
  // a run that dies before after() (mocha --exit, a crash) still removes the namespaces
  process.once("exit", destroySync);
  const destroy = async (): Promise<void> => destroySync();
  try {
    for (const n of Object.values(ns)) {
      sh(["ip", "netns", "add", n]);
      created.push(n);
      nsSh(n, ["ip", "link", "set", "lo", "up"]);
    }
    sh(["ip", "link", "add", "eth0", "netns", ns.lan, "type", "veth", "peer", "name", "lan1", "netns", ns.router]);
    sh(["ip", "link", "add", "eth0", "netns", ns.lan2, "type", "veth", "peer", "name", "lan2", "netns", ns.router]);
    sh(["ip", "link", "add", "wan", "netns", ns.router, "type", "veth", "peer", "name", "eth0", "netns", ns.isp]);
    const r = (...a: string[]) => nsSh(ns.router, a);
    r("ip", "link", "add", "br0", "type", "bridge");
    r("ip", "link", "set", "lan1", "master", "br0");
    r("ip", "link", "set", "lan2", "master", "br0");
    for (const i of ["br0", "lan1", "lan2", "wan"]) r("ip", "link", "set", i, "up");
    r("ip", "addr", "add", "192.168.1.1/24", "dev", "br0");
    r("ip", "addr", "add", "2001:db8:1::1/64", "dev", "br0", "nodad");
    r("ip", "addr", "add", "198.51.100.2/24", "dev", "wan");
    r("ip", "addr", "add", "2001:db8:ff::2/64", "dev", "wan", "nodad");
    r("ip", "route", "add", "default", "via", "198.51.100.1");
    r("ip", "-6", "route", "add", "default", "via", "2001:db8:ff::1");
    r("sysctl", "-qw", "net.ipv4.ip_forward=1");
    r("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1");
    // NAT and a stateful IPv6 firewall, each in a table of its own (as a home router has them)
    nsSh(
      ns.router,
      ["nft", "-f", "-"],
      [
        "table ip lab_nat {",
        '  chain postrouting { type nat hook postrouting priority srcnat; policy accept; oifname "wan" masquerade; }',
        "}",
        "table inet lab_fw {",
        "  chain forward { type filter hook forward priority filter; policy accept; ct state established,related accept; }",
        "}",
      ].join("\n") + "\n",
    );
    for (const [n, v4, v6] of [
      [ns.lan, "192.168.1.10/24", "2001:db8:1::10/64"],
      [ns.lan2, "192.168.1.11/24", "2001:db8:1::11/64"],
    ]) {
      nsSh(n, ["ip", "addr", "add", v4, "dev", "eth0"]);
      nsSh(n, ["ip", "addr", "add", v6, "dev", "eth0", "nodad"]);
      nsSh(n, ["ip", "link", "set", "eth0", "up"]);
      nsSh(n, ["ip", "route", "add", "default", "via", "192.168.1.1"]);
      nsSh(n, ["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"]);
    }
    const i = (...a: string[]) => nsSh(ns.isp, a);
    i("ip", "addr", "add", "198.51.100.1/24", "dev", "eth0");
    i("ip", "addr", "add", "2001:db8:ff::1/64", "dev", "eth0", "nodad");
    i("ip", "link", "set", "eth0", "up");
    i("ip", "addr", "add", "203.0.113.5/32", "dev", "lo");
    i("ip", "addr", "add", "2001:db8:c000::5/128", "dev", "lo");
    i("ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:ff::2");
    nsSh(
      ns.isp,
      ["nft", "-f", "-"],
      [
        "table inet victim {",
        "  counter dev { }",
        "  counter other { }",
        "  counter dev6 { }",
        "  counter probe { }",
        "  set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        // payload tags right after the UDP header: "dev" from the device, "h2x" from the other host
        '    meta nfproto ipv4 udp dport 5555 @th,64,24 0x646576 counter name "dev" update @seen { ip saddr . udp sport }',
        '    meta nfproto ipv6 udp dport 5555 @th,64,24 0x646576 counter name "dev6"',
        '    udp dport 7777 counter name "probe"',
        '    udp dport 5555 @th,64,24 0x683278 counter name "other"',
        "  }",
        "}",
      ].join("\n") + "\n",
    );
  } catch (err) {
    await destroy();
    throw err;
  }
  const deviceMac = nsSh(ns.lan, ["cat", "/sys/class/net/eth0/address"]).trim();
  const isp = netnsRunner(ns.isp);
  const counter = async (name: string): Promise<number> => {
    const { stdout } = await isp.run(["nft", "-j", "list", "counter", "inet", "victim", name]);
    const doc = JSON.parse(stdout) as { nftables: Array<{ counter?: { packets: number } }> };
    return doc.nftables.find((x) => x.counter)?.counter?.packets ?? 0;
  };
  return {
    ns,
    router: netnsRunner(ns.router),
    isp,
    deviceMac,
    counters: async () => ({
      dev: await counter("dev"),
      other: await counter("other"),
      dev6: await counter("dev6"),
      probe: await counter("probe"),
    }),
    seenDeviceSources: async () => {
      const { stdout } = await isp.run(["nft", "-j", "list", "set", "inet", "victim", "seen"]);
      const doc = JSON.parse(stdout) as { nftables: Array<{ set?: { elem?: Array<{ elem: { val: { concat: [string, number] } } }> } }> };
      const set = doc.nftables.find((x) => x.set)?.set;
      return (set?.elem ?? []).map((e) => ({ address: e.elem.val.concat[0], port: e.elem.val.concat[1] }));
    },
    startSender: (o) => {
      const child = spawn(
        "ip",
        [
          "netns",
          "exec",
          ns[o.from],
          process.execPath,
          "-e",
          SENDER_CODE,
          o.target,
          String(o.port),
          o.tag,
          String(o.packetsPerSecond ?? 200),
          String(o.sourcePort),
          String(o.maxSeconds ?? 60),
          o.sourceAddress ?? "",
        ],
        { stdio: "ignore" },
      );
      senders.add(child);
      const exited = new Promise<void>((res) => child.once("exit", () => res()));
      return {
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          await exited;
          senders.delete(child);
        },
      };
    },
    exec: (where, argv) => nsSh(ns[where], argv),
    destroy,
  };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 10_000, stepMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
