// The whole chain with the detector ISPs run: FastNetMon (Debian's 1.2.4) watches the ISP side of
// the home's link with an AF_PACKET mirror on the ISP's interface towards the router, with the
// home's public address as its network and an outgoing pps threshold. A LAN device floods a
// victim through the masquerading router; FastNetMon bans the router's public address and runs
// `dots-call-home fastnetmon-notify`, which publishes the mitigation on the MQTT command contract
// (mosquitto in the ISP namespace); `listen --mqtt` sends it over the call-home session; the
// router's `dial --enforce nftables --nat conntrack` maps the NATed port to the device and blocks
// it while the other LAN host keeps reaching the victim; FastNetMon's unban withdraws it.
//
// Why AF_PACKET and not sFlow/NetFlow: the ISP owns its side of the link and mirrors it, needing
// nothing from the home router (customer equipment, no sFlow agent in Debian's router images);
// unsampled packets also give FastNetMon exact per-host pps within its 1 s check period.
import { strict as assert } from "node:assert";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CLI_MAIN, CliProcess } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";

const FASTNETMON = "/usr/sbin/fastnetmon";
const PSK = ["--psk-identity", "home-1", "--psk-key", "text:e2e-fastnetmon-psk-0123456789"];
const PUBLIC = "198.51.100.2";
const BAN_TIME = 8;

/** FastNetMon's own configuration: nothing leaves the namespace, no pid file, no API, files in `dir`. */
function fastnetmonConf(dir: string, notify: string): string {
  return [
    "logging_level = info",
    "logging_local_syslog_logging = off",
    "logging_remote_syslog_logging = off",
    "disable_usage_report = on",
    "enable_ban = on",
    "enable_ban_ipv6 = off",
    "process_incoming_traffic = off",
    "process_outgoing_traffic = on",
    "ban_details_records_count = 10",
    `ban_time = ${BAN_TIME}`,
    "unban_only_if_attack_finished = on",
    `networks_list_path = ${dir}/networks_list`,
    `white_list_path = ${dir}/networks_whitelist`,
    "check_period = 1",
    "enable_connection_tracking = on",
    "ban_for_pps = on",
    "ban_for_bandwidth = off",
    "ban_for_flows = off",
    "threshold_pps = 300",
    "mirror_afpacket = on",
    "interfaces = eth0",
    "average_calculation_time = 1",
    "speed_calculation_delay = 1",
    `notify_script_path = ${notify}`,
    "monitor_local_ip_addresses = off",
    `pid_path = ${dir}/fastnetmon.pid`,
    `cli_stats_file_path = ${dir}/fastnetmon.dat`,
    `cli_stats_ipv6_file_path = ${dir}/fastnetmon_ipv6.dat`,
    "enable_api = off",
    "prometheus = off",
    "redis_enabled = off",
    "mongodb_enabled = off",
    "exabgp = off",
    "gobgp = off",
    "influxdb = off",
    "graphite = off",
    "kafka_traffic_export = off",
    "",
  ].join("\n");
}

