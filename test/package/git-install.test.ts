// What a user gets from `npm install <git url>`: a clone of the committed tree (HEAD), installed
// with npm into a fresh Node-RED user dir. npm runs our `prepare` (the build) in its own clone,
// packs it and unpacks the tarball, so the installed folder is exactly what `npm pack` ships.
// Then a real Node-RED (the one the tests run: test/support/node-red) starts on that user dir and
// must load every node and serve every icon. Slow (npm installs the dev dependencies for the
// build): runs under CI, or locally with DOTS_TEST_PACKAGE=1.
import { strict as assert } from "node:assert";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { hasCommand, inCI } from "../support/env";
import { nodeRedDir, nodeRedVersion } from "../support/node-red";
import { repoRoot } from "../support/paths";
import { freePort } from "../support/ports";

const root = repoRoot();
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
  name: string;
  "node-red": { nodes: Record<string, string> };
};
const PKG_NAME = pkg.name;

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else out.push(path.relative(base, p));
  }
  return out;
}

describe("install from git into a Node-RED user dir", function () {
  this.timeout(600_000);
  let tmp: string;
  let installed: string;
  let userDir: string;
  let red: ChildProcess | undefined;

  before(function () {
    const isGit = spawnSync("git", ["-C", root, "rev-parse", "HEAD"], { encoding: "utf8" }).status === 0;
    if (!hasCommand("git") || !isGit) {
      if (inCI) throw new Error("required for this suite but missing on the CI machine: git and a git checkout");
      this.skip();
    }
    if (!inCI && process.env.DOTS_TEST_PACKAGE !== "1") this.skip(); // slow: CI, or DOTS_TEST_PACKAGE=1
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dots-git-install-"));
    const clone = path.join(tmp, "clone");
    const r = spawnSync("git", ["clone", "-q", root, clone], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    userDir = path.join(tmp, "user");
    fs.mkdirSync(userDir);
    fs.writeFileSync(path.join(userDir, "package.json"), JSON.stringify({ name: "node-red-user", private: true }));
    // The same npm that runs the tests; packages come from its cache where it can.
    const npm = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", `git+file://${clone}`], {
      cwd: userDir,
      encoding: "utf8",
      env: { ...process.env, npm_config_prefer_offline: "true", PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
    });
    assert.equal(npm.status, 0, `npm install from git failed:\n${npm.stdout}\n${npm.stderr}`);
    installed = path.join(userDir, "node_modules", ...PKG_NAME.split("/"));
  });

  after(async () => {
    if (red && red.exitCode === null) {
      red.kill("SIGTERM");
      await new Promise((r) => red!.once("exit", r));
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("builds itself: every mapped node file, the CLI and the main entry are there", () => {
    for (const file of Object.values(pkg["node-red"].nodes)) assert.ok(fs.existsSync(path.join(installed, file)), `${file} installed`);
    assert.ok(fs.existsSync(path.join(installed, "dist", "src", "index.js")), "main entry");
    const cli = spawnSync(process.execPath, [path.join(installed, "dist", "src", "cli", "main.js"), "--help"], { encoding: "utf8" });
    assert.equal(cli.status, 0, cli.stderr);
    const main = spawnSync(
      process.execPath,
      ["-e", `const m = require(${JSON.stringify(PKG_NAME)}); if (typeof m.CallHomeDialer !== "function") process.exit(3)`],
      { cwd: path.dirname(installed), encoding: "utf8" },
    );
    assert.equal(main.status, 0, main.stderr);
  });

  it("ships what npm pack ships: no source maps, no tests, no TypeScript sources, the icons once", () => {
    const files = listFiles(installed).filter((f) => !f.startsWith("node_modules/"));
    assert.deepEqual(
      files.filter((f) => f.endsWith(".map")),
      [],
      "no source maps (their sources are not shipped)",
    );
    assert.deepEqual(
      files.filter((f) => f.startsWith("dist/test/") || f.startsWith("dist/bench/") || f.startsWith("dist/scripts/")),
      [],
      "no tests, benchmarks or scripts",
    );
    assert.deepEqual(
      files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")),
      [],
      "no .ts sources",
    );
    const icons = fs.readdirSync(path.join(root, "icons"));
    for (const icon of icons) assert.equal(files.filter((f) => path.basename(f) === icon).length, 1, `${icon} shipped once`);
    for (const f of ["README.md", "LICENSE", "package.json"]) assert.ok(files.includes(f), f);
    assert.ok(
      files.some((f) => f.startsWith("examples/")),
      "examples",
    );
  });

  it(`Node-RED ${nodeRedVersion()} loads every node from it and serves every icon`, async () => {
    const port = await freePort();
    fs.writeFileSync(
      path.join(userDir, "settings.js"),
      `module.exports = ${JSON.stringify({ uiHost: "127.0.0.1", uiPort: port, flowFile: "flows.json", credentialSecret: "git-install-test", telemetry: { enabled: false, updateNotification: false }, editorTheme: { tours: false, palette: { catalogues: [] } } })};\n`,
    );
    let out = "";
    red = spawn(
      process.execPath,
      [path.join(nodeRedDir(), "red.js"), "--userDir", userDir, "--settings", path.join(userDir, "settings.js")],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    red.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    red.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const deadline = Date.now() + 60_000;
    while (!/Server now running at/.test(out)) {
      if (Date.now() > deadline || red.exitCode !== null) throw new Error(`Node-RED did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const base = `http://127.0.0.1:${port}`;
    const res = await fetch(`${base}/nodes`, { headers: { Accept: "application/json" } });
    assert.equal(res.status, 200);
    const sets = ((await res.json()) as Array<{ module: string; types: string[]; enabled: boolean; err?: string }>).filter(
      (s) => s.module === PKG_NAME,
    );
    const types = sets.flatMap((s) => s.types).sort();
    assert.deepEqual(types, Object.keys(pkg["node-red"].nodes).sort(), `node types loaded; log:\n${out}`);
    // A set whose module failed to load carries err (and registers no types).
    for (const s of sets) assert.ok(s.enabled && !s.err, `${s.types.join(",")}: ${s.err ?? "disabled"}`);
    // The editor gets every node's definition.
    const editorHtml = await (await fetch(`${base}/nodes`, { headers: { Accept: "text/html" } })).text();
    for (const t of types) assert.match(editorHtml, new RegExp(`registerType\\(\\s*["']${t}["']`), `editor definition of ${t}`);
    for (const icon of fs.readdirSync(path.join(root, "icons"))) {
      const r = await fetch(`${base}/icons/${PKG_NAME}/${icon}`);
      assert.equal(r.status, 200, icon);
      // Ours, not Node-RED's fallback icon.
      assert.equal(await r.text(), fs.readFileSync(path.join(root, "icons", icon), "utf8"), `${icon} is the package's`);
    }
  });
});
