// RFC 9146 Connection ID through a real NAT (netns): the home dials the ISP over DTLS from behind a
// router doing nftables masquerade, as a CGN does. Mid-session the NAT's port range changes and its
// conntrack entries are flushed, so the home's next datagram leaves from a new public port. The
// ISP's next mitigation request is answered by the same session: no new DTLS handshake, no new
// session. Without the Connection ID the ISP would drop the home's records from the unknown port
// and the home would be unreachable until it dialled again.
import { strict as assert } from "node:assert";
import { CliProcess, type CliLine } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab } from "../support/netns";

const PSK = ["--psk-identity", "home-1", "--psk-key", "text:e2e-nat-rebinding-psk-0123456789"];
const PUBLIC = "198.51.100.2";

/** Public source ports of the home's DTLS flow as the NAT maps them (reply direction's destination port). */
function publicPorts(lab: Lab, ispPort: number): number[] {
  const out = lab.exec("router", ["conntrack", "-L", "-p", "udp", "--orig-dst", "198.51.100.1", "--orig-port-dst", String(ispPort)]);
  return [...out.matchAll(/src=198\.51\.100\.1 dst=198\.51\.100\.2 sport=\d+ dport=(\d+)/g)].map((m) => Number(m[1]));
}

describe("NAT rebinding mid-session: the DTLS Connection ID keeps the home reachable (netns)", function () {
  this.timeout(60_000);
  let lab: Lab | undefined;
  const procs: CliProcess[] = [];

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
  });

  after(async () => {
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
    if (lab) await lab.destroy();
    lab = undefined;
  });

  function mitigate(isp: CliProcess, id: string, lastOctet: number): void {
    isp.send({
      cmd: "mitigate",
      id,
      session: "home-1",
      request: {
        "target-prefix": [`203.0.113.${lastOctet}/32`],
        "target-protocol": [17],
        "ietf-dots-call-home:source-prefix": [`${PUBLIC}/32`],
        lifetime: 600,
      },
    });
  }

  it("a new public port from the NAT: the next mitigation is answered by the same session", async () => {
    const isp = new CliProcess(["listen", "--dtls", "--host", "198.51.100.1", "--port", "0", ...PSK, "--home-prefix", `${PUBLIC}/32`], {
      name: "isp",
      netns: lab!.ns.isp,
    });
    procs.push(isp);
    const port = (await isp.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    // The home router's dialer behind the lab router's masquerade (the lab router plays the CGN).
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
        "--heartbeat-interval",
        "2",
      ],
      { name: "home", netns: lab!.ns.lan },
    );
    procs.push(home);
    await isp.waitFor((l) => l.event === "session-up", 15_000, "session-up");
    const sessionsUp = (): number => isp.lines.filter((l: CliLine) => l.event === "session-up").length;

    mitigate(isp, "m1", 5);
    const first = await isp.waitFor((l) => l.event === "response" && l.id === "m1", 10_000, "first response");
    assert.equal((first.outcome as { code: string }).code, "2.01", JSON.stringify(first));
    const before = publicPorts(lab!, port);
    assert.equal(before.length, 1, `one NAT mapping: ${JSON.stringify(before)}`);

    // The NAT rebinds: another port range, and the old mapping is gone.
    lab!.exec("router", ["nft", "flush", "chain", "ip", "lab_nat", "postrouting"]);
    const rule = ["nft", "add", "rule", "ip", "lab_nat", "postrouting", "oifname", "wan"];
    lab!.exec("router", [...rule, "meta", "l4proto", "udp", "masquerade", "to", ":40000-40099"]);
    lab!.exec("router", [...rule, "masquerade"]);
    lab!.exec("router", ["conntrack", "-D", "-p", "udp"]);

    mitigate(isp, "m2", 6);
    const second = await isp.waitFor((l) => l.event === "response" && l.id === "m2", 20_000, "response after the rebinding");
    assert.equal((second.outcome as { code: string }).code, "2.01", JSON.stringify(second));
    const after = await waitFor("the new NAT mapping", async () => {
      const p = publicPorts(lab!, port);
      return p.length > 0 ? p : undefined;
    });
    assert.ok(after[0] >= 40000 && after[0] <= 40099 && after[0] !== before[0], `new public port ${after[0]} (was ${before[0]})`);
    await sleep(500);
    assert.equal(sessionsUp(), 1, "the same session answered: no new handshake");
    const moved = isp.lines.filter((l: CliLine) => l.event === "session-moved");
    assert.ok(moved.length >= 1, "the ISP reported the move");
    assert.deepEqual((moved[0].to as { port: number }).port, after[0], JSON.stringify(moved[0]));
    assert.equal(isp.lines.filter((l: CliLine) => l.event === "session-down").length, 0);
    assert.equal(home.lines.filter((l: CliLine) => l.event === "session-down" || l.event === "disconnected").length, 0);
  });
});
