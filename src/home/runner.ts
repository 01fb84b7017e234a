// Runs the system tools (conntrack, nft, ip, cat) as child processes without blocking the event
// loop: a time limit, an output cap and typed errors for each. A prefix argv such as
// ["ip", "netns", "exec", "router"] runs every command inside a network namespace.
import { spawn, type ChildProcess } from "node:child_process";
import {
  CommandFailedError,
  CommandTimeoutError,
  OutputTooLargeError,
  PermissionDeniedError,
  ToolMissingError,
  type HomeError,
} from "./errors";

export interface RunOptions {
  /** Written to the child's stdin, then stdin is closed. */
  input?: string;
  timeoutMs?: number;
  maxOutputBytes?: number;
  /** Resolve (instead of rejecting) on these non-zero exit codes. */
  okExitCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface StreamOptions {
  /** 0 or absent: no time limit (long-running event listeners). */
  timeoutMs?: number;
  /** Longer lines are dropped and counted, never buffered without bound. */
  maxLineLength?: number;
  /** Stop the child after this many lines (OutputTooLargeError). */
  maxLines?: number;
  onStderrLine?: (line: string) => void;
}

export interface StreamHandle {
  /** Resolves with the exit code when the child ends by itself; rejects with a typed error. */
  done: Promise<{ exitCode: number; droppedLines: number }>;
  /** Ends the child; `done` then resolves. */
  stop(): void;
  readonly pid: number | undefined;
}

const STDERR_CAP = 64 * 1024;

export interface CommandRunnerOptions {
  /** argv placed before every command, e.g. ["ip", "netns", "exec", "dch-router"]. */
  prefix?: string[];
  timeoutMs?: number;
  maxOutputBytes?: number;
}

export class CommandRunner {
  readonly prefix: string[];
  readonly timeoutMs: number;
  readonly maxOutputBytes: number;

  constructor(opts: CommandRunnerOptions = {}) {
    this.prefix = [...(opts.prefix ?? [])];
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxOutputBytes = opts.maxOutputBytes ?? 64 * 1024 * 1024;
  }

