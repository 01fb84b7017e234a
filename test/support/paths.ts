// Where the tests find the build and the repository, from dist/ and from .build/<name>/ alike.
import * as fs from "node:fs";
import * as path from "node:path";

/** The build output's root (the folder holding src/, nodes/ and test/ compiled). */
export const outRoot = path.resolve(__dirname, "../..");

/** The repository root (package.json, examples/, README.md), found by walking up from the build. */
export function repoRoot(): string {
  let dir = outRoot;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, "utf8")).name === "@dots-call-home/node-red") return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error("package root not found above " + outRoot);
    dir = up;
  }
}
