// The consent gate: auto, admin approve/reject, timeout answering per configuration, cancel.
import { strict as assert } from "node:assert";
import { ConsentGate } from "../../../src/home/consent";

describe("consent gate", () => {
  let gates: ConsentGate[] = [];
  afterEach(() => {
    for (const g of gates) g.close();
    gates = [];
  });
  const gate = (...a: ConstructorParameters<typeof ConsentGate>) => {
    const g = new ConsentGate(...a);
    gates.push(g);
    return g;
  };

  it("auto approves at once", async () => {
    assert.deepEqual(await gate({ mode: "auto" }).request("a"), { answer: "approved", by: "auto" });
  });

  it("waits for the admin: approve and reject", async () => {
    const g = gate({ mode: "manual", timeoutMs: 60_000, onTimeout: "reject" });
    const a = g.request("a");
    const b = g.request("b");
    assert.deepEqual(g.pendingIds(), ["a", "b"]);
    assert.equal(g.approve("a"), true);
    assert.equal(g.reject("b"), true);
    assert.deepEqual(await a, { answer: "approved", by: "admin" });
    assert.deepEqual(await b, { answer: "rejected", by: "admin" });
    assert.equal(g.approve("a"), false, "answered once only");
    assert.deepEqual(g.pendingIds(), []);
  });

  it("the timeout counts as the configured answer", async () => {
    assert.deepEqual(await gate({ mode: "manual", timeoutMs: 5, onTimeout: "reject" }).request("x"), { answer: "rejected", by: "timeout" });
    assert.deepEqual(await gate({ mode: "manual", timeoutMs: 5, onTimeout: "approve" }).request("x"), {
      answer: "approved",
      by: "timeout",
    });
  });

  it("a repeated request replaces the first, close cancels all", async () => {
    const g = gate({ mode: "manual", timeoutMs: 60_000, onTimeout: "reject" });
    const first = g.request("a");
    const second = g.request("a");
    assert.deepEqual(await first, { answer: "cancelled", by: "cancel" });
    g.close();
    assert.deepEqual(await second, { answer: "cancelled", by: "cancel" });
  });

  it("bounds the number of pending requests", async () => {
    const g = gate({ mode: "manual", timeoutMs: 60_000, onTimeout: "reject" }, 2);
    const pending = [g.request("a"), g.request("b")];
    assert.throws(() => g.request("c"), /pending/);
    g.close();
    for (const answer of await Promise.all(pending)) assert.equal(answer.answer, "cancelled");
  });

  it("refuses a manual policy without a usable timeout", () => {
    assert.throws(() => new ConsentGate({ mode: "manual", timeoutMs: 0, onTimeout: "reject" }));
  });
});
