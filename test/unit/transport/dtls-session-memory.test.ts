// What an idle DTLS session keeps alive at the server: its long-lived buffers (our Connection ID,
// the NewSessionTicket kept for a lost final flight) must be its own, not slices of Node's shared
// 8 KB allocation pool, which would each keep a whole pool chunk alive for the session's lifetime.
// The homes run in a child process so that only the server's memory is in this one.
import { strict as assert } from "node:assert";
import { fork, type ChildProcess } from "node:child_process";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { DtlsServer } from "../../../src/transport/dtls";

const PSK = Buffer.from("secretPSK-0123456789");
const SESSIONS = 300;

/** Child: opens `count` sessions (our client: CID and session ticket offered) and holds them. */
function homesMain(port: number, count: number): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { dtlsClientConnect } = require("../../../src/transport/dtls/client") as typeof import("../../../src/transport/dtls/client");
  const held: unknown[] = [];
  void (async () => {
    for (let i = 0; i < count; i += 10) {
      const batch = Array.from({ length: Math.min(10, count - i) }, (_, j) =>
        dtlsClientConnect({ address: "127.0.0.1", port, psk: { identity: `home-${i + j}`, key: PSK } }),
      );
      held.push(...(await Promise.all(batch)));
    }
    process.send!({ opened: held.length });
  })().catch((err: unknown) => process.send!({ error: String(err) }));
}

if (process.env.DOTS_TEST_HOMES) homesMain(Number(process.env.DOTS_TEST_HOMES), SESSIONS);
else
  describe("DTLS server: memory an idle session keeps", function () {
    this.timeout(60000);
    let server: DtlsServer | undefined;
    let homes: ChildProcess | undefined;

    afterEach(async () => {
      homes?.kill("SIGKILL");
      homes = undefined;
      await server?.close();
      server = undefined;
    });

    it(`${SESSIONS} established sessions with a CID and a pending ticket hold well under 1 KB of buffers each`, async () => {
      v8.setFlagsFromString("--expose-gc");
      const gc = vm.runInNewContext("gc") as () => void;
      const settledBuffers = async (): Promise<number> => {
        for (let i = 0; i < 3; i++) {
          gc();
          await new Promise((r) => setTimeout(r, 20));
        }
        return process.memoryUsage().arrayBuffers;
      };
      server = new DtlsServer({ pskLookup: () => PSK });
      let established = 0;
      server.on("connection", () => established++);
      const { port } = await server.listen(0, "127.0.0.1");
      const before = await settledBuffers();
      homes = fork(__filename, [], { env: { ...process.env, DOTS_TEST_HOMES: String(port) }, stdio: "inherit" });
      const report = await new Promise<{ opened?: number; error?: string }>((resolve) => homes!.once("message", resolve));
      assert.equal(report.error, undefined);
      assert.equal(report.opened, SESSIONS);
      assert.equal(established, SESSIONS);
      assert.equal(server.sessionCount, SESSIONS);
      const perSession = ((await settledBuffers()) - before) / SESSIONS;
      // A pinned pool chunk costs a session about 8 KB / (sessions per chunk), 2-3 KB here.
      assert.ok(perSession < 1024, `${perSession.toFixed(0)} bytes of ArrayBuffers per idle session`);
    });
  });
