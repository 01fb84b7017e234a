// Mitigation round trip through the MQTT carrier beside the same request through stdin, in the
// same run: one `dots-call-home listen --mqtt` process, one dialer process (auto-decide), a real
// mosquitto on loopback. Requests alternate stdin / MQTT so both see the same conditions; each
// mitigation is withdrawn (untimed) so the home's per-client limit is never reached.
// The broker runs with set_tcp_nodelay true and the bench's MQTT client (the detector) disables
// Nagle, as docs/scale-out.md advises; --nagle leaves both at their defaults (Nagle on).
//   node dist/bench/mqtt-routing.js [--n 200] [--nagle]
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import mqtt from "mqtt";

const args = process.argv.slice(2);
const nAt = args.indexOf("--n");
const N = nAt >= 0 ? Number(args[nAt + 1]) : 200;
const NAGLE = args.includes("--nagle");
const MAIN = path.resolve(__dirname, "../src/cli/main.js");
const KEY = "text:bench-mqtt-psk-0123456789";

type Line = Record<string, unknown> & { event: string };

function lines(child: ChildProcessWithoutNullStreams, on: (l: Line) => void): void {
  let buf = "";
  child.stdout.on("data", (c: Buffer) => {
    buf += c.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const t = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        on(JSON.parse(t) as Line);
      } catch {
        // not an event line
      }
    }
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-bench-mqtt-"));
  fs.chmodSync(dir, 0o755);
  const mport = await freePort();
  fs.writeFileSync(
    path.join(dir, "m.conf"),
    `listener ${mport} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay ${NAGLE ? "false" : "true"}\n`,
  );
  const broker = spawn("mosquitto", ["-c", path.join(dir, "m.conf")], { stdio: "ignore" });
  const children: ChildProcessWithoutNullStreams[] = [];
  try {
    await new Promise((r) => setTimeout(r, 300));
    const url = `mqtt://127.0.0.1:${mport}`;
    const waiters = new Map<string, (l: Line) => void>();
    const listen = spawn(process.execPath, [
      MAIN,
      "listen",
      "--dtls",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--psk-identity",
      "home-1",
      "--psk-key",
      KEY,
      "--home-prefix",
      "203.0.113.0/24",
      "--mqtt",
      url,
      "--mqtt-client-id",
      "bench-isp",
    ]);
    children.push(listen);
    let port = 0;
    let up = false;
    lines(listen, (l) => {
      if (l.event === "listening") port = l.port as number;
      if (l.event === "session-up") up = true;
      if ((l.event === "response" || l.event === "error") && l.id !== undefined && l.via === undefined) waiters.get(String(l.id))?.(l);
    });
    while (!port) await new Promise((r) => setTimeout(r, 20));
    const dial = spawn(process.execPath, [
      MAIN,
      "dial",
      "127.0.0.1",
      "--port",
      String(port),
      "--transport",
      "udp",
      "--psk-identity",
      "home-1",
      "--psk-key",
      KEY,
      "--home-prefix",
      "203.0.113.0/24",
      "--auto-decide",
      "enforced",
      "--terminating-period",
      "0",
      "--reconnect-min",
      "100",
      "--reconnect-max",
      "500",
    ]);
    children.push(dial);
    lines(dial, () => undefined);
    while (!up) await new Promise((r) => setTimeout(r, 20));

    const client = await mqtt.connectAsync(url, { protocolVersion: 5 });
    if (!NAGLE) (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    client.on("message", (_t, payload) => {
      const l = JSON.parse(payload.toString()) as Line;
      if ((l.event === "response" || l.event === "error") && l.id !== undefined) waiters.get(String(l.id))?.(l);
    });
    await client.subscribeAsync("dots/evt/home-1", { qos: 1 });
    await new Promise((r) => setTimeout(r, 500)); // presence settles
    const answer = (id: string): Promise<Line> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no answer for ${id}`)), 10000);
        waiters.set(id, (l) => (clearTimeout(t), waiters.delete(id), resolve(l)));
      });
    const request = (i: number) => ({
      "ietf-dots-signal-channel:mitigation-scope": {
        scope: [{ "target-prefix": [`198.51.100.${i % 250}/32`], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 }],
      },
    });
    const send = (via: "stdin" | "mqtt", cmd: Record<string, unknown>): void => {
      if (via === "stdin") listen.stdin.write(JSON.stringify({ ...cmd, session: "home-1" }) + "\n");
      else client.publish("dots/cmd/home-1", JSON.stringify(cmd), { qos: 1 });
    };
    const times: Record<"stdin" | "mqtt", number[]> = { stdin: [], mqtt: [] };
    for (let i = 0; i < 2 * N + 10; i++) {
      const via = i % 2 === 0 ? "stdin" : "mqtt";
      const id = `b${i}`;
      const t0 = performance.now();
      const got = answer(id);
      send(via, { cmd: "mitigate", id, request: request(i) });
      const r = await got;
      const ms = performance.now() - t0;
      const outcome = r.outcome as { code?: string; mid?: number } | undefined;
      if (outcome?.code !== "2.01") throw new Error(`${via} request ${i}: ${JSON.stringify(r)}`);
      if (i >= 10) times[via].push(ms); // the first ones warm up
      const w = answer(`w${i}`);
      send(via, { cmd: "withdraw", id: `w${i}`, mid: outcome.mid });
      await w;
      await new Promise((res) => setTimeout(res, 15)); // the home allows 100 requests/s per peer
    }
    await client.endAsync();
    const fmt = (x: number) => `${x.toFixed(2)} ms`;
    console.log(
      `mitigate -> 2.01, ${N} each, alternating, one listener + one dialer process, DTLS on loopback, Nagle ${NAGLE ? "on (defaults)" : "off (broker set_tcp_nodelay, client setNoDelay)"}`,
    );
    console.log(`  stdin (reference)   p50 ${fmt(pct(times.stdin, 50))}  p99 ${fmt(pct(times.stdin, 99))}`);
    console.log(`  MQTT (mosquitto)    p50 ${fmt(pct(times.mqtt, 50))}  p99 ${fmt(pct(times.mqtt, 99))}`);
    console.log(
      `  ratio MQTT/stdin    p50 ${(pct(times.mqtt, 50) / pct(times.stdin, 50)).toFixed(2)}x  p99 ${(pct(times.mqtt, 99) / pct(times.stdin, 99)).toFixed(2)}x  (goal <= 1.5x)`,
    );
  } finally {
    for (const c of children) c.kill("SIGKILL");
    broker.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(e.message);
    process.exit(1);
  },
);