  /** Runs to completion and collects stdout (capped). */
  run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    const tool = argv[0];
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const cap = opts.maxOutputBytes ?? this.maxOutputBytes;
    return new Promise<RunResult>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = this.spawnChild(argv);
      } catch (err) {
        reject(classifySpawnError(this.prefix, tool, err));
        return;
      }
      const out: Buffer[] = [];
      let outBytes = 0;
      let stderr = "";
      let failure: HomeError | undefined;
      let settled = false;
      const timer = setTimeout(() => {
        failure = new CommandTimeoutError(tool, timeoutMs);
        child.kill("SIGKILL");
      }, timeoutMs);
      child.stdout!.on("data", (chunk: Buffer) => {
        outBytes += chunk.length;
        if (outBytes > cap) {
          if (!failure) failure = new OutputTooLargeError(tool, cap);
          child.kill("SIGKILL");
          return;
        }
        out.push(chunk);
      });
      child.stderr!.setEncoding("utf8");
      child.stderr!.on("data", (s: string) => {
        if (stderr.length < STDERR_CAP) stderr += s.slice(0, STDERR_CAP - stderr.length);
      });
      child.on("error", (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(classifySpawnError(this.prefix, tool, err));
      });
      child.on("close", (code) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (failure) return reject(failure);
        const exitCode = code ?? -1;
        if (exitCode === 0 || opts.okExitCodes?.includes(exitCode)) {
          resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr, exitCode });
        } else {
          reject(classifyExit(tool, exitCode, stderr));
        }
      });
      child.stdin!.on("error", () => {
        // EPIPE when the tool exits before reading stdin; the exit code reports the real cause.
      });
      child.stdin!.end(opts.input ?? "");
    });
  }

  /** Runs a command and hands each stdout line to onLine as it arrives. */
  stream(argv: string[], onLine: (line: string) => void, opts: StreamOptions = {}): StreamHandle {
    const tool = argv[0];
    const maxLine = opts.maxLineLength ?? 4096;
    let stopped = false;
    let child: ChildProcess | undefined;
    let dropped = 0;
    let lines = 0;
    let failure: HomeError | undefined;
    const done = new Promise<{ exitCode: number; droppedLines: number }>((resolve, reject) => {
      try {
        child = this.spawnChild(argv);
      } catch (err) {
        reject(classifySpawnError(this.prefix, tool, err));
        return;
      }
      const c = child;
      let pending = "";
      let stderr = "";
      let stderrPending = "";
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            failure = new CommandTimeoutError(tool, opts.timeoutMs!);
            c.kill("SIGKILL");
          }, opts.timeoutMs)
        : undefined;
      c.stdin!.end();
      c.stdout!.setEncoding("utf8");
      c.stdout!.on("data", (s: string) => {
        pending += s;
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line.length > maxLine) {
            dropped++;
            continue;
          }
          if (stopped || failure) continue;
          lines++;
          if (opts.maxLines !== undefined && lines > opts.maxLines) {
            failure = new OutputTooLargeError(tool, opts.maxLines);
            c.kill("SIGKILL");
            continue;
          }
          try {
            onLine(line);
          } catch {
            dropped++; // a consumer bug must not kill the stream
          }
        }
        if (pending.length > maxLine) {
          dropped++;
          pending = "";
        }
      });
      c.stderr!.setEncoding("utf8");
      c.stderr!.on("data", (s: string) => {
        if (stderr.length < STDERR_CAP) stderr += s.slice(0, STDERR_CAP - stderr.length);
        if (!opts.onStderrLine) return;
        stderrPending += s;
        let nl: number;
        while ((nl = stderrPending.indexOf("\n")) >= 0) {
          opts.onStderrLine(stderrPending.slice(0, nl));
          stderrPending = stderrPending.slice(nl + 1);
        }
        if (stderrPending.length > maxLine) stderrPending = "";
      });
      let settled = false;
      c.on("error", (err) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        reject(classifySpawnError(this.prefix, tool, err));
      });
      c.on("close", (code) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        if (pending.length > 0 && !stopped && !failure && pending.length <= maxLine) {
          try {
            onLine(pending);
          } catch {
            dropped++;
          }
        }
        if (failure) return reject(failure);
        const exitCode = code ?? -1;
        if (stopped || exitCode === 0) return resolve({ exitCode, droppedLines: dropped });
        reject(classifyExit(tool, exitCode, stderr));
      });
    });
    return {
      done,
      stop: () => {
        stopped = true;
        child?.kill("SIGTERM");
      },
      get pid() {
        return child?.pid;
      },
    };
  }

  private spawnChild(argv: string[]): ChildProcess {
    const full = [...this.prefix, ...argv];
    return spawn(full[0], full.slice(1), { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
  }
}

/** Runs commands inside the named network namespace (needs root). */
export function netnsRunner(namespace: string, opts: Omit<CommandRunnerOptions, "prefix"> = {}): CommandRunner {
  return new CommandRunner({ ...opts, prefix: ["ip", "netns", "exec", namespace] });
}

function classifySpawnError(prefix: string[], tool: string, err: unknown): HomeError {
  const e = err as NodeJS.ErrnoException;
  const program = prefix.length > 0 ? prefix[0] : tool;
  if (e && e.code === "ENOENT") return new ToolMissingError(program);
  if (e && (e.code === "EACCES" || e.code === "EPERM")) return new PermissionDeniedError(program, e.message);
  return new CommandFailedError(program, null, e instanceof Error ? e.message : String(err));
}

/** Maps a non-zero exit to the typed error the stderr text points at. */
export function classifyExit(tool: string, exitCode: number, stderr: string): HomeError {
  const missing = /exec of "([^"]+)" failed: No such file or directory/.exec(stderr);
  if (missing) return new ToolMissingError(missing[1]);
  if (exitCode === 127) return new ToolMissingError(tool, stderr.trim().slice(0, 200));
  if (/Operation not permitted|Permission denied|must be root|CAP_NET_ADMIN/i.test(stderr))
    return new PermissionDeniedError(tool, stderr.trim().slice(0, 300));
  return new CommandFailedError(tool, exitCode, stderr);
}
