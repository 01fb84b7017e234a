// One call-home round trip per transport with two real `dots-call-home` processes on the Node
// running the tests (CI runs it on Node 22 and 24 too, and roundtrip-main.js on the oldest Node
// versions we admit: .ci/run), so a DTLS library that fails to load there fails here. Also: a DTLS
// library that cannot load is a clear start failure, not endless retries or a quiet TLS fallback.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CliProcess } from "../support/cli-process";
import { outRoot, repoRoot } from "../support/paths";
import { callHomeRoundTrip, ROUNDTRIP_PSK as PSK } from "../support/roundtrip";

describe(`call-home round trip on Node ${process.version}`, function () {
  this.timeout(30000);
  const procs: CliProcess[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
  });

  for (const transport of ["udp", "tcp"] as const) {
    it(`${transport === "udp" ? "DTLS" : "TLS"}-PSK: session up, mitigate -> 2.01, the home's decision comes back as a status`, async () => {
      await callHomeRoundTrip(transport, procs);
    });
  }

  describe("when node-dtls-client cannot be loaded (a real install without it)", () => {
    let dir: string;
    before(() => {
      // The package's own build beside a node_modules that lacks node-dtls-client.
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-no-dtls-"));
      fs.cpSync(path.join(outRoot, "src"), path.join(dir, "dist", "src"), { recursive: true });
      fs.mkdirSync(path.join(dir, "node_modules"));
      for (const dep of ["ipaddr.js", "mqtt"])
        fs.symlinkSync(path.join(repoRoot(), "node_modules", dep), path.join(dir, "node_modules", dep), "dir");
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    for (const transport of ["udp", "auto"]) {
      it(`dial --transport ${transport} stops at once with an error naming the library and the Node version, exit 1`, async () => {
        const home = new CliProcess(
          ["dial", "127.0.0.1", "--port", "9", "--transport", transport, ...PSK, "--home-prefix", "203.0.113.0/24"],
          { main: path.join(dir, "dist", "src", "cli", "main.js") },
        );
        procs.push(home);
        const code = await Promise.race([home.exited, new Promise<string>((r) => setTimeout(() => r("still running"), 10000))]);
        assert.equal(code, 1, `exit code; lines: ${JSON.stringify(home.lines)} stderr: ${home.stderr}`);
        const err = home.lines.find((l) => l.event === "error");
        assert.ok(err, "an error line");
        assert.equal(err.code, "CONFIG");
        assert.match(String(err.message), /DTLS unavailable: node-dtls-client could not be loaded on Node v\d+/);
        assert.ok(!home.lines.some((l) => l.event === "connecting" || l.event === "connected"), "no connection attempt, over DTLS or TLS");
      });
    }
  });
});
