// The ISP side as a cluster on this machine (issue #10): N `dots-call-home listen --mqtt` processes
// behind one address (scripts/lb/dots-lb.sh in a network namespace, jhash, health check every
// second), a real mosquitto, and H homes (half DTLS, half TLS, RFC heartbeat defaults) run many per
// process by test/support/home-fleet. Figures, each beside its reference from the same run:
//   - homes per listener process and its CPU (beside the same processes idle before the homes)
//   - mitigate -> 2.01 through MQTT, p50/p99, beside the same request through the holder's stdin
//     (alternating, same homes, under the load of all sessions' heartbeats)
//   - failover: kill -9 of one listener, time until all its homes are back at the others (beside
//     the cold start of all homes, spread over the same 5 s as the first-attempt jitter)
// Needs root, ip, nft, conntrack, mosquitto.
//   node dist/bench/cluster.js [--listeners 3] [--homes 1000] [--fleets 2] [--n 200] [--hb 30] [--cpu-window 10]
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import mqtt from "mqtt";
import { CliProcess } from "../test/support/cli-process";
import { FleetView } from "../test/support/fleet-view";
import { HomeFleet, type FleetHome } from "../test/support/home-fleet";
import { TestBroker } from "../test/support/mosquitto";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const N_LISTENERS = Number(arg("listeners", "3"));
const N_HOMES = Number(arg("homes", "1000"));
const N_FLEETS = Number(arg("fleets", "2"));
const N_REQ = Number(arg("n", "200"));
const HB = Number(arg("hb", "30"));
const CPU_WINDOW_S = Number(arg("cpu-window", "10"));
const LB = path.resolve(__dirname, "../../scripts/lb/dots-lb.sh");
const VIP = "10.8.0.100";
const HOME_ADDR = "10.8.0.2";
const backends = Array.from({ length: N_LISTENERS }, (_, i) => `10.9.0.${11 + i}`);
const ids = backends.map((_, i) => `isp-${i}`);
const homes: FleetHome[] = Array.from({ length: N_HOMES }, (_, i) => ({
  identity: `bh-${i}`,
  key: `cluster-bench-${i}-0123456789`,
  prefix: `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`,
  transport: i % 2 === 0 ? "udp" : "tcp",
}));
const byId = new Map(homes.map((h) => [h.identity, h]));

