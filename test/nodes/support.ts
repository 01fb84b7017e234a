// Paths and helpers for the node tests: the compiled nodes live beside the compiled tests
// (<out>/nodes/<type>/<type>.js), wherever the build put them.
import * as path from "node:path";
import { outRoot, repoRoot } from "../support/paths";
import { freePort } from "../support/ports";
import { nodeRedPath } from "../support/node-red";
import { engines } from "../../nodes/lib/endpoint-registry";

export { freePort, outRoot, repoRoot };

export function nodeModule(type: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(outRoot, "nodes", type, `${type}.js`));
}

/** Waits until `check` returns a value (not undefined or false), polling; rejects after `ms`. */
export async function waitFor<T>(what: string, check: () => T | undefined | false, ms = 15000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const helper: {
  init(runtimePath: string, settings?: Record<string, unknown>): void;
  load(nodes: unknown, flow: unknown[], credentials?: Record<string, unknown>): Promise<void>;
  unload(): Promise<void>;
  getNode(id: string): any; // eslint-disable-line @typescript-eslint/no-explicit-any
  startServer(): Promise<void>;
  stopServer(): Promise<void>;
  setFlows(flow: unknown[], type?: string, credentials?: Record<string, unknown>): Promise<void>;
  request(): any; // eslint-disable-line @typescript-eslint/no-explicit-any
  settings(s: Record<string, unknown>): void;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
} = require("node-red-node-test-helper");
helper.init(nodeRedPath()); // DOTS_TEST_NODE_RED picks another Node-RED (test/support/node-red)

// The runtime stops endpoint engines nobody adopted when its flows stop; the helper's unload emits no
// such event, so an engine of one test would otherwise live on for the grace period and dial into
// the next test's listener when that one happens to get the same free port.
const unloadFlows = helper.unload.bind(helper);
helper.unload = async () => {
  await unloadFlows();
  await engines.stopOrphans();
};

// The helper loads the Catch node itself (do not pass it), but once per Catch node in the flow, which fails with two of them
// ("catch already registered"): register it once per load instead.
const helperInternals = helper as unknown as { _nodeModules: Record<string, (red: unknown) => unknown> };
const realCatch = helperInternals._nodeModules.catch;
let catchRegisteredFor: unknown;
helperInternals._nodeModules.catch = (red: unknown) => {
  if (catchRegisteredFor === red) return undefined;
  catchRegisteredFor = red;
  return realCatch(red);
};

/** Every node of the package, ready for helper.load. */
export const allNodes = [
  "dots-psk",
  "dots-isp-endpoint",
  "dots-home-endpoint",
  "dots-mitigation-request",
  "dots-call-home-listener",
  "dots-call-home-dialer",
  "dots-nat-lookup",
  "dots-filter-action",
].map(nodeModule);

/** A message as the tests read it. */
export type Msg = { topic?: string; payload: any; dots: any; error?: any; nat?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Collects every message a helper node receives. */
export function collect(id: string): Msg[] {
  const got: Msg[] = [];
  helper.getNode(id).on("input", (m: Msg) => got.push(m));
  return got;
}
