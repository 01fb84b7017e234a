#!/usr/bin/env node
// Compiles TypeScript into dist/ and places each node's .html and locales/ beside its .js, where
// the Node-RED loader looks for them, and the icons once (see below). Also the package's `prepare`
// script, so an install from git builds itself.
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const outDir = process.env.DOTS_BUILD_OUT ? path.resolve(process.env.DOTS_BUILD_OUT) : path.join(root, "dist");
const tsc = require.resolve("typescript/bin/tsc");
// --package (the prepare script: installs from git, npm pack) compiles only what the package ships.
const tsconfig = process.argv.includes("--package") ? "tsconfig.package.json" : "tsconfig.json";
const result = spawnSync(process.execPath, [tsc, "-p", path.join(root, tsconfig), "--outDir", outDir], { stdio: "inherit" });
// DOTS_BUILD_LENIENT=1 keeps going past type errors (tsc still emits), for work in progress.
if (result.status !== 0 && process.env.DOTS_BUILD_LENIENT !== "1") process.exit(result.status ?? 1);

// The editor's address/prefix rules (one file, tested against the runtime's parser) go inline into
// each node's HTML that names them: Node-RED loads a module's HTML with no guarantee its resources/
// folder is served (a copied package dir has none) and never finishes a script src that fails.
const EDITOR_RULES_TAG = '<script type="text/javascript" src="resources/@dots-call-home/node-red/dots-editor-rules.js"></script>';
function inlineEditorRules(html) {
  if (!html.includes(EDITOR_RULES_TAG)) return html;
  const rules = fs.readFileSync(path.join(root, "resources", "dots-editor-rules.js"), "utf8");
  return html.split(EDITOR_RULES_TAG).join(`<script type="text/javascript">\n${rules}</script>`);
}

const nodesSrc = path.join(root, "nodes");
const iconsSrc = path.join(root, "icons");
if (fs.existsSync(nodesSrc)) {
  for (const type of fs.readdirSync(nodesSrc)) {
    const from = path.join(nodesSrc, type);
    if (!fs.statSync(from).isDirectory()) continue;
    const to = path.join(outDir, "nodes", type);
    fs.mkdirSync(to, { recursive: true });
    for (const entry of fs.readdirSync(from)) {
      if (entry.endsWith(".html"))
        fs.writeFileSync(path.join(to, entry), inlineEditorRules(fs.readFileSync(path.join(from, entry), "utf8")));
      if (entry === "locales") fs.cpSync(path.join(from, entry), path.join(to, entry), { recursive: true });
    }
  }
}
// Node-RED finds icons only in an icons/ folder beside a mapped node file (not the package's
// top-level icons/), and looks an icon up among all such folders of the module
// (@node-red/registry: localfilesystem getModuleNodeFiles, registry getNodeIconPath; 4.1 and 5.0):
// one copy beside the first mapped node serves every node of the package.
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
const firstNode = Object.values(pkg["node-red"]?.nodes ?? {})[0];
if (firstNode && fs.existsSync(iconsSrc)) {
  const iconsTo = path.join(outDir, path.relative("dist", path.dirname(firstNode)), "icons");
  fs.cpSync(iconsSrc, iconsTo, { recursive: true });
}
const cli = path.join(outDir, "src", "cli", "main.js");
if (fs.existsSync(cli)) fs.chmodSync(cli, 0o755);
