import { strict as assert } from "node:assert";
import { TransportError } from "../../../src/transport/connection";
import { DropList } from "../../../src/transport/drop-list";

describe("transport/drop-list", () => {
  let now = 1_000_000;
  const clock = () => now;
  beforeEach(() => (now = 1_000_000));

  it("bans a source after N failures within the window, for banMs, then lets it back", () => {
    const list = new DropList({ maxFailures: 3, windowMs: 10_000, banMs: 60_000, now: clock });
    assert.deepEqual(list.recordFailure("192.0.2.1"), { dropped: false, newlyDropped: false });
    now += 1000;
    list.recordFailure("192.0.2.1");
    assert.equal(list.isDropped("192.0.2.1"), false);
    now += 1000;
    assert.deepEqual(list.recordFailure("192.0.2.1"), { dropped: true, until: now + 60_000, newlyDropped: true });
    assert.equal(list.isDropped("192.0.2.1"), true);
    assert.equal(list.isDropped("192.0.2.2"), false, "other sources are unaffected");
    assert.deepEqual(list.recordFailure("192.0.2.1"), { dropped: true, until: now + 60_000, newlyDropped: false });
    now += 60_000;
    assert.equal(list.isDropped("192.0.2.1"), false);
    assert.equal(list.droppedUntil("192.0.2.1"), undefined);
    assert.equal(list.recordFailure("192.0.2.1").dropped, false, "a lifted ban starts counting afresh");
  });

  it("counts only failures inside the sliding window", () => {
    const list = new DropList({ maxFailures: 3, windowMs: 10_000, banMs: 1000, now: clock });
    for (let i = 0; i < 10; i++) {
      assert.equal(list.recordFailure("198.51.100.7").dropped, false, `failure ${i}`);
      now += 6000; // never three within 10 s
    }
  });

  it("treats an IPv4-mapped IPv6 source as the IPv4 address", () => {
    const list = new DropList({ maxFailures: 2, now: clock });
    list.recordFailure("::ffff:203.0.113.5");
    list.recordFailure("203.0.113.5");
    assert.equal(list.isDropped("203.0.113.5"), true);
    assert.equal(list.isDropped("::ffff:203.0.113.5"), true);
  });

  it("can group IPv6 sources by prefix", () => {
    const exact = new DropList({ maxFailures: 2, now: clock });
    exact.recordFailure("2001:db8:1:2::1");
    exact.recordFailure("2001:db8:1:2::2");
    assert.equal(exact.isDropped("2001:db8:1:2::1"), false);
    const by64 = new DropList({ maxFailures: 2, ipv6PrefixLength: 64, now: clock });
    by64.recordFailure("2001:db8:1:2::1");
    by64.recordFailure("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    assert.equal(by64.isDropped("2001:db8:1:2:ffff::9"), true);
    assert.equal(by64.isDropped("2001:db8:1:3::1"), false);
  });

  it("never remembers more than maxTracked sources, forgetting the least recently active", () => {
    const list = new DropList({ maxFailures: 2, maxTracked: 100, now: clock });
    list.recordFailure("10.0.0.1");
    list.recordFailure("10.0.0.1"); // banned
    for (let i = 0; i < 10_000; i++) list.recordFailure(`10.1.${i >> 8}.${i & 255}`);
    assert.equal(list.size, 100);
    assert.equal(list.isDropped("10.0.0.1"), false, "the oldest entry was evicted");
  });

  it("sweep forgets finished entries; forgive lifts a ban", () => {
    const list = new DropList({ maxFailures: 1, windowMs: 1000, banMs: 5000, now: clock });
    list.recordFailure("192.0.2.9");
    list.recordFailure("192.0.2.10");
    list.forgive("192.0.2.10");
    assert.equal(list.isDropped("192.0.2.10"), false);
    list.sweep();
    assert.equal(list.size, 1);
    now += 5001;
    list.sweep();
    assert.equal(list.size, 0);
  });

  it("rejects nonsensical settings", () => {
    assert.throws(() => new DropList({ maxFailures: 0 }), TransportError);
    assert.throws(() => new DropList({ ipv6PrefixLength: 200 }), TransportError);
  });
});
