// Many homes in one process, for cluster tests and benches: one CallHomeDialer engine per home,
// each with its own PSK identity and its own socket (so its own source port, which a jhash load
// balancer spreads on). Run as `node home-fleet.js '<job JSON>'` (inside a network namespace with
// `ip netns exec`); prints one JSON line per event on stdout and exits when stdin closes or on
// SIGTERM. Every home decides "enforced" at once on a new mitigation (auto-decide).
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import type { ConfigSet } from "../../src/dots/session-config";
import { CallHomeDialer } from "../../src/dots/home-engine";

export interface FleetHome {
  identity: string;
  /** PSK as text. */
  key: string;
  prefix: string;
  transport: "udp" | "tcp";
}

export interface FleetJob {
  host: string;
  port: number;
  homes: FleetHome[];
  /** heartbeat-interval the homes offer, s. */
  heartbeatInterval: number;
  /** Overrides of both config sets (ack-timeout, max-retransmit, missing-hb-allowed). */
  config?: Partial<ConfigSet>;
  reconnect: { minMs: number; maxMs: number };
  /** First attempts spread over this many ms. */
  spreadMs: number;
  firstAttemptJitterMs?: number;
}

export type FleetEvent =
  | { event: "ready"; homes: number }
  | { event: "up"; home: string; transport: string; at: number }
  | { event: "down"; home: string; reason: string; at: number }
  | { event: "error"; home: string; message: string; at: number }
  | { event: "mitigation"; home: string; mid: number; cuid: string; kind: string; at: number };

function out(e: FleetEvent): void {
  process.stdout.write(JSON.stringify(e) + "\n");
}

/** A home-fleet process in a network namespace, its events collected. */
export class HomeFleet {
  readonly child: ChildProcessWithoutNullStreams;
  readonly events: FleetEvent[] = [];
  private buf = "";
  constructor(netns: string, job: FleetJob) {
    this.child = spawn("ip", ["netns", "exec", netns, process.execPath, __filename, JSON.stringify(job)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stdout.on("data", (c: Buffer) => {
      this.buf += c.toString();
      for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line) as FleetEvent);
        } catch {
          // not an event line
        }
      }
    });
    this.child.stderr.on("data", () => undefined);
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    const t = setTimeout(() => this.child.kill("SIGKILL"), 4000);
    await gone;
    clearTimeout(t);
  }
}

async function main(job: FleetJob): Promise<void> {
  const dialers: CallHomeDialer[] = [];
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void Promise.all(dialers.map((d) => d.stop().catch(() => undefined))).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
  process.on("SIGTERM", stop);
  for (const h of job.homes) {
    const d = new CallHomeDialer({
      hosts: [job.host],
      port: job.port,
      transport: h.transport,
      psk: { identity: h.identity, key: Buffer.from(h.key) },
      homePrefixes: [h.prefix],
      heartbeatInterval: job.heartbeatInterval,
      reconnect: job.reconnect,
      tuning: {
        idleConfig: job.config,
        mitigatingConfig: job.config,
        ...(job.firstAttemptJitterMs !== undefined ? { firstAttemptJitterMs: job.firstAttemptJitterMs } : {}),
      },
    });
    // reconnects, probes and failed attempts report here (bounded text)
    d.on("error", (e: Error) => out({ event: "error", home: h.identity, message: e.message.slice(0, 200), at: Date.now() }));
    d.on("connected", (i: { transport: string }) => out({ event: "up", home: h.identity, transport: i.transport, at: Date.now() }));
    d.on("disconnected", (i: { reason: string }) => out({ event: "down", home: h.identity, reason: i.reason, at: Date.now() }));
    d.on("mitigation", (m: { cuid: string; mid: number; kind: string }) => {
      out({ event: "mitigation", home: h.identity, mid: m.mid, cuid: m.cuid, kind: m.kind, at: Date.now() });
      if (m.kind === "new") {
        try {
          d.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced", detail: "home-fleet" });
        } catch {
          // already ended
        }
      }
    });
    dialers.push(d);
  }
  out({ event: "ready", homes: dialers.length });
  for (const d of dialers) setTimeout(() => void d.start().catch(() => undefined), Math.floor(Math.random() * job.spreadMs));
}

if (require.main === module) {
  main(JSON.parse(process.argv[2] ?? "{}") as FleetJob).catch((e: Error) => {
    process.stderr.write(`home-fleet: ${e.message}\n`);
    process.exit(1);
  });
}
