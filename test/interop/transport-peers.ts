// Runs real peers (openssl s_server/s_client, libcoap) for the transport interop tests, and always
// stops them: every spawned process is tracked until stopAllPeers() (call it in afterEach).
import { spawn, type ChildProcess } from "node:child_process";
import * as dgram from "node:dgram";
import * as net from "node:net";

export interface Peer {
  readonly proc: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves with the output once it matches re; rejects after ms or if the process exits first. */
  waitFor(re: RegExp, ms?: number): Promise<string>;
  /** Resolves with the exit code (or null when killed). */
  exited(): Promise<number | null>;
  write(text: string): void;
  stop(): Promise<void>;
}

const running = new Set<Peer>();

export function spawnPeer(command: string, args: string[]): Peer {
  const proc = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let exitCode: number | null | undefined;
  const waiters = new Set<() => void>();
  const poke = () => waiters.forEach((w) => w());
  proc.stdout?.on("data", (d: Buffer) => ((out += d.toString("latin1")), poke()));
  proc.stderr?.on("data", (d: Buffer) => ((out += d.toString("latin1")), poke()));
  proc.stdin?.on("error", () => undefined);
  proc.on("error", (e) => ((out += `\nspawn error: ${e.message}`), (exitCode = -1), poke()));
  const exit = new Promise<number | null>((r) => proc.on("exit", (code) => ((exitCode = code), poke(), r(code))));
  const peer: Peer = {
    proc,
    output: () => out,
    waitFor(re, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(out)) done(() => resolve(out));
          else if (exitCode !== undefined) done(() => reject(new Error(`${command} exited (${exitCode}) before ${re}: ${out}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${re} from ${command}: ${out}`))), ms);
        const done = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    exited: () => exit,
    write: (text) => void proc.stdin?.write(text),
    async stop() {
      running.delete(peer);
      if (exitCode === undefined) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 2000);
        await exit;
        clearTimeout(t);
      }
    },
  };
  running.add(peer);
  return peer;
}

/**
 * `openssl s_server -dtls1_2` on a free port (or `port`), resolved once it accepts. `args` are the
 * rest of its command line (credentials, -cipher, -naccept, ...).
 */
export async function openSslDtlsServer(
  args: string[],
  opts: { port?: number; family?: 4 | 6 } = {},
): Promise<{ port: number; peer: Peer }> {
  const port = opts.port ?? (await freePort());
  const peer = spawnPeer("openssl", ["s_server", "-dtls1_2", `-${opts.family ?? 4}`, "-accept", String(port), ...args]);
  await peer.waitFor(/ACCEPT/);
  return { port, peer };
}

/** s_server arguments for a PSK-only server (no certificate) with our test key under `identity`. */
export function openSslPskServerArgs(identity: string): string[] {
  return ["-nocert", "-psk", PSK_HEX, "-psk_identity", identity];
}

export async function stopAllPeers(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}

/** A port that is free for both UDP and TCP right now (and, if span > 1, the next span-1 too). */
export async function freePort(span = 1): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    let ok = true;
    for (let p = base; p < base + span && ok; p++) ok = (await tcpFree(p)) && (await udpFree(p));
    if (ok) return base;
  }
  throw new Error("no free port found");
}

function tcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => (s.close(), resolve(false)));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

export const PSK_TEXT = "secretPSK-0123456789";
export const PSK_KEY = Buffer.from(PSK_TEXT);
export const PSK_HEX = PSK_KEY.toString("hex");
