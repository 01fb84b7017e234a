// Round trip of one mitigation request through both engines on loopback: mitigate() at the ISP
// listener -> decision event at the home dialer (decided at once, like --auto-decide) -> 2.01 back
// at the listener. p50/p99 over N requests, printed beside a CoAP ping over the same (D)TLS
// connection measured in the same run (the transport's own round trip); the ratio is the figure.
//   node .build/<name>/bench/roundtrip.js [--n 1000] [--transport udp|tcp|both]
import { performance } from "node:perf_hooks";
import type { MitigationEvent, SessionInfo } from "../src/dots/api";
import { CallHomeListener } from "../src/dots/isp-engine";
import { CallHomeDialer } from "../src/dots/home-engine";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const N = Number(arg("n", "1000"));
const which = arg("transport", "both");
// The home's CoAP endpoint limits each peer to 100 requests/s (burst 200); pacing keeps every
// request under that limit so no 4.29 distorts the figures. Pacing adds no latency to a request.
const PACE_MS = Number(arg("pace-ms", "11"));

const PSK = { identity: "bench-home", key: Buffer.from("bench-psk-0123456789") };
const request = {
  "ietf-dots-signal-channel:mitigation-scope": {
    scope: [
      {
        "target-prefix": ["198.51.100.7/32"],
        "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000 }],
        "target-protocol": [6],
        lifetime: 3600,
      },
    ],
  },
};

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const fmt = (ms: number): string => `${ms.toFixed(3)} ms`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(transport: "udp" | "tcp"): Promise<void> {
  const listener = new CallHomeListener(
    {
      port: 0,
      host: "127.0.0.1",
      transports: { dtls: transport === "udp", tls: transport === "tcp" },
      psk: [{ ...PSK, home: "bench" }],
      homePrefixes: { bench: ["203.0.113.0/24"] },
    },
    { nonRepeatMs: 3000, requestTimeoutMs: 10000 },
  );
  listener.on("error", (e) => console.error("listener:", e.message));
  await listener.start();
  const dialer = new CallHomeDialer({
    hosts: ["127.0.0.1"],
    port: listener.port as number,
    transport,
    psk: PSK,
    homePrefixes: ["203.0.113.0/24"],
    decisionWaitMs: 5000,
    reconnect: { minMs: 100, maxMs: 1000 },
  });
  dialer.on("error", (e) => console.error("dialer:", e.message));
  let decidedAt = 0;
  dialer.on("mitigation", (m: MitigationEvent) => {
    if (m.kind !== "new") return;
    decidedAt = performance.now();
    dialer.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" });
  });
  const up = new Promise<SessionInfo>((resolve) => listener.once("session-up", resolve));
  await dialer.start();
  const session = await up;
  const handle = listener.session(session.id);

  const total: number[] = [];
  const there: number[] = [];
  const back: number[] = [];
  const pings: number[] = [];
  const warm = 50;
  let codes = new Map<string, number>();
  for (let i = 0; i < N + warm; i++) {
    const t0 = performance.now();
    // A new mid each time; the same scope, so the home replaces the lower mid (store stays small).
    const res = await listener.mitigate(session.id, request, { observe: false });
    const t1 = performance.now();
    codes.set(res.code, (codes.get(res.code) ?? 0) + 1);
    if (i >= warm) {
      total.push(t1 - t0);
      there.push(decidedAt - t0);
      back.push(t1 - decidedAt);
    }
    // The transport reference, interleaved so both see the same machine state.
    const p = await handle.ping();
    if (i >= warm) pings.push(p);
    await sleep(PACE_MS);
    if (i === warm - 1) codes = new Map();
  }
  await dialer.stop();
  await listener.stop();

  for (const a of [total, there, back, pings]) a.sort((x, y) => x - y);
  const label = transport === "udp" ? "DTLS 1.2 PSK (UDP)" : "TLS PSK (TCP)";
  console.log(`\n${label}, ${N} requests, session ${session.cipher}`);
  console.log(`  responses:                          ${[...codes].map(([c, n]) => `${c} x${n}`).join(", ")}`);
  console.log(`  mitigate -> 2.01 (full round trip)   p50 ${fmt(pct(total, 50))}   p99 ${fmt(pct(total, 99))}`);
  console.log(`    of which mitigate -> decision      p50 ${fmt(pct(there, 50))}   p99 ${fmt(pct(there, 99))}`);
  console.log(`    of which decision -> 2.01          p50 ${fmt(pct(back, 50))}   p99 ${fmt(pct(back, 99))}`);
  console.log(`  reference: CoAP ping, same conn.     p50 ${fmt(pct(pings, 50))}   p99 ${fmt(pct(pings, 99))}`);
  console.log(
    `  ratio (round trip / ping)            p50 ${(pct(total, 50) / pct(pings, 50)).toFixed(1)}x   p99 ${(pct(total, 99) / pct(pings, 99)).toFixed(1)}x`,
  );
}

async function main(): Promise<void> {
  console.log(`call-home round trip bench: node ${process.version}, loopback, pacing ${PACE_MS} ms between requests`);
  if (which === "udp" || which === "both") await run("udp");
  if (which === "tcp" || which === "both") await run("tcp");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
