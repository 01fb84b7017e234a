// ISP-side continuity through real processes: `listen` is killed with SIGKILL and started again
// on the same port and state directory while `dial` keeps running (TLS-PSK, so the home notices
// the dead connection at once). Also the state-file failure cases, which must never stop it.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { sessionIdForPeer } from "../../src/dots/ids";
import { CliProcess, type CliLine } from "../support/cli-process";

const PSK = ["--psk-identity", "home-1", "--psk-key", "text:secretPSK-0123456789"];
const SESSION_ID = sessionIdForPeer({ method: "psk", pskIdentity: "home-1" });
const scope = (target: string): Record<string, unknown> => ({
  "target-prefix": [target],
  "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"],
  lifetime: 600,
});

describe("dots-call-home listen: restart with resync and durable mids (two processes, TLS-PSK)", function () {
  this.timeout(60000);
  const procs: CliProcess[] = [];
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "listen-restart-"));
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function listen(port: number, stateDir: string | undefined, name = "listen"): Promise<[CliProcess, number]> {
    const args = [
      "listen",
      "--tls",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      ...PSK,
      "--home-prefix",
      "203.0.113.0/24",
      "--request-repeat-ms",
      "200",
      "--request-timeout-ms",
      "5000",
    ];
    args.push("--state-dir", stateDir ?? "none");
    const p = new CliProcess(args, { name });
    procs.push(p);
    const l = await p.waitFor((x) => x.event === "listening", 10000, "listening");
    return [p, l.port as number];
  }

  function dial(port: number): CliProcess {
    const p = new CliProcess(
      [
        "dial",
        "127.0.0.1",
        "--port",
        String(port),
        "--transport",
        "tcp",
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
        "--terminating-period",
        "200",
      ],
      { name: "dial" },
    );
    procs.push(p);
    return p;
  }

  let seq = 0;
  async function command(p: CliProcess, cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = `c${++seq}`;
    p.send({ ...cmd, id });
    const line = await p.waitFor((l) => (l.event === "response" || l.event === "error") && l.id === id, 15000, `answer to ${cmd.cmd}`);
    assert.equal(line.event, "response", JSON.stringify(line));
    return line.outcome as Record<string, unknown>;
  }

  const isStateError = (l: CliLine): boolean => l.event === "error" && l.code === "STATE_FILE";

  it("kill -9 and restart: status for the old mids without any command, the first new request 2.01, the old mid withdrawn 2.02", async () => {
    const [isp, port] = await listen(0, dir, "listen#1");
    const home = dial(port);
    await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
    const old = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
    assert.equal(old.code, "2.01");
    const oldMid = old.mid as number;
    await isp.waitFor((l) => l.event === "status" && l.mid === oldMid && l.status === "attack-successfully-mitigated", 10000, "status 2");

    await isp.stop("SIGKILL");
    await home.waitFor((l) => l.event === "disconnected", 10000, "the home sees the listener gone");
    const [isp2] = await listen(port, dir, "listen#2");
    await isp2.waitFor((l) => l.event === "session-up", 15000, "session-up after the restart");
    const rs = await isp2.waitFor((l) => l.event === "resynced", 10000, "resynced");
    const found = rs.mitigations as Array<Record<string, unknown>>;
    assert.deepEqual(
      found.map((m) => [m.mid, m.status]),
      [[oldMid, "attack-successfully-mitigated"]],
    );
    assert.equal(rs.complete, true);
    // Nothing was typed into listen#2 yet: this comes from the Observe the resync registered.
    await isp2.waitFor(
      (l) => l.event === "status" && l.mid === oldMid && l.status === "attack-successfully-mitigated",
      10000,
      "status for the old mid",
    );

    const fresh = await command(isp2, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.8/32") });
    assert.equal(fresh.code, "2.01", JSON.stringify(fresh));
    assert.ok((fresh.mid as number) > oldMid);
    const w = await command(isp2, { cmd: "withdraw", session: "home-1", mid: oldMid });
    assert.equal(w.code, "2.02");
    await home.waitFor((l) => l.event === "ended" && l.mid === oldMid, 10000, "the home ends the old mitigation");
    assert.equal(isp2.lines.filter((l) => l.event === "error").length, 0, JSON.stringify(isp2.lines.filter((l) => l.event === "error")));
  });

  it("with --state-dir and nothing active at the home, the mid after a restart is above the last one used", async () => {
    const [isp, port] = await listen(0, dir, "listen#1");
    const home = dial(port);
    await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
    const m = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
    assert.equal(m.code, "2.01");
    assert.equal((await command(isp, { cmd: "withdraw", session: "home-1", mid: m.mid })).code, "2.02");
    await home.waitFor((l) => l.event === "ended" && l.mid === m.mid, 10000, "ended at the home");

    await isp.stop("SIGKILL");
    const [isp2] = await listen(port, dir, "listen#2");
    await isp2.waitFor((l) => l.event === "session-up", 15000, "session-up after the restart");
    const rs = await isp2.waitFor((l) => l.event === "resynced", 10000, "resynced");
    assert.deepEqual(rs.mitigations, [], "the home holds nothing");
    const next = await command(isp2, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
    assert.equal(next.code, "2.01");
    assert.ok((next.mid as number) > (m.mid as number), `mid ${next.mid} must exceed ${m.mid}`);
    const saved = JSON.parse(fs.readFileSync(path.join(dir, "listener", `${SESSION_ID}.json`), "utf8")) as {
      home: string;
      mids: Record<string, number>;
    };
    assert.equal(saved.home, "home-1");
    assert.ok(saved.mids[next.cuid as string] >= (next.mid as number));
  });

  it("failover: the home moves to a second listener process (kill -9 of the first), which resyncs the same way", async () => {
    // Two listener processes on one port, 127.0.0.1 and 127.0.0.2, each with its own state.
    const [first, port] = await listen(0, path.join(dir, "a"), "listen-a");
    const args = [
      "listen",
      "--tls",
      "--host",
      "127.0.0.2",
      "--port",
      String(port),
      ...PSK,
      "--home-prefix",
      "203.0.113.0/24",
      "--request-repeat-ms",
      "200",
      "--request-timeout-ms",
      "5000",
      "--state-dir",
      path.join(dir, "b"),
    ];
    const second = new CliProcess(args, { name: "listen-b" });
    procs.push(second);
    await second.waitFor((x) => x.event === "listening", 10000, "listening b");
    const p = new CliProcess(
      [
        "dial",
        "127.0.0.1",
        "127.0.0.2",
        "--port",
        String(port),
        "--transport",
        "tcp",
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
      ],
      { name: "dial" },
    );
    procs.push(p);
    const up = await Promise.race(
      [first, second].map((x) => x.waitFor((l) => l.event === "session-up", 15000, "session-up").then(() => x)),
    );
    const other = up === first ? second : first;
    const m = await command(up, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
    const n = await command(up, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.8/32") });
    assert.deepEqual([m.code, n.code], ["2.01", "2.01"]);

    await up.stop("SIGKILL");
    await other.waitFor((l) => l.event === "session-up", 15000, "session-up at the other listener");
    const rs = await other.waitFor((l) => l.event === "resynced", 10000, "resynced at the other listener");
    assert.deepEqual(
      (rs.mitigations as Array<Record<string, unknown>>).map((x) => x.mid),
      [m.mid, n.mid],
    );
    for (const mid of [m.mid, n.mid]) await other.waitFor((l) => l.event === "status" && l.mid === mid, 10000, `status for mid ${mid}`);
    const fresh = await command(other, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.9/32") });
    assert.equal(fresh.code, "2.01", JSON.stringify(fresh));
    assert.ok((fresh.mid as number) > (n.mid as number));
    assert.equal((await command(other, { cmd: "withdraw", session: "home-1", mid: m.mid })).code, "2.02");
  });

  for (const [name, content] of [
    ["corrupt", "{not json"],
    ["empty", ""],
  ] as const) {
    it(`a ${name} state file: an error line naming the file, the listener runs on and requests get 2.01`, async () => {
      const file = path.join(dir, "listener", `${SESSION_ID}.json`);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      const [isp, port] = await listen(0, dir);
      dial(port);
      await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
      const err = await isp.waitFor(isStateError, 5000, "STATE_FILE error");
      assert.equal(err.file, file);
      assert.ok(String(err.message).includes(file));
      const a = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
      const b = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.8/32") });
      assert.deepEqual([a.code, b.code], ["2.01", "2.01"]);
      assert.ok((b.mid as number) > (a.mid as number));
      assert.ok(isp.running);
      // A fresh, valid file replaced it; the bad one was kept aside for the operator.
      assert.ok(
        (JSON.parse(fs.readFileSync(file, "utf8")) as { mids: Record<string, number> }).mids[a.cuid as string] >= (b.mid as number),
      );
      assert.equal(fs.readdirSync(path.dirname(file)).filter((f) => f.includes(".corrupt-")).length, 1);
    });
  }

  it("an unwritable state file or directory: an error line naming it, requests still go out with increasing mids", async () => {
    const file = path.join(dir, "listener", `${SESSION_ID}.json`);
    fs.mkdirSync(path.join(file, "in-the-way"), { recursive: true }); // no rename can replace it, even as root
    const [isp, port] = await listen(0, dir);
    dial(port);
    await isp.waitFor((l) => l.event === "session-up", 15000, "session-up");
    const a = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.7/32") });
    const b = await command(isp, { cmd: "mitigate", session: "home-1", request: scope("198.51.100.8/32") });
    assert.deepEqual([a.code, b.code], ["2.01", "2.01"]);
    assert.ok((b.mid as number) > (a.mid as number));
    const errs = isp.lines.filter(isStateError);
    assert.ok(
      errs.some((e) => e.file === file && /cannot write/.test(String(e.message))),
      JSON.stringify(errs),
    );
    assert.ok(isp.running);

    // A state directory that is a regular file: one error at start, then memory only.
    const notADir = path.join(dir, "plain-file");
    fs.writeFileSync(notADir, "x");
    const p = new CliProcess(
      ["listen", "--tls", "--host", "127.0.0.1", "--port", "0", ...PSK, "--home-prefix", "203.0.113.0/24", "--state-dir", notADir],
      { name: "listen-bad-dir" },
    );
    procs.push(p);
    const e = await p.waitFor(isStateError, 10000, "STATE_FILE error for the directory");
    assert.equal(e.file, path.join(notADir, "listener"));
    await p.waitFor((l) => l.event === "listening", 10000, "listening anyway");
  });
});
