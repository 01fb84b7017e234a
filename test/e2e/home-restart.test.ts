// A home router crash must never unblock a device. `dial --enforce nftables --state-dir` blocks a
// LAN device's flood, is killed with SIGKILL and started again on the same state directory: the
// victim's counter stays flat through the restart, the ISP finds the mitigation on the home again
// (GET, status 2), and a withdrawal after the restart still lifts the block.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CliProcess, type CliLine } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { NftablesBackend } from "../../src/home/filter-backend";

const PSK = ["--psk-identity", "home-1", "--psk-key", "text:e2e-restart-psk-0123456789"];
const PUBLIC = "198.51.100.2";

describe("home restart: durable mitigation state keeps the device blocked (netns, nftables, TLS)", function () {
  this.timeout(60_000);
  let lab: Lab | undefined;
  let stateDir: string;
  const senders: Sender[] = [];
  const procs: CliProcess[] = [];
  let seen: { address: string; port: number };

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-home-restart-"));
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
    [seen] = await waitFor("the flood to reach the victim", async () => {
      const s = await lab!.seenDeviceSources();
      return s.length > 0 ? s : undefined;
    });
  });

  after(async () => {
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
    for (const s of senders.splice(0)) await s.stop();
    if (lab) await lab.destroy();
    lab = undefined;
    if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  });

  async function rise(ms: number): Promise<{ dev: number; other: number }> {
    const a = await lab!.counters();
    await sleep(ms);
    const b = await lab!.counters();
    return { dev: b.dev - a.dev, other: b.other - a.other };
  }

  function dial(port: number): CliProcess {
    const home = new CliProcess(
      [
        "dial",
        "198.51.100.1",
        "--port",
        String(port),
        "--transport",
        "tcp",
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
        "--state-dir",
        stateDir,
      ],
      { name: "home", netns: lab!.ns.router },
    );
    procs.push(home);
    return home;
  }

  const sessionUps = (isp: CliProcess): number => isp.lines.filter((l) => l.event === "session-up").length;

  it("block -> kill -9 the dialer -> restart: flat counter throughout, ISP lists mitigation status 2, withdrawal lifts it", async () => {
    const isp = new CliProcess(
      ["listen", "--tls", "--host", "198.51.100.1", "--port", "0", ...PSK, "--home-prefix", `${PUBLIC}/32`, "--request-repeat-ms", "300"],
      { name: "isp", netns: lab!.ns.isp },
    );
    procs.push(isp);
    const port = (await isp.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    let home = dial(port);
    const first = await home.waitFor((l) => l.event === "restored", 10_000, "restored");
    assert.equal(first.mitigations, 0, "a first start finds no state file and starts empty");
    await isp.waitFor((l) => l.event === "session-up", 10_000, "session-up");

    isp.send({
      cmd: "mitigate",
      id: "m1",
      session: "home-1",
      request: {
        "target-prefix": ["203.0.113.5/32"],
        "target-port-range": [{ "lower-port": 5555 }],
        "target-protocol": [17],
        "ietf-dots-call-home:source-prefix": [`${seen.address}/32`],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": seen.port }],
        lifetime: 600,
      },
    });
    const response = await isp.waitFor((l) => l.event === "response" && l.id === "m1", 10_000, "response m1");
    const { code, mid } = response.outcome as { code: string; mid: number };
    assert.equal(code, "2.01", JSON.stringify(response.outcome));
    const decision = await home.waitFor((l) => l.event === "decision" && l.mid === mid, 10_000, "decision");
    assert.equal(decision.outcome, "enforced", String(decision.detail));
    await sleep(300);
    assert.equal((await rise(800)).dev, 0, "blocked before the crash");

    // the crash: no stop handler runs, nothing is flushed at exit
    const beforeCrash = await lab!.counters();
    const upsBefore = sessionUps(isp);
    await home.stop("SIGKILL");
    home = dial(port);
    const restored = await home.waitFor((l) => l.event === "restored", 10_000, "restored");
    assert.deepEqual([restored.mitigations, restored.expired], [1, 0], JSON.stringify(restored));
    const reconciled = await home.waitFor((l) => l.event === "reconciled", 10_000, "reconciled");
    assert.deepEqual(
      (reconciled.kept as Array<{ mid: number; status: string }>).map((k) => [k.mid, k.status]),
      [[mid, "attack-successfully-mitigated"]],
      JSON.stringify(reconciled),
    );
    assert.equal(reconciled.removed, 0, "reconcile removes nothing a live mitigation owns");
    await waitFor("the home to reconnect", async () => sessionUps(isp) > upsBefore, 15_000, 100);
    const afterRestart = await lab!.counters();
    assert.equal(
      afterRestart.dev - beforeCrash.dev,
      0,
      "not one packet of the device got through while the dialer was down and restarting",
    );
    const later = await rise(1000);
    assert.equal(later.dev, 0, "still blocked after the restart");
    assert.ok(later.other > 50, `the other LAN host is spared: ${later.other}`);
    const els = await new NftablesBackend(lab!.router).list();
    assert.ok(
      els.some((e) => e.comment?.endsWith(`/${mid}`)),
      "the kernel element survived the restart",
    );

    // the ISP finds the mitigation on the restarted home, still status 2
    isp.send({ cmd: "get", id: "g1", session: "home-1", mid });
    const got = await isp.waitFor((l) => l.event === "response" && l.id === "g1", 10_000, "get response");
    const text = JSON.stringify(got.outcome);
    assert.match(text, /"code":"2\.05"/, text);
    assert.match(text, /attack-successfully-mitigated/, text);

    // a power cut loses the kernel's table too: the state file says what to put back
    const ups2 = sessionUps(isp);
    await home.stop("SIGKILL");
    lab!.exec("router", ["nft", "delete", "table", "inet", "dots_call_home"]);
    home = dial(port);
    const back = await home.waitFor(
      (l) => l.event === "enforcement" && l.mid === mid && l.change === "reconciled",
      10_000,
      "elements put back",
    );
    assert.match(
      String(back.script),
      /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 5\d\ds/,
    );
    const missing = await home.waitFor((l) => l.event === "reconciled", 10_000, "reconciled");
    assert.deepEqual(
      (missing.missing as Array<{ mid: number }>).map((m) => m.mid),
      [mid],
    );
    await waitFor("the home to reconnect", async () => sessionUps(isp) > ups2, 15_000, 100);
    await sleep(200);
    assert.equal((await rise(800)).dev, 0, "blocked again from the state file after the kernel lost its table");

    isp.send({ cmd: "withdraw", id: "w1", session: "home-1", mid });
    const w = await isp.waitFor((l: CliLine) => l.event === "response" && l.id === "w1", 10_000, "withdraw response");
    assert.equal((w.outcome as { code: string }).code, "2.02", JSON.stringify(w.outcome));
    await home.waitFor((l) => l.event === "enforcement" && l.mid === mid && l.change === "removed", 5000, "enforcement removed");
    await sleep(200);
    assert.ok((await rise(1000)).dev > 50, "the withdrawal lifts the block");
  });
});
