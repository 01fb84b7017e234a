// NAT lookup and enforcement figures (issue 5):
//  1. synthetic conntrack listings of 1k/10k/100k flows: index build time (parse + index), index
//     memory (heap growth: parsed flows plus index), lookup time through the index beside a full scan of the same table (ratio);
//  2. the real kernel in a throw-away namespace: a full `conntrack -L` listing into the index, and a
//     lookup from the event index beside a lookup by listing (ratio);
//  3. applying a block with nft: backend.apply and the whole enforcer.handle() beside a bare
//     `nft add element` in the same namespace (ratio).
// Run: node --expose-gc .build/<out>/bench/natlookup.js  (parts 2 and 3 need root, ip, nft, conntrack)
import { execFileSync, spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { parseConntrackLine, type ConntrackFlow } from "../src/home/conntrack-parse";
import { FlowIndex, matchFlow } from "../src/home/flow-index";
import { scopeToQuery, type NatQuery } from "../src/home/scope";
import { netnsRunner } from "../src/home/runner";
import { ConntrackEventSource, ConntrackListSource, StaticTableSource, listConntrack } from "../src/home/nat-source";
import { NftablesBackend } from "../src/home/filter-backend";
import { addElementsScript, setupScript } from "../src/home/nft-script";
import { createHomeEnforcer } from "../src/home/enforcer";
import { NatLookup } from "../src/home/nat-lookup";

const CH = "ietf-dots-call-home:";

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function syntheticLine(i: number): string {
  const dev = `192.168.${(i >> 8) & 255}.${i & 255}`;
  const tgt = `203.0.${113 + ((i >> 10) % 3)}.${((i * 7) % 250) + 1}`;
  const sport = 10000 + (i % 50000);
  const pport = 1024 + (i % 64000);
  const proto = i % 5 === 0 ? "tcp      6 431999 ESTABLISHED" : "udp      17 29";
  return `ipv4     2 ${proto} src=${dev} dst=${tgt} sport=${sport} dport=443 src=${tgt} dst=198.51.100.2 sport=443 dport=${pport} [ASSURED] mark=0 use=1`;
}

function queryFor(f: ConntrackFlow): NatQuery {
  return scopeToQuery({
    "target-prefix": [`${f.orig.dst}/32`],
    "target-protocol": [f.protocol],
    "target-port-range": [{ "lower-port": f.orig.dport }],
    [`${CH}source-prefix`]: [`${f.reply.dst}/32`],
    [`${CH}source-port-range`]: [{ "lower-port": f.reply.dport }],
  });
}

function timePerOp(n: number, fn: (i: number) => void): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  return ((performance.now() - t0) * 1000) / n; // µs
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function synthetic(): void {
  console.log("\n1) synthetic conntrack listings (index vs full scan, same table, same queries)");
  console.log("flows    | build ms (parse+index) | heap MB  | bytes/flow | lookup µs (index) | lookup µs (full scan) | scan/index");
  const lookups: number[] = [];
  for (const n of [1_000, 10_000, 100_000]) {
    const text = Array.from({ length: n }, (_, i) => syntheticLine(i)).join("\n");
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const index = new FlowIndex();
    const flows: ConntrackFlow[] = [];
    for (const line of text.split("\n")) {
      const p = parseConntrackLine(line);
      if (p) {
        index.upsert(p.flow);
        flows.push(p.flow);
      }
    }
    const buildMs = performance.now() - t0;
    gc();
    const mb = (process.memoryUsage().heapUsed - heap0) / 1e6;
    const queries = Array.from({ length: 500 }, (_, i) => queryFor(flows[(i * 7919) % flows.length]));
    let found = 0;
    timePerOp(20_000, (i) => (found += index.lookup(queries[i % queries.length]).length)); // warm-up
    const idx = timePerOp(200_000, (i) => (found += index.lookup(queries[i % queries.length]).length));
    const scanRuns = Math.max(5, Math.floor(2_000_000 / n));
    const scan = timePerOp(scanRuns, (i) => {
      const q = queries[i % queries.length];
      for (const f of flows) if (matchFlow(q, f)) found++;
    });
    if (found === 0) throw new Error("queries found nothing");
    lookups.push(idx);
    console.log(
      `${String(n).padEnd(8)} | ${buildMs.toFixed(1).padStart(22)} | ${mb.toFixed(1).padStart(8)} | ${((mb * 1e6) / n).toFixed(0).padStart(10)} | ${idx.toFixed(2).padStart(17)} | ${scan.toFixed(1).padStart(21)} | ${(scan / idx).toFixed(0).padStart(10)}`,
    );
  }
  // flat = the index's cost does not grow with the table (a full scan's grows 100x here)
  console.log(
    `lookup flatness: index at 100k / index at 1k = ${(lookups[2] / lookups[0]).toFixed(2)} (1.00 = flat; the full scan grows ~100x)`,
  );
}

function haveTools(): boolean {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  return isRoot && ["ip", "nft", "conntrack"].every((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status === 0);
}

async function kernel(): Promise<void> {
  const ns = `dch-bench-${process.pid}`;
  execFileSync("ip", ["netns", "add", ns]);
  // also when the run dies early (a closed stdout pipe, Ctrl-C)
  const cleanup = () => spawnSync("ip", ["netns", "del", ns]);
  process.once("exit", cleanup);
  process.once("SIGINT", () => process.exit(130));
  process.stdout.on("error", () => process.exit(1));
  try {
    const run = (...a: string[]) => execFileSync("ip", ["netns", "exec", ns, ...a], { stdio: ["pipe", "pipe", "pipe"] });
    run("ip", "link", "set", "lo", "up");
    execFileSync("ip", ["netns", "exec", ns, "nft", "-f", "-"], {
      input: "table inet bench { chain out { type filter hook output priority 0; ct state new accept; }; }\n",
    });
    const runner = netnsRunner(ns, { timeoutMs: 120_000 });

    console.log("\n2) real kernel conntrack table in a throw-away namespace");
    console.log("flows    | full listing into index ms | lookup ms (event index) | lookup ms (conntrack -L per lookup) | list/index");
    let made = 0;
    for (const target of [1_000, 10_000, 100_000]) {
      // one UDP packet per destination port on loopback = one conntrack entry each
      const code = `const s=require("dgram").createSocket("udp4");let i=${made};const end=${target};const step=()=>{for(let k=0;k<2000&&i<end;k++,i++)s.send("x",1+(i%60000),"127.0.0.${1 + Math.floor(made / 60000)}".replace(/\\d+$/,String(1+Math.floor(i/60000))));if(i<end)setImmediate(step);else setTimeout(()=>s.close(),200)};step();`;
      run(process.execPath, "-e", code);
      made = target;
      const count = Number(String(run("conntrack", "-C")).trim());
      const index = new FlowIndex();
      const t0 = performance.now();
      await listConntrack(runner, [], (f) => index.upsert(f));
      const listMs = performance.now() - t0;
      const some = [...index.all()].find((f) => f.protocol === 17)!;
      const q = scopeToQuery({
        "target-prefix": [`${some.orig.dst}/32`],
        "target-protocol": [17],
        "target-port-range": [{ "lower-port": some.orig.dport }],
        [`${CH}source-prefix`]: [`${some.reply.dst}/32`],
        [`${CH}source-port-range`]: [{ "lower-port": some.reply.dport }],
      });
      const events = new ConntrackEventSource(runner);
      await events.start();
      const ev: number[] = [];
      for (let i = 0; i < 50; i++) {
        const t = performance.now();
        const r = await events.lookup(q);
        ev.push(performance.now() - t);
        if (r.length !== 1) throw new Error(`event index found ${r.length}`);
      }
      await events.close();
      const lister = new ConntrackListSource(runner);
      const ls: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        const r = await lister.lookup(q);
        ls.push(performance.now() - t);
        if (r.length !== 1) throw new Error(`listing found ${r.length}`);
      }
      console.log(
        `${String(count).padEnd(8)} | ${listMs.toFixed(0).padStart(26)} | ${median(ev).toFixed(3).padStart(23)} | ${median(ls).toFixed(1).padStart(35)} | ${(median(ls) / median(ev)).toFixed(0).padStart(10)}`,
      );
    }

    console.log("\n3) applying a block with nft (median of 30, each a new element)");
    const backend = new NftablesBackend(runner);
    await backend.apply(setupScript());
    const bare: number[] = [];
    const applied: number[] = [];
    const handled: number[] = [];
    const table = Array.from({ length: 90 }, (_, i) => ({
      protocol: "udp",
      device: `192.168.1.${i + 2}`,
      devicePort: 40000 + i,
      public: "198.51.100.2",
      publicPort: 50000 + i,
      target: "203.0.113.5",
      targetPort: 5555,
    }));
    const enforcer = createHomeEnforcer({
      nat: new NatLookup({ source: new StaticTableSource({ entries: table }) }),
      backend,
      action: "block",
      runner,
    });
    for (let i = 0; i < 30; i++) {
      let t = performance.now();
      execFileSync("ip", [
        "netns",
        "exec",
        ns,
        "nft",
        "add",
        "element",
        "inet",
        "dots_call_home",
        "block4",
        `{ 10.9.${i}.1 . 17 . 203.0.113.5 . 5555 timeout 3600s }`,
      ]);
      bare.push(performance.now() - t);
      t = performance.now();
      await backend.apply(
        addElementsScript("dots_call_home", [
          {
            element: { set: "block4", key: `10.8.${i}.1 . 17 . 203.0.113.5 . 5555` },
            opts: { timeoutSec: 3600, comment: `dots:bench/${i}` },
          },
        ]),
      );
      applied.push(performance.now() - t);
      t = performance.now();
      const r = await enforcer.handle({
        cuid: "bench",
        mid: 1000 + i,
        scope: {
          "target-prefix": ["203.0.113.5/32"],
          "target-protocol": [17],
          "target-port-range": [{ "lower-port": 5555 }],
          [`${CH}source-prefix`]: ["198.51.100.2/32"],
          [`${CH}source-port-range`]: [{ "lower-port": 50000 + i }],
        },
        lifetime: 3600,
      });
      handled.push(performance.now() - t);
      if (r.outcome !== "enforced") throw new Error(r.detail);
    }
    await enforcer.close();
    const b = median(bare);
    console.log(`bare \`nft add element\` (ip netns exec, execFileSync): ${b.toFixed(1)} ms`);
    console.log(
      `NftablesBackend.apply (nft -f -, async, one transaction): ${median(applied).toFixed(1)} ms  ratio ${(median(applied) / b).toFixed(2)}`,
    );
    console.log(
      `enforcer.handle (lookup + setup once + apply):          ${median(handled).toFixed(1)} ms  ratio ${(median(handled) / b).toFixed(2)}`,
    );
  } finally {
    spawnSync("ip", ["netns", "del", ns]);
  }
}

async function main(): Promise<void> {
  if (!(globalThis as { gc?: unknown }).gc) console.log("(run with node --expose-gc for exact memory figures)");
  synthetic();
  if (haveTools()) await kernel();
  else console.log("\n2) and 3) skipped: need root, ip, nft and conntrack");
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
