// A `dots-call-home` process for tests: JSON commands on stdin, one JSON event per line on stdout,
// run directly or inside a network namespace (`ip netns exec` execs in place, so signals reach node).
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

// Works from .build/<name>/test/support and from dist/test/support alike.
export const CLI_MAIN = path.resolve(__dirname, "../../src/cli/main.js");

// A process started without --state-dir keeps its default state (systemd's $STATE_DIRECTORY, which
// the CLI honours) in a fresh temporary directory of its own, removed when it exits: never in
// /var/lib/dots-call-home of the machine, never shared with another test's process (a home would
// restore its mitigations).
function ownStateDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "dots-cli-state-"));
}

export type CliLine = Record<string, unknown> & { event: string };

export class CliProcess {
  readonly child: ChildProcessWithoutNullStreams;
  /** Every stdout line so far; a line that is not JSON is kept as event "__not-json__". */
  readonly lines: CliLine[] = [];
  stderr = "";
  readonly exited: Promise<number | null>;
  private waiters: Array<{ pred: (l: CliLine) => boolean; resolve: (l: CliLine) => void }> = [];
  private buf = "";

  /** `main`: another build's cli/main.js (default: this build's). */
  constructor(args: string[], opts: { netns?: string; name?: string; main?: string } = {}) {
    this.name = opts.name ?? args[0] ?? "dots-call-home";
    const main = opts.main ?? CLI_MAIN;
    const stateDir = args.includes("--state-dir") ? undefined : ownStateDir();
    const env = stateDir ? { ...process.env, STATE_DIRECTORY: stateDir } : process.env;
    this.child = opts.netns
      ? spawn("ip", ["netns", "exec", opts.netns, process.execPath, main, ...args], { stdio: ["pipe", "pipe", "pipe"], env })
      : spawn(process.execPath, [main, ...args], { stdio: ["pipe", "pipe", "pipe"], env });
    this.child.stdout.on("data", (c: Buffer) => {
      this.buf += c.toString();
      for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
        const text = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let line: CliLine;
        try {
          line = JSON.parse(text) as CliLine;
        } catch {
          line = { event: "__not-json__", text };
        }
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => !(w.pred(line) && (w.resolve(line), true)));
      }
    });
    this.child.stderr.on("data", (c: Buffer) => (this.stderr += c.toString()));
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code) => {
        if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
        resolve(code);
      }),
    );
  }

  readonly name: string;

  /** The first line (already seen or still to come) that `pred` accepts; rejects after `ms`. */
  waitFor(pred: (l: CliLine) => boolean, ms = 10_000, what = "line"): Promise<CliLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<CliLine>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(
            `${this.name}: timed out waiting for ${what}; got:\n${this.lines.map((l) => JSON.stringify(l)).join("\n")}\nstderr: ${this.stderr}`,
          ),
        );
      }, ms);
      const done = (l: CliLine): void => {
        clearTimeout(timer);
        resolve(l);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  /** One command line on stdin; a string goes as it is (to test bad input). */
  send(cmd: unknown): void {
    this.child.stdin.write((typeof cmd === "string" ? cmd : JSON.stringify(cmd)) + "\n");
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Signals the process (SIGKILL after 5 s) and resolves with its exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}
