// SparseMap / SparseSet behave as Map / Set for every operation the sessions use: the same
// answers, sizes and insertion-order iteration over random operation sequences (seeded), across
// the empty, single-entry and table states and back.
import { strict as assert } from "node:assert";
import { SparseMap, SparseSet } from "../../../src/transport/sparse-map";
import { rng } from "../../support/fuzz";

describe("SparseMap and SparseSet (per-session maps with no table while empty or single)", () => {
  it("answer like Map over 20,000 random operations, iteration order included", () => {
    const random = rng(9066);
    const sparse = new SparseMap<number, string>();
    const real = new Map<number, string>();
    let sawTable = 0;
    let sawSingle = 0;
    for (let step = 0; step < 20_000; step++) {
      // Keys from a small range so entries are found, replaced and deleted often.
      const key = Math.floor(random() * 6);
      const op = random();
      if (op < 0.4) {
        const value = `v${step}`;
        assert.equal(sparse.set(key, value), sparse);
        real.set(key, value);
      } else if (op < 0.8) {
        assert.equal(sparse.delete(key), real.delete(key), `delete(${key}) at step ${step}`);
      } else if (op < 0.97) {
        assert.equal(sparse.get(key), real.get(key));
        assert.equal(sparse.has(key), real.has(key));
      } else {
        sparse.clear();
        real.clear();
      }
      assert.equal(sparse.size, real.size, `size at step ${step}`);
      assert.deepEqual([...sparse], [...real], `entries at step ${step}`);
      assert.deepEqual([...sparse.keys()], [...real.keys()]);
      assert.deepEqual([...sparse.values()], [...real.values()]);
      if (real.size === 1) sawSingle++;
      if (real.size > 1) sawTable++;
    }
    assert.ok(sawSingle > 1000 && sawTable > 1000, `both states exercised (single ${sawSingle}, table ${sawTable})`);
  });

  it("deleting while iterating ends the loop as a Map does (dedup and cache trimming do this)", () => {
    for (const n of [0, 1, 2, 5]) {
      const sparse = new SparseMap<string, number>();
      for (let i = 0; i < n; i++) sparse.set(`k${i}`, i);
      const visited: string[] = [];
      for (const [k] of sparse) {
        visited.push(k);
        sparse.delete(k);
      }
      assert.equal(visited.length, n);
      assert.equal(sparse.size, 0);
      sparse.set("after", 1);
      assert.deepEqual([...sparse], [["after", 1]]);
    }
  });

  it("keys compare as Map keys do (SameValueZero: NaN finds NaN, objects by identity)", () => {
    const m = new SparseMap<unknown, number>();
    m.set(NaN, 1);
    assert.equal(m.get(NaN), 1);
    const a = { id: 1 };
    m.set(a, 2);
    assert.equal(m.get({ id: 1 }), undefined);
    assert.equal(m.get(a), 2);
    assert.equal(m.size, 2);
  });

  it("SparseSet answers like Set over 10,000 random operations", () => {
    const random = rng(7252);
    const sparse = new SparseSet<number>();
    const real = new Set<number>();
    for (let step = 0; step < 10_000; step++) {
      const v = Math.floor(random() * 5);
      const op = random();
      if (op < 0.45) {
        sparse.add(v);
        real.add(v);
      } else if (op < 0.9) assert.equal(sparse.delete(v), real.delete(v));
      else assert.equal(sparse.has(v), real.has(v));
      assert.equal(sparse.size, real.size);
      assert.deepEqual([...sparse], [...real]);
    }
  });
});