describe("FastNetMon -> fastnetmon-notify -> MQTT -> listen -> call home -> nftables at the home (netns, real FastNetMon)", function () {
  this.timeout(120_000);
  let lab: Lab | undefined;
  let dir = "";
  const senders: Sender[] = [];
  const procs: CliProcess[] = [];
  const children: ChildProcess[] = [];
  let fnmLog = "";

  before(async function () {
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack", "mosquitto", "mosquitto_sub"]) requireOrSkip(this, tool, hasCommand(tool));
    requireOrSkip(this, `fastnetmon (${FASTNETMON})`, fs.existsSync(FASTNETMON));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-fastnetmon-"));
    fs.chmodSync(dir, 0o755); // mosquitto reads its config as user mosquitto
    lab = await createLab();
  });

  after(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
    for (const s of senders.splice(0)) await s.stop();
    if (lab) await lab.destroy(); // also ends whatever still runs in the namespaces (a notify call)
    lab = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function spawnIn(ns: string, argv: string[], name: string): ChildProcess {
    const c = spawn("ip", ["netns", "exec", ns, ...argv], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(c);
    const keep = (b: Buffer): void => {
      if (name === "fastnetmon") fnmLog = (fnmLog + b.toString()).slice(-200_000);
    };
    c.stdout?.on("data", keep);
    c.stderr?.on("data", keep);
    return c;
  }

  /** JSON lines the notify calls appended to their --log. */
  function notifyEvents(): Array<Record<string, unknown>> {
    const file = path.join(dir, "notify.jsonl");
    if (!fs.existsSync(file)) return [];
    return fs
      .readFileSync(file, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  async function rise(ms: number): Promise<{ dev: number; other: number }> {
    const a = await lab!.counters();
    await sleep(ms);
    const b = await lab!.counters();
    return { dev: b.dev - a.dev, other: b.other - a.other };
  }

  it("a LAN device's flood: FastNetMon bans, the home blocks that device only, FastNetMon's unban lifts the block", async () => {
    const isp = lab!.ns.isp;
    // the broker, on the ISP namespace's loopback
    fs.writeFileSync(path.join(dir, "mosquitto.conf"), "listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n");
    spawnIn(isp, ["mosquitto", "-c", path.join(dir, "mosquitto.conf")], "mosquitto");
    await waitFor(
      "mosquitto in the ISP namespace",
      async () =>
        spawnSync("ip", ["netns", "exec", isp, "mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-t", "probe", "-m", "x"]).status === 0,
      10_000,
      100,
    );

    const listener = new CliProcess(
      [
        "listen",
        "--dtls",
        "--host",
        "198.51.100.1",
        "--port",
        "0",
        ...PSK,
        "--home-prefix",
        `${PUBLIC}/32`,
        "--request-repeat-ms",
        "300",
        "--mqtt",
        "mqtt://127.0.0.1:1883",
        "--mqtt-client-id",
        "isp-e2e",
      ],
      { name: "isp", netns: isp },
    );
    procs.push(listener);
    const port = (await listener.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    await listener.waitFor((l) => l.event === "mqtt-connected", 10_000, "mqtt-connected");
    const home = new CliProcess(
      [
        "dial",
        "198.51.100.1",
        "--port",
        String(port),
        "--transport",
        "udp",
        ...PSK,
        "--home-prefix",
        `${PUBLIC}/32`,
        "--reconnect-min",
        "200",
        "--reconnect-max",
        "1000",
        "--terminating-period",
        "500",
        "--enforce",
        "nftables",
        "--nat",
        "conntrack",
      ],
      { name: "home", netns: lab!.ns.router },
    );
    procs.push(home);
    await home.waitFor((l) => l.event === "enforcer-ready", 10_000, "enforcer-ready");
    await listener.waitFor((l) => l.event === "session-up", 10_000, "session-up");
    // the fleet's retained presence says which process holds home-1: commands now reach it directly
    const presence = spawnSync(
      "ip",
      ["netns", "exec", isp, "mosquitto_sub", "-h", "127.0.0.1", "-p", "1883", "-t", "dots/presence/home-1", "-C", "1", "-W", "10"],
      { encoding: "utf8" },
    );
    assert.match(presence.stdout, /"clientId":"isp-e2e"/, `presence of home-1: ${presence.stdout} ${presence.stderr}`);

    // FastNetMon, its notify script a two-line wrapper around our subcommand
    fs.writeFileSync(path.join(dir, "networks_list"), `${PUBLIC}/32\n`);
    fs.writeFileSync(path.join(dir, "networks_whitelist"), "");
    const notify = path.join(dir, "dots-notify.sh");
    fs.writeFileSync(
      notify,
      `#!/bin/sh\nexec ${process.execPath} ${CLI_MAIN} fastnetmon-notify --home-prefix home-1=${PUBLIC}/32 --mqtt mqtt://127.0.0.1:1883 --state-dir ${dir}/state --lifetime 600 --log ${dir}/notify.jsonl "$@"\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(dir, "fastnetmon.conf"), fastnetmonConf(dir, notify));
    spawnIn(
      isp,
      [FASTNETMON, "--configuration_file", path.join(dir, "fastnetmon.conf"), "--log_to_console", "--disable_pid_logic"],
      "fastnetmon",
    );
    await waitFor("FastNetMon's AF_PACKET workers", async () => /Start AF_PACKET worker/.test(fnmLog), 15_000, 100);
    await sleep(1000);

    // another LAN host below the threshold, then the device's flood above it
    senders.push(
      lab!.startSender({
        from: "lan2",
        target: "203.0.113.5",
        port: 5555,
        tag: "h2x",
        sourcePort: 40002,
        packetsPerSecond: 100,
        maxSeconds: 70,
      }),
    );
    await waitFor("the other host's traffic at the victim", async () => (await lab!.counters()).other > 0, 10_000, 50);
    const device = lab!.startSender({
      from: "lan",
      target: "203.0.113.5",
      port: 5555,
      tag: "dev",
      sourcePort: 40001,
      packetsPerSecond: 1000,
      maxSeconds: 60,
    });
    senders.push(device);
    await waitFor("the first attack packet at the victim", async () => (await lab!.counters()).dev > 0, 10_000, 10);
    const firstPacket = Date.now();
    const [seen] = await waitFor("the NATed source of the flood", async () => {
      const s = await lab!.seenDeviceSources();
      return s.length > 0 ? s : undefined;
    });

    // FastNetMon bans the router's public address; the notify publishes; the home blocks the device
    const added = await home.waitFor((l) => l.event === "enforcement" && l.change === "added", 30_000, "enforcement added");
    const blockedAt = Date.now();
    const mid = added.mid as number;
    assert.match(
      String(added.script),
      /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/,
    );
    assert.doesNotMatch(String(added.script), /192\.168\.1\.11/, "the other LAN host is not blocked");
    const lookup = await home.waitFor((l) => l.event === "lookup" && l.mid === mid, 5000, "lookup");
    assert.deepEqual(
      (lookup.devices as Array<{ address: string; publicPorts: number[] }>).map((d) => [d.address, d.publicPorts]),
      [["192.168.1.10", [seen.port]]],
    );
    // the last device packet the victim counted
    let last = (await lab!.counters()).dev;
    let lastChange = Date.now();
    const stillUntil = Date.now() + 5000;
    while (Date.now() < stillUntil) {
      await sleep(20);
      const now = (await lab!.counters()).dev;
      if (now !== last) {
        last = now;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > 500) break;
    }
    const events = notifyEvents();
    const request = events.find((e) => e.event === "request");
    assert.ok(request, `a request from the notify: ${JSON.stringify(events)}\n${fnmLog.slice(-3000)}`);
    assert.deepEqual(request.scope, {
      "target-prefix": ["203.0.113.5/32"],
      "ietf-dots-call-home:source-prefix": [`${PUBLIC}/32`],
      lifetime: 600,
      "target-protocol": [17],
      "target-port-range": [{ "lower-port": 5555 }],
      "ietf-dots-call-home:source-port-range": [{ "lower-port": seen.port }],
    });
    const answer = events.find((e) => e.event === "answer" && e.id === request.id);
    assert.deepEqual([answer?.kind, answer?.code, answer?.mid], ["response", "2.01", mid]);
    const banCall = events.find((e) => e.event === "fastnetmon-call" && e.action === "ban");
    const notifyStart = Date.parse(String(banCall?.time)) - firstPacket;
    const answered = Date.parse(String(answer?.time)) - firstPacket;
    process.stdout.write(
      `      FastNetMon attack-to-block: first attack packet -> FastNetMon runs the notify (ban) ${notifyStart} ms -> the home's 2.01 at the notify ${answered} ms -> nft element added ${blockedAt - firstPacket} ms; ` +
        `-> last device packet at the victim ${lastChange - firstPacket} ms (ban_time ${BAN_TIME} s, threshold 300 pps, check_period 1 s)\n`,
    );

    const at = (l: Record<string, unknown> | undefined): number => Date.parse(String(l?.time)) - firstPacket;
    const homeGot = home.lines.find((l) => l.event === "mitigation" && l.mid === mid);
    process.stdout.write(
      `      timeline (ms after the first attack packet): notify request ${at(request)}, home receives mid ${mid} ${at(homeGot)}, ` +
        `lookup done ${at(lookup)}, nft element ${at(added)}, 2.01 back at the notify ${at(answer)}\n`,
    );

    await sleep(200);
    const during = await rise(1000);
    assert.equal(during.dev, 0, "the device's flood no longer reaches the victim");
    assert.ok(during.other > 30, `the other LAN host still reaches the victim: ${during.other}`);

    // the flood no longer passes the router: FastNetMon's unban withdraws the mitigation
    const removed = await home.waitFor(
      (l) => l.event === "enforcement" && l.mid === mid && l.change === "removed",
      (BAN_TIME + 15) * 1000,
      "enforcement removed after FastNetMon's unban",
    );
    assert.match(String(removed.script), /delete element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 \}/);
    const withdraw = notifyEvents().find((e) => e.event === "withdraw");
    assert.equal(withdraw?.mid, mid);
    assert.ok(
      notifyEvents().some((e) => e.event === "answer" && e.id === withdraw?.id && e.code === "2.02"),
      JSON.stringify(notifyEvents()),
    );
    assert.ok(!fs.existsSync(path.join(dir, "state", `ban-${PUBLIC}.json`)), "the unban removed the address's record");
    await sleep(200);
    const again = await rise(800);
    assert.ok(again.dev > 50, `traffic flows again after the unban: ${again.dev}`);
    await device.stop();
    // FastNetMon's only traffic into the notify came through its own config: it ran the wrapper
    assert.match(fnmLog, /Call script for ban client: 198\.51\.100\.2/);
    assert.match(fnmLog, /Call script for unban client: 198\.51\.100\.2/);
  });
});
