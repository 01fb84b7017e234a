// The dial runner's command handling around the enforcer, in-process (the two-process runs over
// DTLS are in cli.test.ts). No ISP listens here: the dialer's connection attempts simply fail.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseDialArgs, type DialConfig } from "../../src/cli/args";
import { makeDialRunner, type DialRunner } from "../../src/cli/dial";

type Ev = { event: string } & Record<string, unknown>;

describe("cli/dial runner", () => {
  let dir: string;
  let nat: string;
  const runners: DialRunner[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-dial-runner-"));
    nat = path.join(dir, "nat.json");
    fs.writeFileSync(nat, JSON.stringify([{ protocol: "udp", device: "192.168.1.10", devicePort: 40001, public: "198.51.100.2", publicPort: 61001, target: "203.0.113.5", targetPort: 5555 }]));
  });
  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  // port 9 (discard) on loopback: nothing answers, the dialer backs off for a minute
  const config = (...extra: string[]) => parseDialArgs(["127.0.0.1", "--port", "9", "--transport", "tcp", "--psk-identity", "h", "--psk-key", "text:sixteen-byte-key", "--home-prefix", "198.51.100.2/32", ...extra]) as DialConfig;
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
    assert.ok(names.indexOf("enforcer-ready") >= 0 && (names.indexOf("connecting") < 0 || names.indexOf("enforcer-ready") < names.indexOf("connecting")), names.join(","));
    const ready = events.find((e) => e.event === "enforcer-ready")!;
    assert.deepEqual([ready.backend, ready.action, ready.nat, (ready.consent as { mode: string }).mode], ["dry-run", "quarantine", "static", "auto"]);
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
});
