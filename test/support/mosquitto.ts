// A real mosquitto broker on loopback for tests: own config in a temporary directory, stop and
// start again on the same port (broker outage tests).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { hasCommand } from "./env";

export const hasMosquitto = (): boolean => hasCommand("mosquitto");

function listening(port: number, socketPath?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = socketPath !== undefined ? net.connect(socketPath) : net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

/** A TCP port free on 127.0.0.1 now (the broker needs no UDP, which a busy machine may have used up). */
function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
}

export class TestBroker {
  private child?: ChildProcess;
  private constructor(
    readonly port: number,
    private readonly dir: string,
    readonly tls: boolean,
    private readonly netns?: string,
  ) {}

  /** The broker's Unix socket (with `unixSocket`): reachable from any network namespace. */
  get socketPath(): string {
    return path.join(this.dir, "mqtt.sock");
  }

  /**
   * tls: an mqtts listener with these PEM files (requireCertificate: clients must present one
   * signed by ca). user: password authentication (mosquitto_passwd), anonymous refused.
   * netns: run the broker inside that network namespace (its TCP port is on that namespace's
   * loopback); unixSocket: also listen on `socketPath`, so this process can reach it from outside.
   * persistence: keep retained messages and sessions across pause()/resume() (mosquitto.db).
   */
  static async start(
    opts: {
      tls?: { ca: string; cert: string; key: string; requireCertificate?: boolean };
      user?: { name: string; password: string };
      netns?: string;
      unixSocket?: boolean;
      persistence?: boolean;
      /** More mosquitto.conf lines (e.g. set_tcp_nodelay true, max_packet_size N). */
      conf?: string[];
    } = {},
  ): Promise<TestBroker> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-mosquitto-"));
    fs.chmodSync(dir, 0o777); // mosquitto started as root reads its files (and writes its db) as user mosquitto
    // a fresh namespace has every port free
    const b = new TestBroker(opts.netns !== undefined ? 1883 : await freeTcpPort(), dir, opts.tls !== undefined, opts.netns);
    if (opts.netns !== undefined && opts.unixSocket !== true) throw new Error("TestBroker: a broker in a netns needs unixSocket");
    b.unix = opts.unixSocket === true;
    const conf = [`listener ${b.port} 127.0.0.1`];
    conf.push(...(opts.persistence ? ["persistence true", `persistence_location ${dir}/`, "autosave_interval 1"] : ["persistence false"]));
    if (opts.tls) {
      for (const [name, pem] of Object.entries({ ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key }))
        fs.writeFileSync(path.join(dir, `${name}.pem`), pem, { mode: 0o644 });
      conf.push(
        `cafile ${path.join(dir, "ca.pem")}`,
        `certfile ${path.join(dir, "cert.pem")}`,
        `keyfile ${path.join(dir, "key.pem")}`,
        `require_certificate ${opts.tls.requireCertificate === true}`,
      );
    }
    if (opts.user) {
      const file = path.join(dir, "passwd");
      const r = spawnSync("mosquitto_passwd", ["-b", "-c", file, opts.user.name, opts.user.password], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}`);
      fs.chmodSync(file, 0o644);
      conf.push(`password_file ${file}`, "allow_anonymous false");
    } else conf.push("allow_anonymous true");
    conf.push(...(opts.conf ?? []));
    // per_listener_settings is off: the options above hold for this listener too
    if (b.unix) conf.push(`listener 0 ${b.socketPath}`);
    fs.writeFileSync(path.join(dir, "mosquitto.conf"), conf.join("\n") + "\n");
    await b.resume();
    return b;
  }

  private unix = false;

  get url(): string {
    return `${this.tls ? "mqtts" : "mqtt"}://127.0.0.1:${this.port}`;
  }

  /** Starts mosquitto (again) on the same port; resolves when it accepts connections. */
  async resume(): Promise<void> {
    const argv = ["mosquitto", "-c", path.join(this.dir, "mosquitto.conf")];
    const child =
      this.netns !== undefined
        ? spawn("ip", ["netns", "exec", this.netns, ...argv], { stdio: ["ignore", "ignore", "pipe"] })
        : spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
    for (let i = 0; i < 200; i++) {
      if (await listening(this.port, this.unix ? this.socketPath : undefined)) return;
      if (child.exitCode !== null) throw new Error(`mosquitto exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`mosquitto did not listen on ${this.port}: ${stderr}`);
  }

  /** Stops the broker (its connections drop); resume() brings it back. */
  async pause(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (!c || c.exitCode !== null) return;
    const gone = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await gone;
  }

  async stop(): Promise<void> {
    await this.pause();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
