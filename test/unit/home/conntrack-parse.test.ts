// Parsing real conntrack output captured from the e2e namespaces: tool listing (default and
// extended), events, and /proc/net/nf_conntrack; IPv4/IPv6, tcp/udp/icmp/icmpv6.
import { strict as assert } from "node:assert";
import { parseConntrackLine, flowKey, type ConntrackFlow } from "../../../src/home/conntrack-parse";
import { fixture } from "./fixtures";

function flows(text: string): ConntrackFlow[] {
  return text
    .split("\n")
    .map(parseConntrackLine)
    .filter((p) => p !== undefined)
    .map((p) => p!.flow);
}

describe("conntrack line parsing", () => {
  it("reads every entry of a default listing and skips the summary line", () => {
    const f = flows(fixture("list-default.txt"));
    assert.equal(f.length, 9);
    assert.equal(parseConntrackLine("conntrack v1.4.7 (conntrack-tools): 9 flow entries have been shown."), undefined);
  });

  it("reads a NATed IPv4 UDP flow: device in the original tuple, public port in the reply tuple", () => {
    const line =
      "udp      17 29 src=192.168.1.10 dst=203.0.113.5 sport=49149 dport=5555 [UNREPLIED] src=203.0.113.5 dst=198.51.100.2 sport=5555 dport=49149 mark=0 use=1";
    const p = parseConntrackLine(line)!;
    assert.equal(p.event, undefined);
    assert.deepEqual(p.flow, {
      family: 4,
      protocol: 17,
      orig: { src: "192.168.1.10", dst: "203.0.113.5", sport: 49149, dport: 5555 },
      reply: { src: "203.0.113.5", dst: "198.51.100.2", sport: 5555, dport: 49149 },
      timeout: 29,
      flags: ["UNREPLIED"],
      mark: 0,
    });
  });

  it("reads tcp state, icmp type/code/id and icmpv6 from the extended listing", () => {
    const f = flows(fixture("list-extended.txt"));
    assert.equal(f.length, 9);
    const tcp4 = f.find((x) => x.protocol === 6 && x.family === 4)!;
    assert.equal(tcp4.state, "CLOSE_WAIT");
    assert.deepEqual(tcp4.flags, ["ASSURED"]);
    assert.equal(tcp4.reply.dst, "198.51.100.2");
    const icmp = f.find((x) => x.protocol === 1)!;
    assert.deepEqual(icmp.orig, { src: "192.168.1.10", dst: "203.0.113.5", type: 8, code: 0, id: 4660 });
    assert.deepEqual(icmp.reply, { src: "203.0.113.5", dst: "198.51.100.2", type: 0, code: 0, id: 4660 });
    const icmp6 = f.find((x) => x.protocol === 58)!;
    assert.equal(icmp6.family, 6);
    assert.equal(icmp6.orig.type, 128);
    assert.equal(icmp6.reply.dst, "2001:db8:1::10", "no NAT for IPv6: the reply goes to the device");
    const unknown = f.find((x) => x.protocol === 2)!;
    assert.equal(unknown.orig.sport, undefined);
  });

  it("gives /proc/net/nf_conntrack the same flows as the tool, IPv6 addresses in canonical form", () => {
    const proc = flows(fixture("proc-nf_conntrack.txt"));
    const tool = flows(fixture("list-extended.txt"));
    assert.equal(proc.length, 9);
    assert.deepEqual(proc.map(flowKey).sort(), tool.map(flowKey).sort());
    const v6 = proc.find((x) => x.family === 6 && x.protocol === 17)!;
    assert.equal(v6.orig.src, "2001:db8:1::10");
    assert.equal(v6.zone, 0);
  });

  it("reads NEW, UPDATE and DESTROY events in both output formats", () => {
    for (const name of ["events-default.txt", "events-extended.txt"]) {
      const parsed = fixture(name)
        .split("\n")
        .map(parseConntrackLine)
        .filter((p) => p !== undefined);
      assert.equal(parsed.length, 15, name);
      assert.equal(parsed.filter((p) => p!.event === "NEW").length, 5, name);
      assert.equal(parsed.filter((p) => p!.event === "UPDATE").length, 10, name);
    }
    const destroy = fixture("events-destroy.txt")
      .split("\n")
      .map(parseConntrackLine)
      .filter((p) => p !== undefined);
    assert.equal(destroy.length, 3);
    assert.ok(destroy.every((p) => p!.event === "DESTROY"));
    assert.equal(destroy[0]!.flow.timeout, undefined, "DESTROY of tcp has no timeout column");
    assert.equal(destroy[0]!.flow.state, "CLOSE");
  });

  it("rejects malformed lines instead of guessing", () => {
    for (const bad of [
      "",
      "garbage",
      "udp 17 29 src=192.168.1.10 dst=203.0.113.5 sport=1 dport=2", // no reply tuple
      "udp 17 29 src=192.168.1.999 dst=203.0.113.5 sport=1 dport=2 src=203.0.113.5 dst=198.51.100.2 sport=2 dport=1",
      "udp 17 29 src=192.168.1.10 dst=203.0.113.5 sport=70000 dport=2 src=203.0.113.5 dst=198.51.100.2 sport=2 dport=1",
      "udp 17 29 src=evil.example dst=203.0.113.5 sport=1 dport=2 src=203.0.113.5 dst=198.51.100.2 sport=2 dport=1",
      "udp 999 29 src=192.168.1.10 dst=203.0.113.5 sport=1 dport=2 src=203.0.113.5 dst=198.51.100.2 sport=2 dport=1",
    ]) {
      assert.equal(parseConntrackLine(bad), undefined, bad);
    }
  });

  it("ignores an entry id printed with -o id (not part of a tuple)", () => {
    const p = parseConntrackLine(
      "tcp      6 431999 ESTABLISHED src=192.168.1.10 dst=203.0.113.5 sport=1 dport=2 src=203.0.113.5 dst=198.51.100.2 sport=2 dport=1 [ASSURED] mark=0 use=1 id=3735928559",
    )!;
    assert.equal(p.flow.orig.id, undefined);
    assert.equal(p.flow.reply.id, undefined);
  });
});
