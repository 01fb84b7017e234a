// A real Node-RED with our package, in its own process (nr-server.ts): the editor test drives it
// with Chromium, the redeploy test through the admin API as the editor's Deploy button does.
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { outRoot, repoRoot } from "../support/paths";

/** A package folder as npm would install it: package.json, dist/ (our build) and examples/. */
export function packageDir(tmp: string): string {
  const root = repoRoot();
  const dir = path.join(tmp, "pkg");
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(root, "package.json"), path.join(dir, "package.json"));
  fs.symlinkSync(outRoot, path.join(dir, "dist"));
  fs.symlinkSync(path.join(root, "examples"), path.join(dir, "examples"));
  return dir;
}

export interface NodeRedProcess {
  /** The editor and admin API, e.g. http://127.0.0.1:PORT/ (HTTP-in routes under api/). */
  url: string;
  userDir: string;
  child: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/** Starts Node-RED with a fresh user dir under `tmp`; resolves once the editor answers. */
export async function startNodeRed(tmp: string, env: Record<string, string> = {}): Promise<NodeRedProcess> {
  const userDir = path.join(tmp, "user");
  fs.mkdirSync(userDir);
  let log = "";
  const child = spawn(process.execPath, [path.join(outRoot, "test", "editor", "nr-server.js"), userDir, packageDir(tmp)], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Node-RED did not start:\n${log}`)), 30000);
    child.stdout!.on("data", (d: Buffer) => {
      log += d.toString();
      const m = /NR-EDITOR-URL (\{.*\})/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(JSON.parse(m[1]).url);
      }
    });
    child.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`Node-RED exited (${code}):\n${log}`));
    });
  });
  return {
    url,
    userDir,
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 8000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}
