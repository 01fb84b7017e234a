import { strict as assert } from "node:assert";
import { ConntrackListSource, sharedNatSource, sharedNatSourceCount } from "../../../src/home/nat-source";
import { CommandRunner } from "../../../src/home/runner";

describe("home/shared NAT source (one per router in a process)", () => {
  it("two enforcers on one router share one source; it closes with the last user; other routers get their own", async () => {
    const before = sharedNatSourceCount();
    const runner = new CommandRunner();
    const a = await sharedNatSource("conntrack-list", { runner, router: "r1" });
    const b = await sharedNatSource("conntrack-list", { runner, router: "r1" });
    const other = await sharedNatSource("conntrack-list", { runner, router: "r2" });
    assert.equal(sharedNatSourceCount(), before + 2, "r1 once, r2 once");
    assert.equal(a.kind, new ConntrackListSource(runner).kind);
    await a.close();
    await a.close(); // a second close of one handle does not release another user's share
    assert.equal(sharedNatSourceCount(), before + 2, "b still holds r1");
    await assert.rejects(
      a.lookup({ sourcePrefixes: [], targetPrefixes: [], sourcePorts: [], targetPorts: [], protocols: [], sourceIcmpTypes: [] } as never),
      /closed/i,
    );
    await b.close();
    assert.equal(sharedNatSourceCount(), before + 1);
    await other.close();
    assert.equal(sharedNatSourceCount(), before);
  });

  it("static tables are not shared (each caller's own file)", async () => {
    const before = sharedNatSourceCount();
    const s = await sharedNatSource({ kind: "table", entries: [] });
    assert.equal(sharedNatSourceCount(), before);
    await s.close();
  });
});
