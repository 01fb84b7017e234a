// A Node-RED runtime for the editor test, run as its own process (Node-RED is a process-wide
// singleton, and the node tests in the same mocha run use it through the test helper).
// Usage: node nr-server.js <userDir> <packageDir>; prints {"url": ...} once the editor is up.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { nodeRedPath } from "../support/node-red";

async function main(): Promise<void> {
  const [userDir, packageDir] = process.argv.slice(2);
  if (!userDir || !packageDir) throw new Error("usage: nr-server <userDir> <packageDir>");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const RED = require(nodeRedPath()); // DOTS_TEST_NODE_RED picks another Node-RED
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const express = require("express");
  const app = express();
  const server = http.createServer(app);
  // NR_TEST_USERS='[{"username","password","permissions"}]' turns admin auth on (the live-view test).
  const users = process.env.NR_TEST_USERS
    ? (JSON.parse(process.env.NR_TEST_USERS) as Array<{ username: string; password: string; permissions: string }>)
    : undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const adminAuth = users
    ? { type: "credentials", users: users.map((u) => ({ ...u, password: require("bcryptjs").hashSync(u.password, 8) })) }
    : undefined;
  RED.init(server, {
    ...(adminAuth ? { adminAuth } : {}),
    userDir,
    nodesDir: [packageDir],
    httpAdminRoot: "/",
    httpNodeRoot: "/api",
    credentialSecret: "editor-test-only",
    flowFile: "flows.json",
    uiHost: "127.0.0.1",
    // Without these an "update notifications" modal covers the editor (Node-RED 4.1).
    telemetry: { enabled: false, updateNotification: false },
    // No outside fetches from the editor: the palette catalogue is off, as are tours and projects.
    editorTheme: { tours: false, projects: { enabled: false }, palette: { catalogues: [] } },
    logging: { console: { level: "warn", metrics: false, audit: false } },
  });
  app.use("/", RED.httpAdmin);
  app.use("/api", RED.httpNode);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  await RED.start();
  const port = (server.address() as AddressInfo).port;
  process.stdout.write(`NR-EDITOR-URL ${JSON.stringify({ url: `http://127.0.0.1:${port}/` })}\n`);
  const stop = (): void => {
    void Promise.resolve(RED.stop()).finally(() => server.close(() => process.exit(0)));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
