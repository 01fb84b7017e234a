// The package's own version, read from its package.json (dist/src/cli -> package root), so
// `dots-call-home --version` always says what is installed.
import * as fs from "node:fs";
import * as path from "node:path";

export function packageVersion(): string {
  for (const up of ["../../..", "../.."]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, up, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "@dots-call-home/node-red" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // not at this level: try the next
    }
  }
  return "unknown";
}
