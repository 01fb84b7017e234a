// The whole thing with the DOTS protocol in it: `dots-call-home listen` runs in the ISP's namespace,
// `dots-call-home dial --enforce nftables --nat conntrack` in the NAT router's. The ISP sees a LAN
// device's UDP flood only as the router's public address and a NATed port, sends a mitigation over
// the call-home session, and the router maps it back through its live conntrack table and blocks
// the device in the kernel, while another LAN host keeps reaching the victim.
import { strict as assert } from "node:assert";
import { CliProcess, type CliLine } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { NftablesBackend } from "../../src/home/filter-backend";

const PSK = ["--psk-identity", "home-1", "--psk-key", "text:e2e-call-home-psk-0123456789"];
const PUBLIC = "198.51.100.2";

describe("dots-call-home end to end: ISP listener, NAT router dialer enforcing with nftables (netns)", function () {
  this.timeout(30_000);
  let lab: Lab | undefined;
  const senders: Sender[] = [];
  const procs: CliProcess[] = [];
  let seen: { address: string; port: number };

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
    senders.push(
      lab.startSender({
        from: "lan",
        target: "203.0.113.5",
        port: 5555,
        tag: "dev",
        sourcePort: 40001,
        packetsPerSecond: 200,
        maxSeconds: 58,
      }),
    );
    senders.push(
      lab.startSender({
        from: "lan2",
        target: "203.0.113.5",
        port: 5555,
        tag: "h2x",
        sourcePort: 40002,
        packetsPerSecond: 200,
        maxSeconds: 58,
      }),
    );
    // the ISP's detector: the flood arrives from the router's public address and a NATed port
    [seen] = await waitFor("the flood to reach the victim", async () => {
      const s = await lab!.seenDeviceSources();
      return s.length > 0 ? s : undefined;
    });
    assert.equal(seen.address, PUBLIC, "the ISP sees only the router's public address");
  });

  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
  });

  after(async () => {
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
    for (const s of senders.splice(0)) await s.stop();
    if (lab) await lab.destroy();
    lab = undefined;
  });

  /** Packets the victim counted from the device and from the other LAN host over a window. */
  async function rise(ms: number): Promise<{ dev: number; other: number }> {
    const a = await lab!.counters();
    await sleep(ms);
    const b = await lab!.counters();
    return { dev: b.dev - a.dev, other: b.other - a.other };
  }

  async function tableTags(): Promise<string[]> {
    const els = await new NftablesBackend(lab!.router).list();
    return els.map((e) => e.comment ?? "");
  }

  /** A listener in the ISP namespace and a dialer in the router's, with a session up between them. */
  async function pair(transport: "udp" | "tcp", dialExtra: string[]): Promise<{ isp: CliProcess; home: CliProcess }> {
    const isp = new CliProcess(
      [
        "listen",
        transport === "udp" ? "--dtls" : "--tls",
        "--host",
        "198.51.100.1",
        "--port",
        "0",
        ...PSK,
        "--home-prefix",
        `${PUBLIC}/32`,
        "--request-repeat-ms",
        "300",
      ],
      { name: "isp", netns: lab!.ns.isp },
    );
    procs.push(isp);
    const port = (await isp.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    const home = new CliProcess(
      [
        "dial",
        "198.51.100.1",
        "--port",
        String(port),
        "--transport",
        transport,
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
        ...dialExtra,
      ],
      { name: "home", netns: lab!.ns.router },
    );
    procs.push(home);
    const ready = await home.waitFor((l) => l.event === "enforcer-ready", 10_000, "enforcer-ready");
    assert.deepEqual([ready.backend, ready.table, ready.nat], ["nftables", "dots_call_home", "conntrack-events"]);
    const up = await isp.waitFor((l) => l.event === "session-up", 10_000, "session-up");
    assert.equal((up.session as { transport: string }).transport, transport === "udp" ? "dtls" : "tls");
    return { isp, home };
  }

  /** The mitigation an ISP detector would send for what it saw. */
  function request(lifetime: number): Record<string, unknown> {
    return {
      "target-prefix": ["203.0.113.5/32"],
      "target-port-range": [{ "lower-port": 5555 }],
      "target-protocol": [17],
      "ietf-dots-call-home:source-prefix": [`${seen.address}/32`],
      "ietf-dots-call-home:source-port-range": [{ "lower-port": seen.port }],
      lifetime,
    };
  }

  async function mitigate(isp: CliProcess, id: string, lifetime: number): Promise<{ mid: number; response: CliLine }> {
    isp.send({ cmd: "mitigate", id, session: "home-1", request: request(lifetime) });
    const response = await isp.waitFor((l) => l.event === "response" && l.id === id, 10_000, `response ${id}`);
    const outcome = response.outcome as { code: string; mid: number };
    assert.equal(outcome.code, "2.01", JSON.stringify(outcome));
    return { mid: outcome.mid, response };
  }

  /** The ISP learns a status either in the PUT's answer or from an Observe notification. */
  async function ispStatus(isp: CliProcess, mid: number, response: CliLine, label: string): Promise<void> {
    if (JSON.stringify(response.outcome).includes(label)) return;
    await isp.waitFor((l) => l.event === "status" && l.mid === mid && l.status === label, 10_000, `status ${label} for mid ${mid}`);
  }

  it("DTLS-PSK: mitigate -> conntrack maps the NATed port to 192.168.1.10 -> nft block, other host spared, status 2; withdrawal lifts it", async () => {
    const { isp, home } = await pair("udp", []);
    const before = await rise(500);
    assert.ok(before.dev > 20 && before.other > 20, `both senders reach the victim: ${JSON.stringify(before)}`);

    const { mid, response } = await mitigate(isp, "m1", 600);
    const lookup = await home.waitFor((l) => l.event === "lookup" && l.mid === mid, 10_000, "lookup");
    assert.equal(lookup.found, true, String(lookup.detail));
    assert.deepEqual(
      (lookup.devices as Array<Record<string, unknown>>).map((d) => [d.address, d.mac, d.ports, d.publicPorts]),
      [["192.168.1.10", lab!.deviceMac, [40001], [seen.port]]],
    );
    const added = await home.waitFor(
      (l) => l.event === "enforcement" && l.mid === mid && l.change === "added",
      10_000,
      "enforcement added",
    );
    assert.match(
      String(added.script),
      /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/,
    );
    const decision = await home.waitFor((l) => l.event === "decision" && l.mid === mid, 10_000, "decision");
    assert.equal(decision.outcome, "enforced", String(decision.detail));
    await ispStatus(isp, mid, response, "attack-successfully-mitigated");

    await sleep(200); // packets already past the router
    const during = await rise(1000);
    assert.equal(during.dev, 0, "the device's flood no longer reaches the victim");
    assert.ok(during.other > 50, `the other LAN host still reaches the victim: ${during.other}`);

    isp.send({ cmd: "withdraw", id: "w1", session: "home-1", mid });
    const w = await isp.waitFor((l) => l.event === "response" && l.id === "w1", 10_000, "withdraw response");
    assert.equal((w.outcome as { code: string }).code, "2.02");
    // after the (lab-short) active-but-terminating period the mitigation ends and its elements go
    const removed = await home.waitFor(
      (l) => l.event === "enforcement" && l.mid === mid && l.change === "removed",
      5000,
      "enforcement removed",
    );
    assert.match(String(removed.script), /delete element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 \}/);
    assert.deepEqual(await tableTags(), []);
    await sleep(200);
    const after = await rise(1000);
    assert.ok(after.dev > 50, `the withdrawal lets the device through again: ${after.dev}`);
    assert.ok(
      [...home.lines, ...isp.lines].every((l) => l.event !== "__not-json__"),
      "every stdout line is JSON",
    );
  });

  it("TLS-PSK, manual consent: the router asks, the admin rejects on stdin -> conflict-cause 4 at the ISP, no nft element", async () => {
    const { isp, home } = await pair("tcp", ["--consent", "manual", "--consent-timeout", "20000"]);
    const { mid, response } = await mitigate(isp, "m2", 600);
    await ispStatus(isp, mid, response, "attack-mitigation-in-progress");
    const asked = await home.waitFor((l) => l.event === "consent-request" && l.mid === mid, 10_000, "consent-request");
    assert.deepEqual(
      (asked.devices as Array<{ address: string }>).map((d) => d.address),
      ["192.168.1.10"],
    );
    assert.match(
      String(asked.script),
      /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/,
    );
    assert.ok(!(await tableTags()).some((t) => t.endsWith(`/${mid}`)), "nothing applied while consent is pending");
    assert.ok((await rise(300)).dev > 10, "not blocked while pending");

    home.send({ cmd: "reject", mid });
    const decision = await home.waitFor(
      (l) => l.event === "decision" && l.mid === mid && l.outcome !== "pending",
      10_000,
      "legitimate decision",
    );
    assert.deepEqual([decision.outcome, decision.reason], ["legitimate", "consent-rejected"]);
    const note = await isp.waitFor(
      (l) => l.event === "status" && l.mid === mid && l.conflictCause !== undefined,
      10_000,
      "conflict-cause 4",
    );
    assert.equal(note.conflictCause, "request-rejected-legitimate-traffic");
    assert.ok(!home.lines.some((l) => l.event === "enforcement"), "a rejected mitigation applies nothing");
    assert.deepEqual(await tableTags(), []);
    assert.ok((await rise(500)).dev > 20, "the device's traffic keeps flowing");
  });

  it("a 3 s lifetime: SIGKILL the dialer after the block, the kernel still lifts it by itself", async () => {
    const { isp, home } = await pair("udp", []);
    const { mid } = await mitigate(isp, "m3", 3);
    const added = await home.waitFor(
      (l) => l.event === "enforcement" && l.mid === mid && l.change === "added",
      10_000,
      "enforcement added",
    );
    assert.match(String(added.script), /timeout 3s/);
    await home.stop("SIGKILL"); // no withdrawal, no expiry handling: only the kernel's set timeout is left
    await sleep(200);
    assert.equal((await rise(800)).dev, 0, "the block holds without the process");
    await waitFor("the kernel to drop the elements", async () => (await tableTags()).length === 0, 6000, 200);
    await sleep(200);
    assert.ok((await rise(800)).dev > 50, "traffic flows again after the kernel timeout");
  });
});
