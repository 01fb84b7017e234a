#!/usr/bin/env node
// Runs every compiled benchmark in dist/bench one after another (each prints its own figures and
// ratios). Pass names to run a subset: npm run bench -- codec-cbor roundtrip
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const dir = path.resolve(__dirname, "..", "dist", "bench");
const wanted = process.argv.slice(2);
const all = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith(".js"))
  .map((f) => f.slice(0, -3))
  .sort();
const chosen = wanted.length ? all.filter((n) => wanted.includes(n)) : all;
let failed = 0;
for (const name of chosen) {
  process.stdout.write(`\n=== bench/${name}\n`);
  const r = spawnSync(process.execPath, ["--expose-gc", path.join(dir, `${name}.js`)], { stdio: "inherit" });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
