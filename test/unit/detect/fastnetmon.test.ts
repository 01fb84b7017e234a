// FastNetMon notify-script input -> call-home scope, on what FastNetMon 1.2.4 (Debian) really
// wrote to its notify script in the netns e2e (fixtures/), and on damaged variants of it.
import { strict as assert } from "node:assert";
import {
  attackScope,
  homeForAddress,
  parseFastNetMonArgs,
  parseFastNetMonDetails,
  scopeProblems,
  FastNetMonArgsError,
} from "../../../src/detect/fastnetmon";
import { fixture } from "./fixtures";

const BAN = fixture("fastnetmon-1.2.4-ban-udp-flows.txt");
const DETAILS = fixture("fastnetmon-1.2.4-attack-details-udp.txt");
const call = (action = "ban", ip = "198.51.100.2", dir = "outgoing") => parseFastNetMonArgs([ip, dir, "432", action]);

describe("FastNetMon notify arguments", () => {
  it("reads IP, direction, pps and action as FastNetMon 1.2.4 passes them", () => {
    assert.deepEqual(call(), { address: "198.51.100.2", family: "ipv4", direction: "outgoing", pps: 432, action: "ban" });
    assert.equal(call("unban").action, "unban");
    assert.equal(call("attack_details").action, "attack_details");
    assert.deepEqual(parseFastNetMonArgs(["2001:DB8:0::5", "incoming", "10", "ban"]).address, "2001:db8::5");
    assert.equal(parseFastNetMonArgs(["198.51.100.2", "other", "1", "ban"]).direction, "other");
  });

  it("names the bad argument", () => {
    assert.throws(() => parseFastNetMonArgs(["198.51.100.2", "outgoing", "432"]), /4 arguments/);
    assert.throws(
      () => parseFastNetMonArgs(["198.51.100.300", "outgoing", "1", "ban"]),
      (e: Error) => e instanceof FastNetMonArgsError && /argument 1/.test(e.message),
    );
    assert.throws(() => parseFastNetMonArgs(["198.51.100.2", "outgoing", "-1", "ban"]), /argument 3/);
    assert.throws(() => parseFastNetMonArgs(["198.51.100.2", "outgoing", "1", "block"]), /argument 4/);
  });
});

