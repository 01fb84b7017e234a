// One call-home round trip per transport with two real `dots-call-home` processes on the Node
// running the tests (CI runs it on Node 22 and 24 too, and roundtrip-main.js on the oldest Node
// versions we admit: .ci/run), so a DTLS library that fails to load there fails here. Also: a DTLS
// home needs no third-party DTLS library: its own client speaks DTLS without node-dtls-client.
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

  describe("without node-dtls-client installed (it is only an option now)", () => {
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
      it(`dial --transport ${transport} still speaks DTLS: our own client needs no node-dtls-client (ECDHE_PSK)`, async () => {
        const main = path.join(dir, "dist", "src", "cli", "main.js");
        const isp = new CliProcess(["listen", "--dtls", "--host", "127.0.0.1", "--port", "0", ...PSK, "--home-prefix", "203.0.113.0/24"], {
          main,
        });
        procs.push(isp);
        const port = (await isp.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
        const home = new CliProcess(
          ["dial", "127.0.0.1", "--port", String(port), "--transport", transport, ...PSK, "--home-prefix", "203.0.113.0/24"],
          { main },
        );
        procs.push(home);
        const connected = await home.waitFor((l) => l.event === "connected", 15000, "connected");
        assert.match(String(connected.cipher), /^DTLSv1\.2 TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256$/);
        await isp.waitFor((l) => l.event === "session-up", 10000, "session-up");
      });
    }
  });
});
