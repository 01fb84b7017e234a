// A real mosquitto broker on loopback for tests: own config in a temporary directory, stop and
// start again on the same port (broker outage tests).
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { hasCommand } from "./env";
import { freePort } from "./ports";

export const hasMosquitto = (): boolean => hasCommand("mosquitto");

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

export class TestBroker {
  private child?: ChildProcess;
  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(): Promise<TestBroker> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-mosquitto-"));
    const b = new TestBroker(await freePort(), dir);
    fs.writeFileSync(path.join(dir, "mosquitto.conf"), `listener ${b.port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    await b.resume();
    return b;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Starts mosquitto (again) on the same port; resolves when it accepts connections. */
  async resume(): Promise<void> {
    this.child = spawn("mosquitto", ["-c", path.join(this.dir, "mosquitto.conf")], { stdio: "ignore" });
    for (let i = 0; i < 200; i++) {
      if (await listening(this.port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`mosquitto did not listen on ${this.port}`);
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
