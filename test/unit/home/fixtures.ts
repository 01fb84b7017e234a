// Locates the captured conntrack/nft fixtures from the compiled test, whatever the build folder.
import * as fs from "node:fs";
import * as path from "node:path";

export function fixturePath(name: string): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    const p = path.join(dir, "test", "unit", "home", "fixtures", name);
    if (fs.existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw new Error(`fixture not found: ${name}`);
}

export function fixture(name: string): string {
  return fs.readFileSync(fixturePath(name), "utf8");
}
