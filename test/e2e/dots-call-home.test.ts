// The whole thing with the DOTS protocol in it: `dots-call-home listen` runs in the ISP's namespace,
// `dots-call-home dial --enforce nftables --nat conntrack` in the NAT router's. The ISP sees a LAN
// device's UDP flood only as the router's public address and a NATed port, sends a mitigation over
// the call-home session, and the router maps it back through its live conntrack table and blocks
// the device in the kernel, while another LAN host keeps reaching the victim.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import * as path from "node:path";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { NftablesBackend } from "../../src/home/filter-backend";

// Works from .build/<name>/test/e2e and from dist/test/e2e alike.
const MAIN = path.resolve(__dirname, "../../src/cli/main.js");
const PSK = ["--psk-identity", "home-1", "--psk-key", "text:e2e-call-home-psk-0123456789"];
const PUBLIC = "198.51.100.2";

type Line = Record<string, unknown> & { event: string };

/** The CLI run inside a namespace: JSON commands in, one JSON event per line out. */
class NsProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: Line[] = [];
  private waiters: Array<{ pred: (l: Line) => boolean; resolve: (l: Line) => void }> = [];
  private buf = "";
  private stderr = "";
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    ns: string,
    args: string[],
  ) {
    // `ip netns exec` execs the command in place, so the child's pid is node's (SIGKILL reaches it)
    this.child = spawn("ip", ["netns", "exec", ns, process.execPath, MAIN, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout.on("data", (c: Buffer) => {
      this.buf += c.toString();
      for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
        const text = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let line: Line;
        try {
          line = JSON.parse(text) as Line;
        } catch {
          line = { event: "__not-json__", text };
        }
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => !(w.pred(line) && (w.resolve(line), true)));
      }
    });
    this.child.stderr.on("data", (c: Buffer) => (this.stderr += c.toString()));
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
  }

  waitFor(what: string, pred: (l: Line) => boolean, ms = 10_000): Promise<Line> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Line>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.name}: timed out waiting for ${what}; got:\n${this.lines.map((l) => JSON.stringify(l)).join("\n")}\nstderr: ${this.stderr}`));
      }, ms);
      const done = (l: Line): void => {
        clearTimeout(timer);
        resolve(l);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  send(cmd: Record<string, unknown>): void {
    this.child.stdin.write(JSON.stringify(cmd) + "\n");
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

describe("dots-call-home end to end: ISP listener, NAT router dialer enforcing with nftables (netns)", function () {
  this.timeout(30_000);
  let lab: Lab | undefined;
  const senders: Sender[] = [];
  const procs: NsProcess[] = [];
  let seen: { address: string; port: number };

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
    senders.push(lab.startSender({ from: "lan", target: "203.0.113.5", port: 5555, tag: "dev", sourcePort: 40001, packetsPerSecond: 200, maxSeconds: 58 }));
    senders.push(lab.startSender({ from: "lan2", target: "203.0.113.5", port: 5555, tag: "h2x", sourcePort: 40002, packetsPerSecond: 200, maxSeconds: 58 }));
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
    const els = await new NftablesBackend(lab!.router).listElements();
    return els.map((e) => e.comment ?? "");
  }

  /** A listener in the ISP namespace and a dialer in the router's, with a session up between them. */
  async function pair(transport: "udp" | "tcp", dialExtra: string[]): Promise<{ isp: NsProcess; home: NsProcess }> {
    const isp = new NsProcess("isp", lab!.ns.isp, ["listen", transport === "udp" ? "--dtls" : "--tls", "--host", "198.51.100.1", "--port", "0", ...PSK, "--home-prefix", `${PUBLIC}/32`, "--request-repeat-ms", "300"]);
    procs.push(isp);
    const port = (await isp.waitFor("listening", (l) => l.event === "listening")).port as number;
    const home = new NsProcess("home", lab!.ns.router, [
      "dial", "198.51.100.1", "--port", String(port), "--transport", transport, ...PSK, "--home-prefix", `${PUBLIC}/32`,
      "--reconnect-min", "200", "--reconnect-max", "1000", "--terminating-period", "500",
      "--enforce", "nftables", "--nat", "conntrack", ...dialExtra,
    ]);
    procs.push(home);
    const ready = await home.waitFor("enforcer-ready", (l) => l.event === "enforcer-ready");
    assert.deepEqual([ready.backend, ready.table, ready.nat], ["nftables", "dots_call_home", "conntrack-events"]);
    const up = await isp.waitFor("session-up", (l) => l.event === "session-up");
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

  async function mitigate(isp: NsProcess, id: string, lifetime: number): Promise<{ mid: number; response: Line }> {
    isp.send({ cmd: "mitigate", id, session: "home-1", request: request(lifetime) });
    const response = await isp.waitFor(`response ${id}`, (l) => l.event === "response" && l.id === id);
    const outcome = response.outcome as { code: string; mid: number };
    assert.equal(outcome.code, "2.01", JSON.stringify(outcome));
    return { mid: outcome.mid, response };
  }

  /** The ISP learns a status either in the PUT's answer or from an Observe notification. */
  async function ispStatus(isp: NsProcess, mid: number, response: Line, label: string): Promise<void> {
    if (JSON.stringify(response.outcome).includes(label)) return;
    await isp.waitFor(`status ${label} for mid ${mid}`, (l) => l.event === "status" && l.mid === mid && l.status === label);
  }

  it("DTLS-PSK: mitigate -> conntrack maps the NATed port to 192.168.1.10 -> nft block, other host spared, status 2; withdrawal lifts it", async () => {
    const { isp, home } = await pair("udp", []);
    const before = await rise(500);
    assert.ok(before.dev > 20 && before.other > 20, `both senders reach the victim: ${JSON.stringify(before)}`);

    const { mid, response } = await mitigate(isp, "m1", 600);
    const lookup = await home.waitFor("lookup", (l) => l.event === "lookup" && l.mid === mid);
    assert.equal(lookup.found, true, String(lookup.detail));
    assert.deepEqual((lookup.devices as Array<Record<string, unknown>>).map((d) => [d.address, d.mac, d.ports, d.publicPorts]), [["192.168.1.10", lab!.deviceMac, [40001], [seen.port]]]);
    const added = await home.waitFor("enforcement added", (l) => l.event === "enforcement" && l.mid === mid && l.change === "added");
    assert.match(String(added.script), /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/);
    const decision = await home.waitFor("decision", (l) => l.event === "decision" && l.mid === mid);
    assert.equal(decision.outcome, "enforced", String(decision.detail));
    await ispStatus(isp, mid, response, "attack-successfully-mitigated");

    await sleep(200); // packets already past the router
    const during = await rise(1000);
    assert.equal(during.dev, 0, "the device's flood no longer reaches the victim");
    assert.ok(during.other > 50, `the other LAN host still reaches the victim: ${during.other}`);

    isp.send({ cmd: "withdraw", id: "w1", session: "home-1", mid });
    const w = await isp.waitFor("withdraw response", (l) => l.event === "response" && l.id === "w1");
    assert.equal((w.outcome as { code: string }).code, "2.02");
    // after the (lab-short) active-but-terminating period the mitigation ends and its elements go
    const removed = await home.waitFor("enforcement removed", (l) => l.event === "enforcement" && l.mid === mid && l.change === "removed", 5000);
    assert.match(String(removed.script), /delete element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 \}/);
    assert.deepEqual(await tableTags(), []);
    await sleep(200);
    const after = await rise(1000);
    assert.ok(after.dev > 50, `the withdrawal lets the device through again: ${after.dev}`);
    assert.ok([...home.lines, ...isp.lines].every((l) => l.event !== "__not-json__"), "every stdout line is JSON");
  });

  it("TLS-PSK, manual consent: the router asks, the admin rejects on stdin -> conflict-cause 4 at the ISP, no nft element", async () => {
    const { isp, home } = await pair("tcp", ["--consent", "manual", "--consent-timeout", "20000"]);
    const { mid, response } = await mitigate(isp, "m2", 600);
    await ispStatus(isp, mid, response, "attack-mitigation-in-progress");
    const asked = await home.waitFor("consent-request", (l) => l.event === "consent-request" && l.mid === mid);
    assert.deepEqual((asked.devices as Array<{ address: string }>).map((d) => d.address), ["192.168.1.10"]);
    assert.match(String(asked.script), /add element inet dots_call_home block4 \{ 192\.168\.1\.10 \. 17 \. 203\.0\.113\.5 \. 5555 timeout 600s/);
    assert.ok(!(await tableTags()).some((t) => t.endsWith(`/${mid}`)), "nothing applied while consent is pending");
    assert.ok((await rise(300)).dev > 10, "not blocked while pending");

    home.send({ cmd: "reject", mid });
    const decision = await home.waitFor("legitimate decision", (l) => l.event === "decision" && l.mid === mid && l.outcome !== "pending");
    assert.deepEqual([decision.outcome, decision.reason], ["legitimate", "consent-rejected"]);
    const note = await isp.waitFor("conflict-cause 4", (l) => l.event === "status" && l.mid === mid && l.conflictCause !== undefined);
    assert.equal(note.conflictCause, "request-rejected-legitimate-traffic");
    assert.ok(!home.lines.some((l) => l.event === "enforcement"), "a rejected mitigation applies nothing");
    assert.deepEqual(await tableTags(), []);
    assert.ok((await rise(500)).dev > 20, "the device's traffic keeps flowing");
  });

  it("a 3 s lifetime: SIGKILL the dialer after the block, the kernel still lifts it by itself", async () => {
    const { isp, home } = await pair("udp", []);
    const { mid } = await mitigate(isp, "m3", 3);
    const added = await home.waitFor("enforcement added", (l) => l.event === "enforcement" && l.mid === mid && l.change === "added");
    assert.match(String(added.script), /timeout 3s/);
    await home.stop("SIGKILL"); // no withdrawal, no expiry handling: only the kernel's set timeout is left
    await sleep(200);
    assert.equal((await rise(800)).dev, 0, "the block holds without the process");
    await waitFor("the kernel to drop the elements", async () => (await tableTags()).length === 0, 6000, 200);
    await sleep(200);
    assert.ok((await rise(800)).dev > 50, "traffic flows again after the kernel timeout");
  });
});
