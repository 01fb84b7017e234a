// One vocabulary (src/dots/vocabulary.ts): every engine reads the same names, codes and labels,
// and a scope attribute lives in exactly three files: its CBOR key (src/cbor/schema.ts), its name
// (SCOPE in src/dots/vocabulary.ts) and its check and typed field (src/dots/validation.ts).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { DOTS_CONTENT_FORMAT, DOTS_KEY_TABLE } from "../../../src/cbor";
import { CONTENT_FORMAT_DOTS_CBOR, codeFromString, codeToString } from "../../../src/coap/message";
import { diagnosticResponse } from "../../../src/coap/endpoint";
import * as homeResources from "../../../src/dots/home-resources";
import * as ispSession from "../../../src/dots/isp-session";
import * as store from "../../../src/dots/mitigation-store";
import { validateMitigationRequest } from "../../../src/dots/validation";
import * as vocab from "../../../src/dots/vocabulary";

const ROOT = path.join(__dirname, "../../../..");

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(rel);
    return /\.ts$/.test(e.name) && !/\.d\.ts$/.test(e.name) ? [rel] : [];
  });
}

function request(scope: Record<string, unknown>): Record<string, unknown> {
  return {
    [vocab.MITIGATION_SCOPE_KEY]: {
      scope: [
        { [vocab.SCOPE.targetPrefix]: ["198.51.100.7/32"], [vocab.SCOPE.sourcePrefix]: ["203.0.113.5/32"], lifetime: 3600, ...scope },
      ],
    },
  };
}

