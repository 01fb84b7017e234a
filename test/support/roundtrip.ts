// One call-home round trip with two real `dots-call-home` processes on the Node that runs this:
// listen + dial over DTLS-PSK (udp) or TLS-PSK (tcp), mitigate -> 2.01, the home's decision back
// as a status. Used by test/cli/roundtrip.test.ts and, without mocha, by roundtrip-main.ts on Node
// versions mocha itself does not run on (CI's oldest admitted versions).
import { strict as assert } from "node:assert";
import { CliProcess } from "./cli-process";

export const ROUNDTRIP_PSK = ["--psk-identity", "home-1", "--psk-key", "text:roundtripPSK-0123456789"];

/** Runs the round trip; every process it starts is pushed to `procs` (the caller stops them). */
export async function callHomeRoundTrip(transport: "udp" | "tcp", procs: CliProcess[]): Promise<{ cipher: string }> {
  const isp = new CliProcess([
    "listen",
    transport === "udp" ? "--dtls" : "--tls",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    ...ROUNDTRIP_PSK,
    "--home-prefix",
    "203.0.113.0/24",
    "--request-repeat-ms",
    "200",
  ]);
  procs.push(isp);
  const port = (await isp.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
  const home = new CliProcess([
    "dial",
    "127.0.0.1",
    "--port",
    String(port),
    "--transport",
    transport,
    ...ROUNDTRIP_PSK,
    "--home-prefix",
    "203.0.113.0/24",
    "--auto-decide",
    "enforced",
    "--reconnect-min",
    "100",
    "--reconnect-max",
    "500",
  ]);
  procs.push(home);
  const connected = await home.waitFor((l) => l.event === "connected", 15000, "connected");
  const cipher = String(connected.cipher);
  assert.match(cipher, transport === "udp" ? /^DTLSv1\.2 / : /^TLSv1\.3/);
  await isp.waitFor((l) => l.event === "session-up", 10000, "session-up");
  isp.send({
    cmd: "mitigate",
    id: "m1",
    session: "home-1",
    request: { "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 },
  });
  const res = await isp.waitFor((l) => l.event === "response" && l.id === "m1", 10000, "mitigate response");
  const outcome = res.outcome as { code: string; mid: number };
  assert.equal(outcome.code, "2.01");
  await isp.waitFor((l) => l.event === "status" && l.mid === outcome.mid, 10000, "status notification");
  assert.equal(await home.stop(), 0, "dial exits 0 on SIGTERM");
  assert.equal(await isp.stop(), 0, "listen exits 0 on SIGTERM");
  return { cipher };
}
