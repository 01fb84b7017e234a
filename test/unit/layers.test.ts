// Layers import downward only (design.md): nothing in src/ imports Node-RED, and each layer
// imports only the layers below it.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(__dirname, "../../..");
const order = ["cbor", "transport", "coap", "dots", "home", "detect", "cli"]; // bottom to top

function sources(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : p.endsWith(".ts") ? [p] : [];
  });
}

describe("layering", () => {
  it("src/ never imports node-red and each layer imports only lower layers", () => {
    const problems: string[] = [];
    for (const file of sources(path.join(root, "src"))) {
      const rel = path.relative(path.join(root, "src"), file);
      const layer = rel.split(path.sep)[0];
      const level = order.indexOf(layer);
      const text = fs.readFileSync(file, "utf8");
      for (const m of text.matchAll(/(?:from\s+|require\()\s*["']([^"']+)["']/g)) {
        const spec = m[1];
        if (/^(node-red|@node-red\/)/.test(spec)) problems.push(`${rel} imports ${spec}`);
        if (!spec.startsWith(".")) continue;
        const target = path.relative(path.join(root, "src"), path.resolve(path.dirname(file), spec));
        const targetLayer = target.split(path.sep)[0];
        const targetLevel = order.indexOf(targetLayer);
        if (level >= 0 && targetLevel > level) problems.push(`${rel} (${layer}) imports upward: ${spec}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});
