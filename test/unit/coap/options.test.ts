import { strict as assert } from "node:assert";
import { OptionNumber } from "../../../src/coap/message";
import { CoapFormatError } from "../../../src/coap/errors";
import * as o from "../../../src/coap/options";

describe("CoAP options helpers", () => {
  it("encodes uints in minimal length, 0 as the empty value", () => {
    assert.equal(o.encodeUint(0).length, 0);
    assert.equal(o.encodeUint(1).toString("hex"), "01");
    assert.equal(o.encodeUint(271).toString("hex"), "010f");
    assert.equal(o.encodeUint(0xffffff).toString("hex"), "ffffff");
    assert.equal(o.encodeUint(0x1000000).toString("hex"), "01000000");
    assert.equal(o.decodeUint(Buffer.from("010f", "hex")), 271);
    assert.equal(o.decodeUint(Buffer.alloc(0)), 0);
    assert.throws(() => o.decodeUint(Buffer.alloc(5)), CoapFormatError);
    assert.throws(() => o.encodeUint(-1), CoapFormatError);
  });

  it("encodes Block2 NUM/M/SZX as RFC 7959 shows", () => {
    // NUM 0, M 1, SZX 6 (1024 bytes) = 0x0e; NUM 1, M 0, SZX 6 = 0x16; NUM 300 = 3 bytes
    assert.equal(o.encodeBlock({ num: 0, more: true, szx: 6 }).toString("hex"), "0e");
    assert.equal(o.encodeBlock({ num: 1, more: false, szx: 6 }).toString("hex"), "16");
    assert.deepEqual(o.decodeBlock(o.encodeBlock({ num: 300, more: true, szx: 2 })), { num: 300, more: true, szx: 2 });
    assert.equal(o.blockSize(6), 1024);
    assert.equal(o.szxForSize(1100), 6);
    assert.equal(o.szxForSize(500), 4);
    assert.throws(() => o.encodeBlock({ num: 1 << 20, more: false, szx: 0 }), CoapFormatError);
  });

  it("reads and builds Uri-Path, Uri-Query, Content-Format, Observe, Max-Age, Hop-Limit, ETag and If-Match", () => {
    const opts = [
      ...o.uriPathOptions(o.splitPath("/.well-known/dots/mitigate/cuid=x/mid=123")),
      ...o.uriQueryOptions(["target-prefix=1.2.3.0/24"]),
      o.contentFormatOption(271),
      o.observeOption(0),
      o.maxAgeOption(120),
      o.hopLimitOption(16),
      o.etagOption(Buffer.from([1, 2])),
      o.ifMatchOption(),
    ];
    assert.deepEqual(o.getUriPath(opts), [".well-known", "dots", "mitigate", "cuid=x", "mid=123"]);
    assert.deepEqual(o.getUriQuery(opts), ["target-prefix=1.2.3.0/24"]);
    assert.equal(o.getContentFormat(opts), 271);
    assert.equal(o.getObserve(opts), 0);
    assert.equal(o.getMaxAge(opts), 120);
    assert.equal(o.getHopLimit(opts), 16);
    assert.deepEqual(o.getETag(opts), Buffer.from([1, 2]));
    assert.equal(o.isEfficacyUpdate(opts), true);
    assert.equal(o.isEfficacyUpdate(o.withOption(opts, OptionNumber.IfMatch, Buffer.from([9]))), false);
    assert.equal(o.getMaxAge(o.withoutOption(opts, OptionNumber.MaxAge)), undefined);
    assert.throws(() => o.hopLimitOption(0), CoapFormatError);
  });

  it("tells critical (odd) from elective option numbers", () => {
    assert.deepEqual([1, 4, 11, 12, 2049, 60].map(o.isCritical), [true, false, true, false, true, false]);
  });
});