describe("dots/vocabulary", () => {
  it("the engines, the store and the CoAP layer re-export the vocabulary's own objects, not copies", () => {
    assert.equal(ispSession.MITIGATION_SCOPE_KEY, vocab.MITIGATION_SCOPE_KEY);
    assert.equal(homeResources.MITIGATION_SCOPE_KEY, vocab.MITIGATION_SCOPE_KEY);
    assert.equal(ispSession.STATUS_LABELS, vocab.STATUS_LABELS);
    assert.equal(store.STATUS_LABELS, vocab.STATUS_LABELS);
    assert.equal(ispSession.CONFLICT_CAUSE_LABELS, vocab.CONFLICT_CAUSE_LABELS);
    assert.equal(store.MitigationStatus, vocab.MitigationStatus);
    assert.equal(CONTENT_FORMAT_DOTS_CBOR, DOTS_CONTENT_FORMAT);
    assert.equal(vocab.DOTS_CONTENT_FORMAT, 271);
  });

  it("every scope member and redirect member of the vocabulary has a CBOR key in the one key table", () => {
    const names = new Set(DOTS_KEY_TABLE.map((r) => r.name));
    for (const name of [
      ...Object.values(vocab.SCOPE),
      ...Object.values(vocab.REDIRECT),
      vocab.MITIGATION_SCOPE_KEY,
      vocab.REDIRECTED_SIGNAL_KEY,
    ])
      assert.ok(names.has(name), `${name} has no row in src/cbor/schema.ts`);
    for (const label of Object.values(vocab.STATUS_LABELS)) assert.ok(typeof label === "string" && label.length > 0);
    assert.equal(vocab.STATUS_LABELS[vocab.MitigationStatus.Mitigated], "attack-successfully-mitigated");
  });

  it("the validator accepts exactly the vocabulary's scope members: no second list to keep in step", () => {
    const samples: Record<string, unknown> = {
      [vocab.SCOPE.targetPortRange]: [{ "lower-port": 80 }],
      [vocab.SCOPE.targetProtocol]: [6],
      [vocab.SCOPE.targetFqdn]: ["www.example.com"],
      [vocab.SCOPE.targetUri]: ["https://www.example.com/"],
      [vocab.SCOPE.triggerMitigation]: true,
      [vocab.SCOPE.attackStatus]: "under-attack",
      [vocab.SCOPE.sourcePortRange]: [{ "lower-port": 1024, "upper-port": 2047 }],
      [vocab.SCOPE.sourceIcmpTypeRange]: [{ "lower-type": 8 }],
      [vocab.SCOPE.attackDetail]: [{ "vendor-id": 32473, "attack-id": 7 }],
    };
    for (const member of vocab.SCOPE_REQUEST_MEMBERS) {
      if ([vocab.SCOPE.targetPrefix, vocab.SCOPE.sourcePrefix, vocab.SCOPE.lifetime].includes(member as never)) continue;
      assert.ok(member in samples, `test sample for ${member}`);
      const r = validateMitigationRequest(request({ [member]: samples[member] }), { side: "home" });
      assert.ok(r.ok, `${member}: ${r.ok ? "" : JSON.stringify(r.errors)}`);
    }
    const r = validateMitigationRequest(request({ "alias-name": ["web"] }), { side: "home" });
    assert.ok(!r.ok && r.errors.some((e) => e.rule === "unknown-field"));
  });

  it("validation hands out the typed scope both engines, the enforcer and the nodes consume", () => {
    const r = validateMitigationRequest(
      request({
        [vocab.SCOPE.targetPortRange]: [{ "lower-port": 80, "upper-port": 81 }, { "lower-port": 443 }],
        [vocab.SCOPE.targetProtocol]: [6, 17],
        [vocab.SCOPE.sourceIcmpTypeRange]: [{ "lower-type": 8 }],
        [vocab.SCOPE.attackStatus]: "attack-successfully-mitigated",
        [vocab.SCOPE.targetPrefix]: ["2001:DB8:0::/48"],
      }),
      { side: "home" },
    );
    assert.ok(r.ok);
    assert.deepEqual(
      r.typed.targetPrefixes.map((p) => [p.family, p.network, p.length, p.text]),
      [["ipv6", "2001:db8::", 48, "2001:db8::/48"]],
    );
    assert.deepEqual(r.typed.targetPorts, [
      { lower: 80, upper: 81 },
      { lower: 443, upper: 443 },
    ]);
    assert.deepEqual(r.typed.targetProtocols, [6, 17]);
    assert.deepEqual(r.typed.sourceIcmpTypes, [{ lower: 8, upper: 8 }]);
    assert.deepEqual(r.typed.sourcePorts, []);
    assert.equal(r.typed.lifetime, 3600);
    assert.equal(r.typed.attackStatus, 2);
  });

  it("one CoAP answer for 'code + diagnostic' on both sides: dotted and numeric codes give the same bytes", () => {
    for (const c of ["4.00", "4.04", "4.09", "4.15", "5.03"]) assert.equal(codeToString(codeFromString(c)), c);
    assert.throws(() => codeFromString("4.32"), RangeError);
    assert.throws(() => codeFromString("400"), RangeError);
    const isp = diagnosticResponse("4.00", "scope[0].target-prefix[0]: bad");
    const home = diagnosticResponse(0x80, "scope[0].target-prefix[0]: bad");
    assert.deepEqual(isp, home);
    assert.equal(isp.contentFormat, 0);
    assert.ok(diagnosticResponse("4.00", "x".repeat(5000)).payload.length <= 512, "capped to fit one datagram");
  });

  it("the scope and redirect member names, the outcomes and the FQDN rule are spelled only in the vocabulary", () => {
    const spelled = [vocab.MITIGATION_SCOPE_KEY, vocab.REDIRECTED_SIGNAL_KEY, ...Object.values(vocab.REDIRECT)].map((n) => `"${n}"`);
    spelled.push('"enforced", "pending"', "[A-Za-z0-9-]{1,63}");
    const allowed = new Set(["src/dots/vocabulary.ts", "src/cbor/schema.ts"]);
    const offenders: string[] = [];
    const files = [...sourceFiles("src"), ...sourceFiles("nodes")];
    assert.ok(files.length > 50, `read ${files.length} source files`);
    for (const file of files) {
      if (allowed.has(file)) continue;
      const lines = fs.readFileSync(path.join(ROOT, file), "utf8").split("\n");
      lines.forEach((line, i) => {
        if (/^\s*(\/\/|\*|\/\*)/.test(line)) return;
        for (const s of spelled) if (line.includes(s)) offenders.push(`${file}:${i + 1}: ${s}`);
      });
    }
    assert.deepEqual(offenders, []);
    assert.ok(vocab.isFqdn("home-1.example.net.") && !vocab.isFqdn("192.0.2.1") && !vocab.isFqdn("-bad.example"));
    assert.ok(vocab.isDecisionOutcome("legitimate") && !vocab.isDecisionOutcome("blocked"));
  });
});
