// The package "main" exposes the documented API: what README examples and other programs import.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";

describe("public API (package main)", () => {
  // Resolve package.json "main" (dist/...) inside whichever compiled tree runs this test.
  const outRoot = path.resolve(__dirname, "../..");
  let dir = outRoot;
  while (!fs.existsSync(path.join(dir, "package.json"))) dir = path.dirname(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { main: string };
  const api = require(path.join(outRoot, pkg.main.replace(/^dist\//, ""))) as Record<string, unknown>;

  it("exports the engines, the codec, the validator and the enforcer", () => {
    for (const name of [
      "CallHomeListener",
      "CallHomeDialer",
      "encodeDotsCbor",
      "decodeDotsCbor",
      "DotsCborError",
      "validateMitigationRequest",
      "createHomeEnforcer",
    ]) {
      assert.equal(typeof api[name], "function", name);
    }
    for (const ns of ["cbor", "coap", "transport", "home"]) assert.equal(typeof api[ns], "object", ns);
  });

  it("round-trips the RFC 9066 Figure 10 request through the exported codec", () => {
    const encode = api.encodeDotsCbor as (j: unknown) => Buffer;
    const decode = api.decodeDotsCbor as (b: Buffer) => unknown;
    const hex = "a101a10281a3068173323030313a6462383a633030303a3a2f3132381980008173323030313a6462383a3132333a3a312f3132380e190e10";
    const json = decode(Buffer.from(hex, "hex"));
    assert.equal(encode(json).toString("hex"), hex);
  });
});
