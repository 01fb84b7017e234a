import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { HomeStateFile, StateFileError, stateFileName, type StoredMitigation } from "../../../src/dots/home-state";
import { MitigationStatus, MitigationStore } from "../../../src/dots/mitigation-store";
import { isRoot } from "../../support/env";

const SP = "ietf-dots-call-home:source-prefix";
const scope = (target: string) => ({ "target-prefix": [target], [SP]: ["198.51.100.2/32"] });

function entry(mid: number, extra: Partial<StoredMitigation> = {}): StoredMitigation {
  return {
    cuid: "c1",
    mid,
    scope: scope(`203.0.113.${mid}/32`),
    lifetime: 600,
    expiresAt: Date.now() + 600_000,
    status: 2,
    mitigationStart: 1_700_000_000,
    terminatingPeriodMs: 120_000,
    ...extra,
  };
}

describe("dots/home-state (durable mitigation state file)", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-home-state-"));
  });
  afterEach(() => {
    fs.chmodSync(dir, 0o700);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("round trip: what was saved is loaded back; a missing file is a normal first start", async () => {
    const f = new HomeStateFile(dir, "h.state");
    assert.deepEqual(await f.load(), { entries: [] });
    const saved = [
      entry(1, {
        attackStatus: 1,
        detail: "blocked 192.168.1.10",
        enforcement: { action: "block", elements: [{ set: "block4", key: "192.168.1.10 . 17 . 203.0.113.5 . 5555" }] },
      }),
      entry(2, { expiresAt: null, lifetime: -1 }),
      entry(3, { status: 5, terminatingUntil: Date.now() + 1000 }),
    ];
    await f.save(() => saved);
    const back = await f.load();
    assert.equal(back.error, undefined);
    assert.deepEqual(back.entries, saved);
    assert.equal((fs.statSync(f.file).mode & 0o777).toString(8), "600");
  });

  it("stateFileName: one file per dialer identity, safe characters only", () => {
    const a = stateFileName("home-1@4647");
    assert.match(a, /^home-home-1_4647-[0-9a-f]{8}\.state$/);
    assert.notEqual(a, stateFileName("home-1@4648"));
    assert.match(stateFileName("../../etc/passwd"), /^home-\.\._\.\._etc_passwd-[0-9a-f]{8}\.state$/);
  });

  it("a crash between write and rename leaves the old file intact and the next start reads it", async () => {
    const f = new HomeStateFile(dir, "h.state");
    await f.save(() => [entry(1)]);
    // fault injection (named as such): the process dies after the temp file is written and synced
    const crashing = new HomeStateFile(dir, "h.state", { beforeRename: () => Promise.reject(new Error("simulated crash before rename")) });
    await assert.rejects(
      crashing.save(() => [entry(1), entry(2)]),
      (e: StateFileError) => e.code === "STATE_UNWRITABLE" && /simulated crash/.test(e.message),
    );
    assert.ok(fs.existsSync(`${f.file}.tmp`), "the temp file is what a crash leaves behind");
    const back = await new HomeStateFile(dir, "h.state").load();
    assert.equal(back.error, undefined);
    assert.deepEqual(
      back.entries.map((e) => e.mid),
      [1],
    );
  });

  it("a burst of saves is coalesced: every caller resolves after a write that holds its change", async () => {
    const f = new HomeStateFile(dir, "h.state");
    const held: StoredMitigation[] = [];
    const done: Array<Promise<void>> = [];
    for (let i = 1; i <= 50; i++) {
      held.push(entry(i));
      const upto = held.length;
      done.push(
        f
          .save(() => held.slice())
          .then(async () => {
            const onDisk = (await new HomeStateFile(dir, "h.state").load()).entries.length;
            assert.ok(onDisk >= upto, `save #${upto} resolved while the file held only ${onDisk}`);
          }),
      );
    }
    await Promise.all(done);
    assert.ok(f.writes <= 3, `50 saves in one burst cost ${f.writes} writes`);
    assert.equal((await f.load()).entries.length, 50);
  });

  it("a truncated file: an error naming the file, the intact mitigations, the damaged file kept aside", async () => {
    const f = new HomeStateFile(dir, "h.state");
    await f.save(() => [entry(1), entry(2), entry(3)]);
    const full = fs.readFileSync(f.file, "utf8");
    fs.writeFileSync(f.file, full.slice(0, full.lastIndexOf(`"mid":3`) + 5)); // cut inside the third line
    const back = await f.load();
    assert.ok(back.error instanceof StateFileError);
    assert.equal(back.error.code, "STATE_CORRUPT");
    assert.ok(back.error.message.includes(f.file), back.error.message);
    assert.match(back.error.message, /cut off/);
    assert.deepEqual(
      back.entries.map((e) => e.mid),
      [1, 2],
    );
    assert.ok(back.keptAs && fs.existsSync(back.keptAs), "the damaged file is kept for the operator");
    assert.ok(!fs.existsSync(f.file));
  });

  it("a file without its end line (cut at a line boundary) is reported as truncated", async () => {
    const f = new HomeStateFile(dir, "h.state");
    await f.save(() => [entry(1), entry(2)]);
    const lines = fs.readFileSync(f.file, "utf8").split("\n");
    fs.writeFileSync(f.file, lines.slice(0, 3).join("\n") + "\n");
    const back = await f.load();
    assert.match(String(back.error?.message), /end line is missing/);
    assert.deepEqual(
      back.entries.map((e) => e.mid),
      [1, 2],
    );
  });

  it("corrupt lines and an empty file give a clear error, never a throw", async () => {
    const f = new HomeStateFile(dir, "h.state");
    await f.save(() => [entry(1), entry(2)]);
    const lines = fs.readFileSync(f.file, "utf8").split("\n");
    lines[1] = "{garbage";
    lines[2] = JSON.stringify({ ...entry(2), mid: "two" });
    fs.writeFileSync(f.file, lines.join("\n"));
    const bad = await f.load();
    assert.equal(bad.error?.code, "STATE_CORRUPT");
    assert.match(bad.error!.message, /line 2 is not JSON; line 3: bad mid/);
    assert.deepEqual(bad.entries, []);

    fs.writeFileSync(f.file, "");
    const empty = await f.load();
    assert.match(String(empty.error?.message), /is empty/);
    fs.writeFileSync(f.file, "not a state file\n");
    assert.equal((await f.load()).error?.code, "STATE_CORRUPT");
  });

  it("size bound: too many mitigations or bytes is refused with a clear error and the old file stays", async () => {
    const f = new HomeStateFile(dir, "h.state", { maxMitigations: 3, maxBytes: 2000 });
    await f.save(() => [entry(1)]);
    await assert.rejects(
      f.save(() => [entry(1), entry(2), entry(3), entry(4)]),
      (e: StateFileError) => e.code === "STATE_TOO_BIG" && /4 mitigations exceed the limit of 3/.test(e.message),
    );
    await assert.rejects(
      f.save(() => [entry(1, { detail: "x".repeat(3000) })]),
      (e: StateFileError) => e.code === "STATE_TOO_BIG" && /bytes exceed the limit of 2000/.test(e.message),
    );
    assert.deepEqual(
      (await f.load()).entries.map((e) => e.mid),
      [1],
    );
  });

  it("an unwritable directory: prepare() and save() fail with STATE_UNWRITABLE naming the place", async function () {
    if (isRoot()) {
      // root ignores directory modes: a path under a regular file cannot be created by anyone
      const blocker = path.join(dir, "file");
      fs.writeFileSync(blocker, "");
      const f = new HomeStateFile(path.join(blocker, "state"), "h.state");
      await assert.rejects(
        f.prepare(),
        (e: StateFileError) => e.code === "STATE_UNWRITABLE" && e.message.includes(path.join(blocker, "state")),
      );
      await assert.rejects(
        f.save(() => [entry(1)]),
        (e: StateFileError) => e.code === "STATE_UNWRITABLE",
      );
      return;
    }
    fs.chmodSync(dir, 0o500);
    const f = new HomeStateFile(dir, "h.state");
    await assert.rejects(f.prepare(), (e: StateFileError) => e.code === "STATE_UNWRITABLE");
    await assert.rejects(
      f.save(() => [entry(1)]),
      (e: StateFileError) => e.code === "STATE_UNWRITABLE",
    );
  });
});

