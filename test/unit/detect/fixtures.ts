// Locates the captured FastNetMon notify-script inputs from the compiled test, whatever the build folder.
import * as fs from "node:fs";
import * as path from "node:path";

export function fixture(name: string): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    const p = path.join(dir, "test", "unit", "detect", "fixtures", name);
    if (fs.existsSync(p)) return fs.readFileSync(p, "utf8");
    dir = path.dirname(dir);
  }
  throw new Error(`fixture not found: ${name}`);
}