function sh(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

function cpuMs(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ
  } catch {
    return NaN;
  }
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Times by which 50/95/100 % of `of` entries were reached (ms), NaN when fewer arrived. */
function marks(times: number[], of: number): [number, number, number] {
  const s = [...times].sort((a, b) => a - b);
  const at = (p: number) => {
    const k = Math.ceil((p / 100) * of);
    return s.length >= k ? s[k - 1] : NaN;
  };
  return [at(50), at(95), at(100)];
}

async function main(): Promise<void> {
  const base = `dcb-${process.pid}`;
  const ns = { lb: `${base}-lb`, homes: `${base}-homes` };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-cluster-bench-"));
  const listeners: CliProcess[] = [];
  const fleets: HomeFleet[] = [];
  let broker: TestBroker | undefined;
  let watch: ChildProcess | undefined;
  const cleanup = (): void => {
    for (const f of fleets) f.child.kill("SIGKILL");
    for (const l of listeners) l.child.kill("SIGKILL");
    watch?.kill("SIGKILL");
    for (const n of Object.values(ns)) spawnSync("ip", ["netns", "del", n]);
  };
  process.once("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(130)); // runs cleanup
  try {
    for (const n of Object.values(ns)) {
      sh(["ip", "netns", "add", n]);
      sh(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"]);
    }
    sh(["ip", "link", "add", "eth0", "netns", ns.homes, "type", "veth", "peer", "name", "eth0", "netns", ns.lb]);
    const lb = (...a: string[]) => sh(["ip", "netns", "exec", ns.lb, ...a]);
    lb("ip", "addr", "add", "10.8.0.1/24", "dev", "eth0");
    lb("ip", "addr", "add", `${VIP}/32`, "dev", "eth0");
    lb("ip", "link", "set", "eth0", "up");
    for (const b of backends) lb("ip", "addr", "add", `${b}/32`, "dev", "lo");
    sh(["ip", "netns", "exec", ns.homes, "ip", "addr", "add", `${HOME_ADDR}/24`, "dev", "eth0"]);
    sh(["ip", "netns", "exec", ns.homes, "ip", "link", "set", "eth0", "up"]);

    broker = await TestBroker.start({ netns: ns.lb, unixSocket: true, conf: ["set_tcp_nodelay true"] });
    const cfg = path.join(dir, "listen.json");
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        psk: homes.map((h) => ({ identity: h.identity, key: `text:${h.key}`, home: h.identity })),
        homePrefixes: Object.fromEntries(homes.map((h) => [h.identity, [h.prefix]])),
        // every home comes from one address here (real homes have their own)
        maxTcpPerAddress: N_HOMES + 100,
      }),
    );
    for (const [i, addr] of backends.entries())
      listeners.push(
        new CliProcess(
          [
            "listen",
            "--config",
            cfg,
            "--host",
            addr,
            "--port",
            "4647",
            "--mqtt",
            `mqtt://127.0.0.1:${broker.port}`,
            "--mqtt-client-id",
            ids[i],
          ],
          { netns: ns.lb, name: ids[i] },
        ),
      );
    for (const l of listeners) {
      await l.waitFor((x) => x.event === "listening", 20000, "listening");
      await l.waitFor((x) => x.event === "mqtt-connected", 20000, "mqtt-connected");
    }
    const lbArgs = ["--vip", VIP, "--mode", "hash", ...backends.flatMap((b) => ["--backend", b])];
    sh(["ip", "netns", "exec", ns.lb, LB, "apply", ...lbArgs]);
    watch = spawn("ip", ["netns", "exec", ns.lb, LB, "watch", "--interval", "1", ...lbArgs], { stdio: ["ignore", "ignore", "ignore"] });
    const client = await mqtt.connectAsync(`mqtt+unix://${broker.socketPath}`, { protocolVersion: 5, clientId: `bench-${process.pid}` });
    const v = new FleetView(client);
    await client.subscribeAsync(["dots/evt/#", "dots/presence/#"], { qos: 1 });

    // ------------------------------------------------------------------ idle reference, cold start
    const idle0 = listeners.map((l) => cpuMs(l.child.pid));
    await sleep(5000);
    const idleCpu = listeners.map((l, i) => (cpuMs(l.child.pid) - idle0[i]) / 5000);
    const per = Math.ceil(N_HOMES / N_FLEETS);
    const coldAt = Date.now();
    for (let k = 0; k < N_FLEETS; k++)
      fleets.push(
        new HomeFleet(ns.homes, {
          host: VIP,
          port: 4647,
          homes: homes.slice(k * per, (k + 1) * per),
          heartbeatInterval: HB,
          reconnect: { minMs: 60_000, maxMs: 300_000 },
          spreadMs: 5000,
        }),
      );
    const live = (id: string) => v.procs.get(id) === true;
    const upAt = new Map<string, number>();
    await v.until(
      `all ${N_HOMES} homes present`,
      () => {
        for (const h of homes)
          if (!upAt.has(h.identity) && v.presence.has(h.identity) && live(v.presence.get(h.identity) as string))
            upAt.set(h.identity, Date.now() - coldAt);
        return upAt.size === N_HOMES;
      },
      240_000,
    );
    const cold = marks([...upAt.values()], N_HOMES);
    const heldBy = (id: string) => [...v.presence].filter(([, c]) => c === id).map(([h]) => h);

    // ------------------------------------------------------------------ homes per process vs CPU
    await sleep(5000);
    const c0 = listeners.map((l) => cpuMs(l.child.pid));
    const f0 = fleets.map((f) => cpuMs(f.child.pid));
    await sleep(CPU_WINDOW_S * 1000);
    const loadCpu = listeners.map((l, i) => (cpuMs(l.child.pid) - c0[i]) / (CPU_WINDOW_S * 1000));
    const fleetCpu = fleets.map((f, i) => (cpuMs(f.child.pid) - f0[i]) / (CPU_WINDOW_S * 1000));
    const held = ids.map((id) => heldBy(id).length);
    const rss = listeners.map((l) => {
      try {
        return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${l.child.pid}/status`, "utf8"))?.[1]) / 1024;
      } catch {
        return NaN;
      }
    });

    // ------------------------------------------------------------------ MQTT vs stdin
    const sample = ids.flatMap((id) => heldBy(id).slice(0, 20));
    const times: Record<"stdin" | "mqtt", number[]> = { stdin: [], mqtt: [] };
    const waitStdout = (l: CliProcess, id: string) =>
      l.waitFor((x) => (x.event === "response" || x.event === "error") && x.id === id && x.via === undefined, 15000, id);
    const waitMqtt = (home: string, id: string) =>
      v.until(`answer ${id}`, () => v.answer(home, id) !== undefined, 15000).then(() => v.answer(home, id));
    const request = (h: FleetHome, i: number) => ({
      "ietf-dots-signal-channel:mitigation-scope": {
        scope: [{ "target-prefix": [`198.51.100.${i % 250}/32`], "ietf-dots-call-home:source-prefix": [h.prefix], lifetime: 600 }],
      },
    });
    for (let i = 0; i < 2 * N_REQ + 20; i++) {
      const via = i % 2 === 0 ? "stdin" : "mqtt";
      const home = sample[i % sample.length];
      const holder = listeners[ids.indexOf(v.presence.get(home) as string)];
      const id = `r${i}`;
      const cmd = { cmd: "mitigate", id, request: request(byId.get(home) as FleetHome, i) };
      // The clock starts once the answer is awaited: the bench's own bookkeeping is not the path.
      const got = via === "stdin" ? waitStdout(holder, id) : waitMqtt(home, id);
      const t0 = performance.now();
      if (via === "stdin") holder.send({ ...cmd, session: home });
      else client.publish(`dots/cmd/${home}`, JSON.stringify(cmd), { qos: 1 });
      const r = await got;
      const ms = performance.now() - t0;
      const outcome = r?.outcome as { code?: string; mid?: number } | undefined;
      if (outcome?.code !== "2.01") throw new Error(`${via} request ${i}: ${JSON.stringify(r)}`);
      if (i >= 20) times[via].push(ms);
      const w = waitStdout(holder, `w${i}`);
      holder.send({ cmd: "withdraw", id: `w${i}`, session: home, mid: outcome.mid });
      await w;
    }

    // The broker's share of the MQTT path: the detector's own message back through mosquitto
    // (2 of the path's 4 broker hops), same run, same load.
    const echoTopic = `bench/echo/${process.pid}`;
    await client.subscribeAsync(echoTopic, { qos: 1 });
    const echo: number[] = [];
    for (let i = 0; i < N_REQ + 20; i++) {
      const t0 = performance.now();
      let on: ((topic: string) => void) | undefined;
      const back = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("broker echo: no message back within 5 s")), 5000);
        on = (topic: string) => {
          if (topic !== echoTopic) return;
          clearTimeout(timer);
          resolve();
        };
        client.on("message", on);
      });
      client.publish(echoTopic, String(i), { qos: 1 });
      try {
        await back;
      } finally {
        if (on) client.off("message", on);
      }
      if (i >= 20) echo.push(performance.now() - t0);
      await sleep(5);
    }

    // ------------------------------------------------------------------ failover
    const victim = ids[0];
    const moved = heldBy(victim);
    const killedAt = Date.now();
    const v0 = listeners.slice(1).map((l) => cpuMs(l.child.pid));
    listeners[0].child.kill("SIGKILL");
    const backAt = new Map<string, number>();
    await v
      .until(
        `the homes of ${victim} back`,
        () => {
          for (const h of moved) {
            const c = v.presence.get(h);
            if (!backAt.has(h) && c !== undefined && c !== victim && live(c)) backAt.set(h, Date.now() - killedAt);
          }
          return backAt.size === moved.length;
        },
        Number(arg("failover-wait", "200")) * 1000,
      )
      .catch((e: Error) => console.log(`  (${e.message}: ${backAt.size} of ${moved.length} back)`));
    const failWindow = Date.now() - killedAt;
    const survivorsCpu = listeners.slice(1).map((l, i) => (cpuMs(l.child.pid) - v0[i]) / failWindow);
    const fo = marks([...backAt.values()], moved.length);
    const split = (t: "udp" | "tcp") => {
      const of = moved.filter((h) => byId.get(h)?.transport === t);
      return marks(
        of.flatMap((h) => (backAt.has(h) ? [backAt.get(h) as number] : [])),
        of.length,
      );
    };

    // ------------------------------------------------------------------ report
    const pc = (x: number) => `${(x * 100).toFixed(1)}%`;
    console.log(
      `cluster bench: ${N_LISTENERS} listener processes behind dots-lb.sh (jhash, netns), mosquitto, ${N_HOMES} homes (half DTLS-PSK, half TLS-PSK) in ${N_FLEETS} home processes, heartbeat ${HB} s, ${os.cpus().length} cores, load average ${os.loadavg()[0].toFixed(1)}, node ${process.version}`,
    );
    console.log(`  homes per listener and CPU (${CPU_WINDOW_S} s window, steady heartbeats):`);
    for (const [i, id] of ids.entries())
      console.log(
        `    ${id}: ${held[i]} homes, CPU ${pc(loadCpu[i])} of one core, RSS ${rss[i].toFixed(0)} MB   (idle before the homes: ${pc(idleCpu[i])})`,
      );
    console.log(`    home processes (load generator, not the ISP): CPU ${fleetCpu.map(pc).join(" / ")}`);
    console.log(`  mitigate -> 2.01, ${N_REQ} each, alternating over ${sample.length} homes on all listeners:`);
    const fmt = (x: number) => `${x.toFixed(2)} ms`;
    console.log(`    stdin of the holder (reference)  p50 ${fmt(pct(times.stdin, 50))}  p99 ${fmt(pct(times.stdin, 99))}`);
    console.log(
      `    MQTT (detector -> broker -> holder -> broker -> detector)  p50 ${fmt(pct(times.mqtt, 50))}  p99 ${fmt(pct(times.mqtt, 99))}`,
    );
    console.log(
      `    ratio MQTT/stdin  p50 ${(pct(times.mqtt, 50) / pct(times.stdin, 50)).toFixed(2)}x  p99 ${(pct(times.mqtt, 99) / pct(times.stdin, 99)).toFixed(2)}x  (goal <= 1.5x)`,
    );
    console.log(
      `    reference, the detector's own message back through the broker (2 of the MQTT path's 4 broker hops), same run: p50 ${fmt(pct(echo, 50))}  p99 ${fmt(pct(echo, 99))}; MQTT's extra over stdin at p50 ${fmt(pct(times.mqtt, 50) - pct(times.stdin, 50))}, its 4 broker hops about ${fmt(2 * pct(echo, 50))}`,
    );
    const m3 = (m: [number, number, number]) => m.map(sec).join(" / ");
    console.log(`  failover: kill -9 of ${victim} holding ${moved.length} homes; back at the others 50/95/100%: ${m3(fo)}`);
    console.log(`    DTLS homes (liveness probe) ${m3(split("udp"))}; TLS homes (reset) ${m3(split("tcp"))}`);
    console.log(`    reference, cold start of all ${N_HOMES} homes (spread over 5 s): 50/95/100% ${m3(cold)}`);
    console.log(`    survivors' CPU during the failover window: ${survivorsCpu.map(pc).join(" / ")}`);
    const seen = new Map<string, number>();
    for (const l of listeners.slice(1))
      for (const x of l.lines)
        if (x.time !== undefined && Date.parse(String(x.time)) >= killedAt && !["heartbeat", "status", "response"].includes(x.event))
          seen.set(x.event, (seen.get(x.event) ?? 0) + 1);
    console.log(`    survivors' events after the kill: ${[...seen].map(([k, n]) => `${k} ${n}`).join(", ")}`);
    const errors = listeners
      .slice(1)
      .flatMap((l) => l.lines.filter((x) => x.event === "error" && x.time !== undefined && Date.parse(String(x.time)) >= killedAt));
    for (const e of errors.slice(0, 5)) console.log(`      error: ${JSON.stringify(e).slice(0, 300)}`);
    const missing = moved.filter((h) => !backAt.has(h));
    if (missing.length) {
      const evs = fleets
        .flatMap((f) => f.events)
        .flatMap((e) => (e.event !== "ready" && e.home === missing[0] && e.at >= killedAt ? [e] : []));
      console.log(`    ${missing.length} not back; what ${missing[0]} saw after the kill:`);
      for (const e of evs.slice(0, 12)) console.log(`      +${sec(e.at - killedAt)} ${JSON.stringify(e).slice(0, 220)}`);
    }
    const drops = listeners.slice(1).flatMap((l) => l.lines.filter((x) => x.event === "drop" || x.event === "auth-failure"));
    if (drops.length) console.log(`    first drop/auth-failure: ${JSON.stringify(drops[0]).slice(0, 300)}`);
    await client.endAsync(true);
  } finally {
    for (const f of fleets) await f.stop();
    for (const l of listeners) await l.stop("SIGKILL");
    watch?.kill("SIGTERM");
    await broker?.stop();
    cleanup();
    process.off("exit", cleanup);
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