describe("dots/mitigation-store snapshot and restore", () => {
  let store: MitigationStore;
  afterEach(() => store?.clear());

  it("restores live mitigations with their status and remaining lifetime, drops lapsed ones", () => {
    store = new MitigationStore();
    const now = Date.now();
    const r = store.restore([
      entry(1, { expiresAt: now + 300_000 }),
      entry(2, { expiresAt: now - 1 }),
      entry(3, { status: 5, terminatingUntil: now - 5 }),
      entry(4, { expiresAt: null, lifetime: -1, status: 1 }),
    ]);
    assert.deepEqual([r.restored.map((m) => m.mid), r.expired], [[1, 4], 2]);
    const m1 = store.get("c1", 1)!;
    assert.equal(m1.status, MitigationStatus.Mitigated);
    assert.ok(Math.abs(store.remainingLifetime(m1) - 300) <= 1);
    assert.equal(store.toScopeJson(m1).status, "attack-successfully-mitigated");
    assert.equal(store.remainingLifetime(store.get("c1", 4)!), -1);
    assert.equal(store.activeCount(), 2);
  });

  it("re-arms expiry: a restored mitigation ends when its absolute expiry passes", async () => {
    store = new MitigationStore();
    const ended = new Promise<string>((res) => store.on("removed", (m, reason) => res(`${m.mid}:${reason}`)));
    store.restore([entry(7, { expiresAt: Date.now() + 50 })]);
    assert.equal(await ended, "7:expired");
    assert.equal(store.get("c1", 7), undefined);
  });

  it("snapshot holds what the state file needs and round-trips through restore", () => {
    store = new MitigationStore();
    store.put("c1", 5, { ...scope("203.0.113.5/32"), lifetime: 600 }, 600);
    store.setStatus("c1", 5, MitigationStatus.Mitigated, "blocked", { action: "block", elements: [] });
    const snap = store.snapshot();
    assert.equal(snap.length, 1);
    assert.deepEqual(
      [snap[0].mid, snap[0].status, snap[0].detail, snap[0].enforcement],
      [5, 2, "blocked", { action: "block", elements: [] }],
    );
    const again = new MitigationStore();
    again.restore(snap);
    assert.deepEqual(again.snapshot(), snap);
    again.clear();
  });
});
