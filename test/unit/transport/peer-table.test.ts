// PeerTable answers as a Map keyed by "address|port" does, for every address form a UDP socket
// reports (IPv4, v4-mapped on a dual-stack socket, IPv6), through growth, replacement and
// deletions that shift probe runs, and over random operation sequences (seeded).
import { strict as assert } from "node:assert";
import { PeerTable } from "../../../src/transport/dtls/peer-table";
import { rng } from "../../support/fuzz";

interface TestPeer {
  socketAddress: string;
  port: number;
  id: number;
}

function check(table: PeerTable<TestPeer>, real: Map<string, TestPeer>, probes: Array<[string, number]>, at: string): void {
  assert.equal(table.size, real.size, `size ${at}`);
  for (const [address, port] of probes) {
    const key = PeerTable.key(address, port);
    assert.equal(table.find(address, port), real.get(key), `find(${address}, ${port}) ${at}`);
    assert.equal(table.get(key), real.get(key), `get(${key}) ${at}`);
  }
  assert.deepEqual(new Set(table.values()), new Set(real.values()), `values ${at}`);
}

describe("PeerTable (the DTLS server's peers by address and port)", () => {
  it("finds, replaces and deletes like a Map over 30,000 random operations in every address form", () => {
    const random = rng(9132);
    // Few addresses and ports, so slots collide, probe runs form and deletions shift them.
    const bases = ["10.0.0.1", "10.0.0.2", "192.0.2.77", "203.0.113.255", "0.0.0.0", "255.255.255.255"];
    const addresses = [...bases, ...bases.map((a) => `::ffff:${a}`), "::1", "2001:db8::7", "fe80::1%eth0"];
    const ports = [0, 1, 4646, 40000, 65535];
    const table = new PeerTable<TestPeer>();
    const real = new Map<string, TestPeer>();
    const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
    for (let step = 0; step < 30_000; step++) {
      const address = pick(addresses);
      const port = pick(ports);
      const key = PeerTable.key(address, port);
      const op = random();
      if (op < 0.45) {
        const peer = { socketAddress: address, port, id: step };
        assert.equal(table.set(key, peer), table);
        real.set(key, peer);
      } else if (op < 0.85) {
        assert.equal(table.delete(key), real.delete(key), `delete(${key}) at step ${step}`);
      } else if (op < 0.995) {
        assert.equal(table.find(address, port), real.get(key), `find(${key}) at step ${step}`);
      } else {
        table.clear();
        real.clear();
      }
      if (step % 1000 === 0)
        check(
          table,
          real,
          addresses.flatMap((a) => ports.map((p): [string, number] => [a, p])),
          `at step ${step}`,
        );
    }
  });

  it("keeps 50,000 IPv4 peers findable through growth and the removal of every other one", () => {
    const table = new PeerTable<TestPeer>();
    const real = new Map<string, TestPeer>();
    const at = (i: number): [string, number] => [`127.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, 1024 + ((i * 7919) % 60000)];
    for (let i = 0; i < 50_000; i++) {
      const [address, port] = at(i);
      const peer = { socketAddress: address, port, id: i };
      table.set(PeerTable.key(address, port), peer);
      real.set(PeerTable.key(address, port), peer);
    }
    for (let i = 0; i < 50_000; i += 2) {
      const [address, port] = at(i);
      assert.equal(table.delete(PeerTable.key(address, port)), true);
      real.delete(PeerTable.key(address, port));
    }
    for (let i = 0; i < 50_000; i++) {
      const [address, port] = at(i);
      assert.equal(table.find(address, port), real.get(PeerTable.key(address, port)), `peer ${i}`);
      // The same port at another address, and the address at another port, are other peers.
      assert.equal(table.find(address, port === 65535 ? 65534 : port + 1)?.id === i, false);
    }
    assert.equal(table.size, 25_000);
  });

  it("tells an IPv4 address from its v4-mapped form and from malformed spellings", () => {
    const table = new PeerTable<TestPeer>();
    const plain = { socketAddress: "192.0.2.1", port: 5684, id: 1 };
    const mapped = { socketAddress: "::ffff:192.0.2.1", port: 5684, id: 2 };
    table.set(PeerTable.key(plain.socketAddress, plain.port), plain);
    table.set(PeerTable.key(mapped.socketAddress, mapped.port), mapped);
    assert.equal(table.find("192.0.2.1", 5684), plain);
    assert.equal(table.find("::ffff:192.0.2.1", 5684), mapped);
    for (const odd of ["192.0.2.01", "192.0.2", "192.0.2.1.", "192.0.2.256", "192..2.1", "::ffff:192.0.2.1x"]) {
      assert.equal(table.find(odd, 5684), undefined, odd);
    }
    // A spelling the index does not take is still a peer of its own (found through its key).
    const odd = { socketAddress: "192.0.2.01", port: 5684, id: 3 };
    table.set(PeerTable.key(odd.socketAddress, odd.port), odd);
    assert.equal(table.find("192.0.2.01", 5684), odd);
    assert.equal(table.find("192.0.2.1", 5684), plain);
    assert.equal(table.delete(PeerTable.key(plain.socketAddress, plain.port)), true);
    assert.equal(table.find("192.0.2.1", 5684), undefined);
    assert.equal(table.find("::ffff:192.0.2.1", 5684), mapped);
  });
});
