// The dial runner's command handling around the enforcer, in-process (the two-process runs over
// DTLS are in cli.test.ts). No ISP listens here: the dialer's connection attempts simply fail.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseDialArgs, type DialConfig } from "../../src/cli/args";
import { makeDialRunner, type DialRunner } from "../../src/cli/dial";
import { STATE_FORMAT, stateFileName } from "../../src/dots/home-state";

type Ev = { event: string } & Record<string, unknown>;

describe("cli/dial runner", () => {
  let dir: string;
  let nat: string;
  const runners: DialRunner[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-dial-runner-"));
    nat = path.join(dir, "nat.json");
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
        },
      ]),
    );
  });
  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  // port 9 (discard) on loopback: nothing answers, the dialer backs off for a minute
  const config = (...extra: string[]) =>
    parseDialArgs([
      "127.0.0.1",
      "--port",
      "9",
      "--transport",
      "tcp",
      "--psk-identity",
      "h",
      "--psk-key",
      "text:sixteen-byte-key",
      "--home-prefix",
      "198.51.100.2/32",
      "--state-dir",
      fs.mkdtempSync(path.join(dir, "state-")),
      ...extra,
    ]) as DialConfig;
  const runner = (cfg: DialConfig): { r: DialRunner; events: Ev[] } => {
    const events: Ev[] = [];
    const r = makeDialRunner(cfg, (event, fields = {}) => events.push({ event, ...fields }));
    runners.push(r);
    return { r, events };
  };

  it("without --enforce, approve and reject are refused and decide goes to the engine", () => {
    const { r } = runner(config());
    assert.throws(() => r.command({ cmd: "approve", mid: 1 }), /runs without --enforce/);
    assert.throws(() => r.command({ cmd: "reject", mid: 1 }), /runs without --enforce/);
    assert.throws(() => r.command({ cmd: "decide", mid: 1, outcome: "enforced" }), /no active mitigation with mid 1/);
    assert.throws(() => r.command({ cmd: "nonsense" }), /dial accepts decide, approve, reject, mitigations/);
  });

  it("with --enforce: the enforcer is ready before the first connection attempt; consent commands fit the policy", async () => {
    const { r, events } = runner(config("--enforce", "dry-run", "--nat", `static:${nat}`, "--action", "quarantine"));
    await r.start();
    const names = events.map((e) => e.event);
    assert.ok(
      names.indexOf("enforcer-ready") >= 0 &&
        (names.indexOf("connecting") < 0 || names.indexOf("enforcer-ready") < names.indexOf("connecting")),
      names.join(","),
    );
    const ready = events.find((e) => e.event === "enforcer-ready")!;
    assert.deepEqual(
      [ready.backend, ready.action, ready.nat, (ready.consent as { mode: string }).mode],
      ["dry-run", "quarantine", "static", "auto"],
    );
    assert.throws(() => r.command({ cmd: "approve", mid: 1 }), /consent is automatic here/);
    assert.throws(() => r.command({ cmd: "decide", mid: 1, outcome: "enforced" }), /the enforcer decides/);
    r.command({ cmd: "mitigations", id: 3 });
    const list = events.find((e) => e.event === "mitigations")!;
    assert.deepEqual([list.id, list.mitigations, list.enforced, list.pendingConsent], [3, [], [], []]);
  });

  it("with --consent manual, approve/reject need a uint32 mid that waits for consent", async () => {
    const { r } = runner(config("--enforce", "dry-run", "--nat", `static:${nat}`, "--consent", "manual"));
    await r.start();
    assert.throws(() => r.command({ cmd: "approve", mid: "1" }), /"mid" must be a uint32/);
    assert.throws(() => r.command({ cmd: "reject", mid: 5, cuid: 7 }), /"cuid" must be a string/);
    assert.throws(() => r.command({ cmd: "reject", mid: 5 }), /no mitigation with mid 5 waits for consent/);
  });
  it("--state-dir with a damaged state file: an error event naming the file, the intact mitigations served, the file kept aside", async () => {
    const state = fs.mkdtempSync(path.join(dir, "state-"));
    const file = path.join(state, stateFileName("h@9"));
    const good = {
      cuid: "c1",
      mid: 4,
      scope: { "target-prefix": ["203.0.113.5/32"], "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"] },
      lifetime: 600,
      expiresAt: Date.now() + 600_000,
      status: 2,
      mitigationStart: 1,
      terminatingPeriodMs: 120000,
    };
    fs.writeFileSync(
      file,
      [JSON.stringify({ format: STATE_FORMAT, version: 1 }), JSON.stringify(good), '{"cuid":"c1","mid":5,"sco'].join("\n"),
    );
    const { r, events } = runner(
      parseDialArgs([
        "127.0.0.1",
        "--port",
        "9",
        "--transport",
        "tcp",
        "--psk-identity",
        "h",
        "--psk-key",
        "text:sixteen-byte-key",
        "--home-prefix",
        "198.51.100.2/32",
        "--state-dir",
        state,
      ]) as DialConfig,
    );
    await r.start();
    const err = events.find((e) => e.event === "error" && e.code === "STATE_CORRUPT");
    assert.ok(err, JSON.stringify(events));
    assert.equal(err.file, file);
    assert.match(String(err.message), /cut off/);
    assert.deepEqual(events.find((e) => e.event === "restored")?.mitigations, 1);
    r.command({ cmd: "mitigations" });
    const list = events.find((e) => e.event === "mitigations")!.mitigations as Array<{ mid: number; status: string }>;
    assert.deepEqual(
      list.map((m) => [m.mid, m.status]),
      [[4, "attack-successfully-mitigated"]],
    );
    assert.ok(
      fs.readdirSync(state).some((n) => n.startsWith(`${path.basename(file)}.corrupt-`)),
      fs.readdirSync(state).join(","),
    );
  });

  it("--state-dir that cannot be written: a STATE_UNWRITABLE error event, the dialer still starts (and will answer 5.03)", async () => {
    const blocker = path.join(dir, "a-file");
    fs.writeFileSync(blocker, "");
    const { r, events } = runner(
      parseDialArgs([
        "127.0.0.1",
        "--port",
        "9",
        "--transport",
        "tcp",
        "--psk-identity",
        "h",
        "--psk-key",
        "text:sixteen-byte-key",
        "--home-prefix",
        "198.51.100.2/32",
        "--state-dir",
        path.join(blocker, "state"),
      ]) as DialConfig,
    );
    await r.start();
    const err = events.find((e) => e.event === "error" && e.code === "STATE_UNWRITABLE");
    assert.ok(err && String(err.message).includes(path.join(blocker, "state")), JSON.stringify(events));
    assert.deepEqual(events.find((e) => e.event === "restored")?.mitigations, 0);
  });
});
