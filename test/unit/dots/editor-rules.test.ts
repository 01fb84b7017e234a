// The editor's address and prefix rules (resources/dots-editor-rules.js, run by the browser) agree
// with the runtime's parser (src/dots/prefixes.ts) on a table of good and bad inputs and on random
// strings built from the characters addresses are made of.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import * as vm from "node:vm";
import { nonSourceKind, parseAddress, parsePrefix, PrefixSyntaxError } from "../../../src/dots/prefixes";

interface Rules {
  isAddress(text: string): boolean;
  isIpv6(text: string): boolean;
  isPrefix(text: string, opts?: { allowBareAddress?: boolean }): boolean;
  prefixProblem(text: string, opts?: { allowBareAddress?: boolean }): { reason: string } | null;
  specialKind(text: string, opts?: { allowBareAddress?: boolean }): string | null;
}

export const EDITOR_RULES_FILE = path.join(__dirname, "../../../../resources/dots-editor-rules.js");

function loadRules(): Rules {
  const sandbox: { window: Record<string, unknown> } = { window: {} };
  vm.runInNewContext(fs.readFileSync(EDITOR_RULES_FILE, "utf8"), sandbox);
  return sandbox.window.DotsEditorRules as Rules;
}

function runtime(text: string, allowBareAddress: boolean): string | null {
  try {
    parsePrefix(text, { allowBareAddress });
    return null;
  } catch (e) {
    if (e instanceof PrefixSyntaxError) return e.reason;
    throw e;
  }
}

const TABLE = [
  // good
  "192.0.2.0/24",
  "0.0.0.0/0",
  "255.255.255.255/32",
  "10.0.0.0/8",
  "203.0.113.5/32",
  "2001:db8::/32",
  "::/0",
  "::1/128",
  "2001:DB8:0:0:0:0:0:0/64",
  "fe80::/10",
  "::ffff:192.0.2.1/128",
  "64:ff9b::192.0.2.0/120",
  "1:2:3:4:5:6:7:8/128",
  "1:2:3:4:5:6:7::/128",
  "::2:3:4:5:6:7:8/128",
  "1::8/128",
  "1:2:3:4:5:6:192.0.2.1/128",
  "2001:db8::/128",
  "2001:db8::1",
  "192.0.2.1",
  // bad
  ":",
  ":/64",
  "1.2.3.4:5",
  "1.2.3.4:5/32",
  "300.1.1.1/24",
  "203.0.113.0/99",
  "2001:db8::/129",
  "203.0.113.7/24",
  "2001:db8::1/64",
  "010.1.1.1/32",
  "1.2.3/24",
  "1.2.3.4.5/32",
  "01.2.3.4/32",
  "1.2.3.4/",
  "1.2.3.4/024",
  "1.2.3.4/+8",
  "1.2.3.4/ 8",
  " 1.2.3.4/32",
  "2001:db8:::/48",
  "2001::db8::1/128",
  "1:2:3:4:5:6:7:8:9/128",
  "1:2:3:4:5:6:7::8/128",
  "12345::/16",
  "g::/16",
  "fe80::1%eth0/128",
  "::ffff:1.2.3/128",
  "::1.2.3.04/128",
  "1:2:3:4:5:6:7:1.2.3.4/128",
  "::1.2.3.4:5/128",
  "/24",
  "",
  "//",
  "1.2.3.4/32/1",
  "::/",
  ":::/0",
  "1:/16",
  ":1/16",
  "1::2:/16",
  "abc",
  "1.2.3.4x/32",
];

describe("editor rules = runtime rules (addresses and prefixes)", () => {
  const rules = loadRules();

  it("a table of good and bad prefixes: same verdict and the same reason (syntax, length, host-bits)", () => {
    for (const text of TABLE) {
      for (const bare of [false, true]) {
        const expected = runtime(text, bare);
        const got = rules.prefixProblem(text, { allowBareAddress: bare });
        assert.equal(got === null ? null : got.reason, expected, `${JSON.stringify(text)} allowBareAddress=${bare}`);
      }
    }
    // the cases issue 13 names
    assert.equal(rules.isAddress(":"), false);
    assert.equal(rules.isAddress("1.2.3.4:5"), false);
    assert.equal(rules.isPrefix("300.1.1.1/24"), false);
    assert.equal(rules.isPrefix("203.0.113.0/99"), false);
  });

  it("special-purpose blocks (multicast, broadcast, unspecified, loopback): the same kind as nonSourceKind", () => {
    const special = [
      ["224.0.0.1/32", "multicast"],
      ["239.255.255.250", "multicast"],
      ["192.0.0.0/2", "multicast"],
      ["ff02::1/128", "multicast"],
      ["ff00::/8", "multicast"],
      ["255.255.255.255", "broadcast"],
      ["0.0.0.0/32", "unspecified"],
      ["::", "unspecified"],
      ["::/0", "unspecified"],
      ["127.0.0.1", "loopback"],
      ["::1", "loopback"],
      ["::ffff:224.0.0.9/128", "multicast"],
      ["::ffff:0:0/96", "unspecified"],
      ["198.51.100.255", null],
      ["2001:db8::/32", null],
      ["fe80::1", null],
    ] as const;
    for (const [text, kind] of special) {
      assert.equal(rules.specialKind(text, { allowBareAddress: true }), kind, text);
      assert.equal(nonSourceKind(parsePrefix(text, { allowBareAddress: true })), kind, `runtime ${text}`);
    }
    for (const text of TABLE) {
      if (runtime(text, true) !== null) continue;
      assert.equal(rules.specialKind(text, { allowBareAddress: true }), nonSourceKind(parsePrefix(text, { allowBareAddress: true })), text);
    }
  });

  it("addresses: the same verdict as parseAddress on the table and on 20000 random strings", () => {
    const alphabet = "0123456789abcdefABCDEF:::...";
    let seed = 13;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const samples = TABLE.map((t) => t.split("/")[0]);
    for (let i = 0; i < 20000; i++) {
      let s = "";
      const len = 1 + rnd(24);
      for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
      samples.push(s);
    }
    let valid = 0;
    for (const s of samples) {
      const expected = parseAddress(s) !== null;
      if (expected) valid++;
      assert.equal(rules.isAddress(s), expected, JSON.stringify(s));
      assert.equal(rules.isIpv6(s), expected && parseAddress(s)?.kind() === "ipv6", JSON.stringify(s));
    }
    assert.ok(valid > 50, `the random strings must include valid addresses too (got ${valid})`);
  });

  it("each of our nodes that checks prefixes names the rules script, the build inlines it, and no loose IPv6 regex is left", () => {
    const rules = fs.readFileSync(EDITOR_RULES_FILE, "utf8");
    for (const node of ["dots-mitigation-request"]) {
      const html = fs.readFileSync(path.join(__dirname, "../../../../nodes", node, `${node}.html`), "utf8");
      assert.match(html, /<script [^>]*src="resources\/@dots-call-home\/node-red\/dots-editor-rules\.js"/, node);
      assert.doesNotMatch(html, /\[0-9a-fA-F:\.\]\+/, node);
      const built = fs.readFileSync(path.join(__dirname, "../../../nodes", node, `${node}.html`), "utf8");
      assert.ok(built.includes(rules), `${node}: the built HTML carries the rules inline`);
      assert.doesNotMatch(built, /src="resources\//, node);
    }
  });
});
