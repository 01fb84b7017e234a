// Two upstream ISPs on one NAT router (RFC 9066: one call-home session per upstream domain), as
// separate processes: two `dots-call-home listen` (ISP A, ISP B) and two `dots-call-home dial
// --nft-owner` blocking into the same nft table. Both ISPs ask to block the same device flow (the
// same element); ISP A's withdrawal must leave the device blocked for ISP B, across a SIGKILL and
// restart of either dialer, until ISP B withdraws too.
import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CliProcess } from "../support/cli-process";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { NftablesBackend } from "../../src/home/filter-backend";

const PUBLIC = "198.51.100.2";
const ISPS = {
  a: { owner: "isp-a", psk: ["--psk-identity", "home-1", "--psk-key", "text:isp-a-call-home-psk-0123456789"] },
  b: { owner: "isp-b", psk: ["--psk-identity", "home-1", "--psk-key", "text:isp-b-call-home-psk-9876543210"] },
} as const;
type Isp = keyof typeof ISPS;

describe("two upstream ISPs, two dial processes, one nft table (netns, real nft and conntrack)", function () {
  this.timeout(90_000);
  let lab: Lab | undefined;
  let sender: Sender | undefined;
  const procs = new Set<CliProcess>();
  const stateDirs: Record<Isp, string> = { a: "", b: "" };
  let seen: { address: string; port: number };

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
    sender = lab.startSender({ from: "lan", target: "203.0.113.5", port: 5555, tag: "dev", sourcePort: 40001, maxSeconds: 85 });
    [seen] = await waitFor("the flood to reach the victim", async () => {
      const s = await lab!.seenDeviceSources();
      return s.length > 0 ? s : undefined;
    });
    for (const k of ["a", "b"] as const) stateDirs[k] = mkdtempSync(join(tmpdir(), `dch-two-isps-${k}-`));
  });

  after(async () => {
    for (const p of procs) await p.stop("SIGKILL");
    await sender?.stop();
    await lab?.destroy();
    for (const d of Object.values(stateDirs)) if (d) rmSync(d, { recursive: true, force: true });
  });

  async function listen(isp: Isp): Promise<{ proc: CliProcess; port: number }> {
    const proc = new CliProcess(
      ["listen", "--dtls", "--host", "198.51.100.1", "--port", "0", ...ISPS[isp].psk, "--home-prefix", `${PUBLIC}/32`],
      { name: `listen-${isp}`, netns: lab!.ns.isp },
    );
    procs.add(proc);
    const port = (await proc.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    return { proc, port };
  }

  async function dial(isp: Isp, port: number): Promise<CliProcess> {
    const proc = new CliProcess(
      [
        "dial",
        "198.51.100.1",
        "--port",
        String(port),
        "--transport",
        "udp",
        ...ISPS[isp].psk,
        "--home-prefix",
        `${PUBLIC}/32`,
        "--reconnect-min",
        "200",
        "--reconnect-max",
        "1000",
        "--terminating-period",
        "300",
        "--enforce",
        "nftables",
        "--nat",
        "conntrack",
        "--nft-owner",
        ISPS[isp].owner,
        "--state-dir",
        stateDirs[isp],
      ],
      { name: `dial-${isp}`, netns: lab!.ns.router },
    );
    procs.add(proc);
    await proc.waitFor((l) => l.event === "enforcer-ready", 10_000, `enforcer-ready ${isp}`);
    return proc;
  }

  async function kill(p: CliProcess): Promise<void> {
    await p.stop("SIGKILL");
    procs.delete(p);
  }

  /** Tags of the elements in each owner's sets of the shared table. */
  async function held(): Promise<Record<Isp, string[]>> {
    const out = { a: [] as string[], b: [] as string[] };
    for (const k of ["a", "b"] as const)
      out[k] = (await new NftablesBackend(lab!.router, "dots_call_home", ISPS[k].owner).list()).map((e) => `${e.key} ${e.comment}`);
    return out;
  }

  /** Waits until the listener has seen its n-th session come up (a restarted dialer's). */
  async function sessionUp(isp: CliProcess, n: number): Promise<void> {
    await isp.waitFor(
      (l) => l.event === "session-up" && isp.lines.filter((x) => x.event === "session-up").length >= n,
      10_000,
      `session-up #${n}`,
    );
  }

  async function deviceReaches(ms: number): Promise<number> {
    const a = (await lab!.counters()).dev;
    await sleep(ms);
    return (await lab!.counters()).dev - a;
  }

  it("ISP A's withdrawal leaves ISP B's block of the same flow in place, across restarts of either dialer", async () => {
    const A = await listen("a");
    const B = await listen("b");
    let homeA = await dial("a", A.port);
    let homeB = await dial("b", B.port);
    await A.proc.waitFor((l) => l.event === "session-up", 10_000, "session-up A");
    await B.proc.waitFor((l) => l.event === "session-up", 10_000, "session-up B");

    const request = {
      "target-prefix": ["203.0.113.5/32"],
      "target-port-range": [{ "lower-port": 5555 }],
      "target-protocol": [17],
      "ietf-dots-call-home:source-prefix": [`${seen.address}/32`],
      "ietf-dots-call-home:source-port-range": [{ "lower-port": seen.port }],
      lifetime: 600,
    };
    const mids: Record<Isp, number> = { a: 0, b: 0 };
    for (const [k, isp, home] of [
      ["a", A.proc, homeA],
      ["b", B.proc, homeB],
    ] as const) {
      isp.send({ cmd: "mitigate", id: `m-${k}`, session: "home-1", request });
      const r = await isp.waitFor((l) => l.event === "response" && l.id === `m-${k}`, 10_000, `PUT ${k}`);
      mids[k] = (r.outcome as { mid: number }).mid;
      const d = await home.waitFor((l) => l.event === "decision" && l.mid === mids[k], 10_000, `decision ${k}`);
      assert.equal(d.outcome, "enforced", String(d.detail));
    }
    // the same elements (device address and MAC, to the target flow), once in each owner's sets
    const keys = (l: string[]) => l.map((x) => x.split(" dots:")[0]).sort();
    let t = await held();
    assert.deepEqual(keys(t.a), ["192.168.1.10 . 17 . 203.0.113.5 . 5555", `${lab!.deviceMac} . 17 . 203.0.113.5 . 5555`].sort());
    assert.deepEqual(keys(t.b), keys(t.a), JSON.stringify(t));
    const held0 = t;
    await sleep(200);
    assert.equal(await deviceReaches(800), 0, "blocked");

    // dialer A dies and comes back: its reconcile keeps its own element and touches none of B's
    await kill(homeA);
    homeA = await dial("a", A.port);
    const recA = await homeA.waitFor((l) => l.event === "reconciled", 10_000, "reconciled A");
    assert.deepEqual(
      (recA.kept as Array<{ mid: number }>).map((m) => m.mid),
      [mids.a],
    );
    assert.equal(recA.removed, 0);
    assert.deepEqual(await held(), t);

    // ISP A withdraws (over the new session): A's element goes, B's stays, the device stays blocked
    await sessionUp(A.proc, 2);
    A.proc.send({ cmd: "withdraw", id: "w-a", session: "home-1", mid: mids.a });
    const wa = await A.proc.waitFor((l) => l.event === "response" && l.id === "w-a", 10_000, "withdraw A");
    assert.equal((wa.outcome as { code: string }).code, "2.02");
    await homeA.waitFor((l) => l.event === "enforcement" && l.mid === mids.a && l.change === "removed", 10_000, "removed A");
    t = await held();
    assert.deepEqual(t.a, []);
    assert.deepEqual(keys(t.b), keys(held0.a), "ISP B's elements are still in the kernel");
    await sleep(200);
    assert.equal(await deviceReaches(1000), 0, "still blocked for ISP B after ISP A's withdrawal");

    // dialer B dies and comes back: its block is kept
    await kill(homeB);
    homeB = await dial("b", B.port);
    const recB = await homeB.waitFor((l) => l.event === "reconciled", 10_000, "reconciled B");
    assert.deepEqual(
      (recB.kept as Array<{ mid: number }>).map((m) => m.mid),
      [mids.b],
    );
    assert.deepEqual(keys((await held()).b), keys(held0.a));
    assert.equal(await deviceReaches(800), 0, "still blocked after B's restart");

    // ISP B withdraws too: now the device gets through again
    await sessionUp(B.proc, 2);
    B.proc.send({ cmd: "withdraw", id: "w-b", session: "home-1", mid: mids.b });
    await homeB.waitFor((l) => l.event === "enforcement" && l.mid === mids.b && l.change === "removed", 10_000, "removed B");
    assert.deepEqual(await held(), { a: [], b: [] });
    await sleep(200);
    assert.ok((await deviceReaches(1000)) > 20, "unblocked once neither ISP needs the block");
  });
});
