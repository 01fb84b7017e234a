import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MID_BLOCK, MidLedger, parseMidStateFile, type StateFileError } from "../../../src/dots/isp-mid-ledger";

const ID = "psk-AAAAAAAAAAAAAAAAAAAAAA";
const CUID = "cuid-one-xxxxxxxxxxxxx";

describe("dots/isp-mid-ledger (durable mid marks, RFC 9132 4.4.1.1)", () => {
  let dir: string;
  let errors: StateFileError[];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mid-ledger-"));
    errors = [];
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const fileOf = (root = dir): string => path.join(root, "listener", `${ID}.json`);
  const stored = (root = dir): number => (JSON.parse(fs.readFileSync(fileOf(root), "utf8")) as { mids: Record<string, number> }).mids[CUID];

  it("creates its directory 0700 and stores a block of mids before the first one is used, then nothing until the block runs out", async () => {
    const root = path.join(dir, "new", "state");
    const l = new MidLedger(root, (e) => errors.push(e));
    assert.equal(await l.open(), true);
    assert.equal((fs.statSync(path.join(root, "listener")).mode & 0o777).toString(8), "700");
    assert.equal((fs.statSync(root).mode & 0o777).toString(8), "700");
    await l.reserve(ID, "home-1", CUID, 0);
    assert.equal(stored(root), MID_BLOCK - 1, "on disk once reserve() resolved");
    const before = fs.statSync(fileOf(root)).mtimeMs;
    fs.writeFileSync(fileOf(root), fs.readFileSync(fileOf(root))); // a marker: rewritten only on a new block
    fs.utimesSync(fileOf(root), new Date(0), new Date(0));
    for (let mid = 1; mid < MID_BLOCK; mid++) await l.reserve(ID, "home-1", CUID, mid);
    assert.equal(fs.statSync(fileOf(root)).mtimeMs, 0, "no write inside the reserved block");
    await l.reserve(ID, "home-1", CUID, MID_BLOCK);
    assert.equal(stored(root), 2 * MID_BLOCK - 1);
    assert.ok(fs.statSync(fileOf(root)).mtimeMs >= before);
    assert.deepEqual(fs.readdirSync(path.join(root, "listener")), [`${ID}.json`], "no temp file left behind");
    assert.equal(errors.length, 0);

    // A new ledger (a restarted process) reads the mark back; a rollover stores the lower mark.
    const again = new MidLedger(root, (e) => errors.push(e));
    await again.open();
    assert.equal(again.load(ID, "home-1").mids.get(CUID), 2 * MID_BLOCK - 1);
    await again.reserve(ID, "home-1", CUID, 0, true);
    assert.equal(stored(root), MID_BLOCK - 1);
  });

  for (const [name, content] of [
    ["empty", ""],
    ["truncated", '{"version":1,"home":"home-1","mids":{"c'],
    ["wrong shape", '{"version":1,"home":"home-1","mids":{"c":-5}}'],
  ] as const) {
    it(`a ${name} state file: an error naming the file, moved aside, nothing assumed, and the next write works`, async () => {
      fs.mkdirSync(path.join(dir, "listener"), { recursive: true });
      fs.writeFileSync(fileOf(), content);
      const l = new MidLedger(dir, (e) => errors.push(e));
      await l.open();
      assert.equal(l.load(ID, "home-1").mids.size, 0);
      assert.equal(errors.length, 1);
      assert.equal(errors[0].code, "STATE_FILE");
      assert.equal(errors[0].file, fileOf());
      assert.ok(errors[0].message.includes(fileOf()), errors[0].message);
      const aside = fs.readdirSync(path.join(dir, "listener")).filter((f) => f.includes(".corrupt-"));
      assert.equal(aside.length, 1, "kept for the operator");
      assert.equal(fs.readFileSync(path.join(dir, "listener", aside[0]), "utf8"), content);
      await l.reserve(ID, "home-1", CUID, 7);
      assert.equal(stored(), 7 + MID_BLOCK - 1);
    });
  }

  it("an unwritable state file: one error naming it per failing streak, reserve() still resolves, and a later write is tried again", async () => {
    fs.mkdirSync(path.join(dir, "listener", `${ID}.json`, "blocker"), { recursive: true }); // rename over a non-empty directory fails, even for root
    const l = new MidLedger(dir, (e) => errors.push(e));
    await l.open();
    l.load(ID, "home-1");
    assert.equal(errors.length, 1, "the odd file is reported when the home is first met");
    assert.match(errors[0].message, /not a regular file/);
    errors.length = 0;
    await l.reserve(ID, "home-1", CUID, 0);
    await l.reserve(ID, "home-1", CUID, 1);
    await l.reserve(ID, "home-1", CUID, 2);
    assert.equal(errors.length, 1, errors.map((e) => e.message).join("\n"));
    assert.equal(errors[0].file, fileOf());
    assert.match(errors[0].message, /cannot write state file/);
    fs.rmSync(fileOf(), { recursive: true });
    await l.reserve(ID, "home-1", CUID, 3);
    assert.equal(stored(), 3 + MID_BLOCK - 1, "the mark is written once the file can be written");
  });

  it("two listeners sharing the directory: each session-up reads the other's higher mark", async () => {
    const a = new MidLedger(dir, (e) => errors.push(e));
    const b = new MidLedger(dir, (e) => errors.push(e));
    await a.open();
    await b.open();
    assert.equal(a.load(ID, "home-1").mids.get(CUID), undefined);
    await a.reserve(ID, "home-1", CUID, 0);
    assert.equal(b.load(ID, "home-1").mids.get(CUID), MID_BLOCK - 1, "the home moved to b");
    await b.reserve(ID, "home-1", CUID, MID_BLOCK);
    assert.equal(a.load(ID, "home-1").mids.get(CUID), 2 * MID_BLOCK - 1, "and back to a");
    await a.reserve(ID, "home-1", CUID, 2 * MID_BLOCK);
    assert.equal(stored(), 3 * MID_BLOCK - 1);
    assert.equal(errors.length, 0);
  });

  it("removes temp files a killed writer left an hour ago, and keeps recent ones", async () => {
    const sub = path.join(dir, "listener");
    fs.mkdirSync(sub, { recursive: true });
    const stale = path.join(sub, `${ID}.json.tmp-12345`);
    const recent = path.join(sub, `${ID}.json.tmp-23456`);
    fs.writeFileSync(stale, "{");
    fs.writeFileSync(recent, "{");
    fs.utimesSync(stale, new Date(Date.now() - 2 * 3_600_000), new Date(Date.now() - 2 * 3_600_000));
    await new MidLedger(dir, (e) => errors.push(e)).open();
    assert.deepEqual(fs.readdirSync(sub), [`${ID}.json.tmp-23456`]);
  });

  it("a state directory that cannot be created: an error naming it and memory only", async () => {
    const blocker = path.join(dir, "a-file");
    fs.writeFileSync(blocker, "x");
    const l = new MidLedger(blocker, (e) => errors.push(e));
    assert.equal(await l.open(), false);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].file, path.join(blocker, "listener"));
  });

  it("parseMidStateFile refuses what is not a version-1 map of uint32 mids", () => {
    assert.throws(() => parseMidStateFile("  "), /empty/);
    assert.throws(() => parseMidStateFile("[]"), /version/);
    assert.throws(() => parseMidStateFile('{"version":1,"home":"h","mids":{"c":4294967296}}'), /uint32/);
    assert.deepEqual([...parseMidStateFile('{"version":1,"home":"h","cuid":"x","mids":{"c":5}}').mids], [["c", 5]]);
  });
});
