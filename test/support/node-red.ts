// Which Node-RED the tests run: DOTS_TEST_NODE_RED names a node-red package folder (e.g.
// .ci/cache/nr5/node_modules/node-red, as .ci/run installs Node-RED 5 there); unset, the dev
// dependency (Node-RED 4).
import * as path from "node:path";

/** The node-red package folder. */
export function nodeRedDir(): string {
  const chosen = process.env.DOTS_TEST_NODE_RED;
  return chosen ? path.resolve(chosen) : path.dirname(require.resolve("node-red/package.json"));
}

/** The runtime module to require() or to hand to node-red-node-test-helper. */
export function nodeRedPath(): string {
  return require.resolve(nodeRedDir());
}

/** Its version, as its package.json says. */
export function nodeRedVersion(): string {
  return (require(path.join(nodeRedDir(), "package.json")) as { version: string }).version;
}

/** A module as the chosen Node-RED resolves it (e.g. "@node-red/runtime/lib/nodes"): its own copy, not the dev dependency's. */
export function requireFromNodeRed(id: string): unknown {
  return require(require.resolve(id, { paths: [nodeRedDir()] }));
}
