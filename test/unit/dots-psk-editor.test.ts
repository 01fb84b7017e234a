// The dots-psk edit dialog's validators, run as the editor runs them (the node's own HTML script in
// a sandbox with the few RED and jQuery calls it makes): an imported config node without identity
// or key is invalid before deploy; a deployed one (credentials not sent to the editor) is not.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import * as vm from "node:vm";

type Validator = (this: Record<string, unknown>, v: unknown, opt?: unknown) => true | string;
interface Def {
  defaults: Record<string, { validate?: Validator }>;
  credentials: Record<string, { validate?: Validator }>;
}

function load(fields: Record<string, string>, editing: unknown[]): Def {
  const html = fs.readFileSync(path.join(__dirname, "../../../nodes/dots-psk/dots-psk.html"), "utf8");
  const script = /<script type="text\/javascript">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? "";
  let def: Def | undefined;
  const RED = {
    nodes: { registerType: (_: string, d: Def) => (def = d) },
    validators: { regex: (r: RegExp) => (v: string) => r.test(v), number: () => () => true },
    editor: { getEditStack: () => editing },
    _: (k: string) => k,
  };
  const $ = (sel: string) => ({ length: sel.slice(1) in fields ? 1 : 0, val: () => fields[sel.slice(1)] });
  vm.runInNewContext(script, { RED, $, TextEncoder });
  return def as Def;
}

describe("dots-psk editor validation", () => {
  it("an imported config node with empty identity or key, or with none, is invalid and says which", () => {
    const def = load({}, []);
    const check = def.defaults.credentialsCheck.validate as Validator;
    assert.match(String(check.call({ changed: true, credentials: { identity: "", key: "" } }, "")), /no-identity/);
    assert.match(String(check.call({ changed: true, credentials: { identity: "home-1", key: "" } }, "")), /no-key/);
    assert.match(String(check.call({ changed: true }, "")), /no-credentials/);
    assert.equal(check.call({ changed: true, credentials: { identity: "home-1", key: "00112233445566778899aabbccddeeff" } }, ""), true);
    // deployed: the runtime holds the credentials and its status names what is missing
    assert.equal(check.call({ changed: false }, ""), true);
    assert.equal(check.call({ changed: false, credentials: { identity: "home-1", has_key: true } }, ""), true);
  });

  it("in the edit dialog: what is typed counts; a stored key shows as __PWRD__; short or non-hex keys are refused", () => {
    const node: Record<string, unknown> = { credentials: { has_key: false }, keyFormat: "hex" };
    const def = load({ "node-config-input-identity": "", "node-config-input-key": "", "node-config-input-keyFormat": "hex" }, [node]);
    const check = def.defaults.credentialsCheck.validate as Validator;
    assert.match(String(check.call(node, "")), /no-identity/);
    const key = def.credentials.key.validate as Validator;
    assert.match(String(key.call(node, "")), /no-key/);
    assert.equal(key.call({ credentials: { has_key: true } }, "__PWRD__"), true);
    assert.match(String(key.call(node, "0011")), /short/);
    assert.match(String(key.call(node, "zz")), /bad-hex/);
    const identity = def.credentials.identity.validate as Validator;
    assert.match(String(identity.call(node, "")), /identity/);
    assert.equal(identity.call(node, "home-1"), true);
  });
});