describe("FastNetMon attack details", () => {
  it("ban with connection tracking: the flows name the NATed source ports, the target and the protocol", () => {
    const d = parseFastNetMonDetails(BAN);
    assert.equal(d.address, "198.51.100.2");
    assert.equal(d.attackType, "udp_flood");
    assert.equal(d.protocol, 17);
    assert.deepEqual(
      d.records.map((r) => [r.kind, r.sourcePort, r.target, r.targetPort, r.protocol, r.weight]),
      [
        ["flow", 40001, "203.0.113.5", 5555, 17, 583],
        ["flow", 40002, "203.0.113.5", 5555, 17, 49],
      ],
    );
    assert.deepEqual(d.unreadable, []);
  });

  it("the scope keeps the attacking flow and leaves out the light one of another device behind the same NAT", () => {
    const s = attackScope(call(), parseFastNetMonDetails(BAN), { lifetime: 600 });
    assert.deepEqual(s.scope, {
      "target-prefix": ["203.0.113.5/32"],
      "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"],
      lifetime: 600,
      "target-protocol": [17],
      "target-port-range": [{ "lower-port": 5555 }],
      "ietf-dots-call-home:source-port-range": [{ "lower-port": 40001 }],
    });
    assert.ok(
      s.notes.some((n) => /1 light flow/.test(n)),
      s.notes.join("; "),
    );
    assert.deepEqual(scopeProblems(s.scope!, ["198.51.100.2/32"]), []);
    // a share of 0 keeps both flows
    assert.deepEqual(attackScope(call(), parseFastNetMonDetails(BAN), { lifetime: 600, flowShare: 0 }).sourcePorts, [40001, 40002]);
  });

  it("attack_details: the packet samples give the same scope", () => {
    const d = parseFastNetMonDetails(DETAILS);
    assert.equal(d.records.length, 10);
    assert.ok(d.records.every((r) => r.kind === "sample" && r.protocol === 17 && r.target === "203.0.113.5" && r.targetPort === 5555));
    const s = attackScope(call("attack_details"), d, { lifetime: 600 });
    assert.deepEqual(s.sourcePorts, [40001]);
    assert.deepEqual(s.targets, ["203.0.113.5"]);
  });

  it("without flows (connection tracking off) there is no target: no scope, a note saying why", () => {
    const noFlows = BAN.slice(0, BAN.indexOf("Outgoing\n"));
    const s = attackScope(call(), parseFastNetMonDetails(noFlows), { lifetime: 600 });
    assert.equal(s.scope, undefined);
    assert.match(s.notes.join(";"), /no flows or packet samples/);
  });

  it("samples without usable ports (ICMP) give a request by address, target and protocol only", () => {
    const icmp = DETAILS.replace(/protocol: udp/g, "protocol: icmp")
      .replace(/:4000[12] >/g, ":0 >")
      .replace(/:5555 /g, ":0 ");
    const s = attackScope(call("attack_details"), parseFastNetMonDetails(icmp), { lifetime: 600 });
    assert.deepEqual(s.scope, {
      "target-prefix": ["203.0.113.5/32"],
      "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"],
      lifetime: 600,
      "target-protocol": [1],
    });
  });

  it("garbage, truncation and mangled lines never throw; mangled flow lines are reported, ports dropped", () => {
    for (const text of [
      "",
      "\u0000\u0001binary",
      "IP: not-an-ip\n",
      BAN.slice(0, 700),
      "198.51.100.2:99999 > 203.0.113.5:5555 1 bytes 1 packets\n",
      "x".repeat(2_000_000),
    ]) {
      const d = parseFastNetMonDetails(text);
      attackScope(call(), d, { lifetime: 60 });
    }
    const d = parseFastNetMonDetails("Outgoing\n\nUDP flows: 1\n198.51.100.2:99999 > 203.0.113.5:5555 1 bytes 9 packets\n");
    assert.equal(d.records.length, 0);
    assert.equal(d.unreadable.length, 1);
  });

  it("traffic from other addresses in the details is not used", () => {
    const other = BAN.replace(/198\.51\.100\.2:/g, "198.51.100.9:");
    const s = attackScope(call(), parseFastNetMonDetails(other), { lifetime: 60 });
    assert.equal(s.scope, undefined);
    assert.match(s.notes.join(";"), /no flows or samples from 198\.51\.100\.2/);
  });

  it("IPv6 samples: the port is the last group", () => {
    const v6 =
      "2026-12-04 16:06:38.556460 2001:db8:ff::2:40001 > 2001:db8:c000::5:5555 protocol: udp frag: 0  packets: 1 size: 58 bytes ttl: 63 sample ratio: 1  \n";
    const s = attackScope(parseFastNetMonArgs(["2001:db8:ff::2", "outgoing", "900", "attack_details"]), parseFastNetMonDetails(v6), {
      lifetime: 60,
    });
    assert.deepEqual(s.scope?.["target-prefix"], ["2001:db8:c000::5/128"]);
    assert.deepEqual(s.scope?.["ietf-dots-call-home:source-prefix"], ["2001:db8:ff::2/128"]);
    assert.deepEqual(s.sourcePorts, [40001]);
  });

  it("more ports than the limit: the request names address and targets only", () => {
    const many = Array.from({ length: 20 }, (_, i) => `198.51.100.2:${41000 + i} > 203.0.113.5:5555 100 bytes 10 packets`).join("\n");
    const s = attackScope(call(), parseFastNetMonDetails(`Outgoing\n\nUDP flows: 20\n${many}\n`), { lifetime: 60, maxPorts: 16 });
    assert.equal(s.scope?.["ietf-dots-call-home:source-port-range"], undefined);
    assert.deepEqual(s.targets, ["203.0.113.5"]);
  });
});

describe("FastNetMon address -> home", () => {
  const homes = { "home-1": ["198.51.100.0/24"], "home-2": ["198.51.100.2/32"], "home-3": ["2001:db8:ff::/64"] };
  it("the longest matching prefix names the home; outside every prefix: none", () => {
    assert.deepEqual(homeForAddress("198.51.100.2", homes), { home: "home-2", prefix: "198.51.100.2/32" });
    assert.equal(homeForAddress("198.51.100.7", homes)?.home, "home-1");
    assert.equal(homeForAddress("2001:db8:ff::2", homes)?.home, "home-3");
    assert.equal(homeForAddress("203.0.113.5", homes), undefined);
  });

  it("a scope whose source lies outside the home's prefixes is refused before sending", () => {
    const s = attackScope(call(), parseFastNetMonDetails(BAN), { lifetime: 600 });
    assert.match(scopeProblems(s.scope!, ["192.0.2.0/24"]).join(";"), /not inside/);
  });
});
