#!/usr/bin/env node
// Entry of the `dots-call-home` command (package.json bin).
import * as fs from "node:fs";
import type { Writable } from "node:stream";
import { CliUsageError, HELP, parseDialArgs, parseListenArgs } from "./args";
import { makeDialRunner } from "./dial";
import { parseFastNetMonArgsAndFlags, readDetails, runFastNetMonNotify } from "./fastnetmon";
import { makeEventWriter, readCommands } from "./jsonl";
import { makeListenRunner } from "./listen";
import type { MqttCarrier } from "./mqtt-carrier";
import { packageVersion } from "./version";

interface Runner {
  start(): Promise<void>;
  command(cmd: Record<string, unknown>): void;
  stop(): Promise<void>;
}

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    process.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub === "--version" || sub === "-V" || sub === "version" || rest.includes("--version")) {
    process.stdout.write(`dots-call-home ${packageVersion()}\n`);
    return 0;
  }
  if (sub === "fastnetmon-notify") return fastnetmonNotify(rest);
  const emit = makeEventWriter(process.stdout);
  let runner: Runner;
  let carrier: MqttCarrier | undefined;
  try {
    if (sub === "listen") {
      const cfg = parseListenArgs(rest);
      if (cfg === "help") {
        process.stdout.write(HELP);
        return 0;
      }
      if (cfg.mqtt) {
        const settings = cfg.mqtt;
        const psk = cfg.options.psk ?? [];
        const homes = new Set<string>([...psk.map((p) => p.home ?? p.identity), ...Object.keys(cfg.options.homePrefixes ?? {})]);
        const anyHome = cfg.options.certificate !== undefined;
        const mqtt: { carrier?: MqttCarrier } = {};
        const both: typeof emit = (event, fields = {}) => {
          emit(event, fields);
          mqtt.carrier?.event(event, fields);
        };
        const listenRunner = makeListenRunner(cfg, both);
        // loaded only here: a listener without --mqtt does not pay for mqtt.js
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy on purpose
        const { MqttCarrier: Carrier } = require("./mqtt-carrier") as typeof import("./mqtt-carrier");
        mqtt.carrier = new Carrier({ settings, runner: listenRunner, print: emit, knownHome: (h) => anyHome || homes.has(h) });
        carrier = mqtt.carrier;
        runner = listenRunner;
      } else runner = makeListenRunner(cfg, emit);
    } else if (sub === "dial") {
      const cfg = parseDialArgs(rest);
      if (cfg === "help") {
        process.stdout.write(HELP);
        return 0;
      }
      runner = makeDialRunner(cfg, emit);
    } else {
      throw new CliUsageError(`unknown command "${sub}": use listen, dial or fastnetmon-notify (see --help)`);
    }
  } catch (e) {
    const usage = e instanceof CliUsageError;
    emit("error", { code: usage ? "USAGE" : "CONFIG", message: (e as Error).message });
    process.stderr.write(`dots-call-home: ${(e as Error).message}\n`);
    return 2;
  }

  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= (async () => {
      detach();
      try {
        await runner.stop();
      } catch (e) {
        emit("error", { code: "STOP", message: (e as Error).message });
      }
      carrier?.event("stopped", { reason: why });
      await carrier?.stop().catch((e: Error) => emit("error", { code: "MQTT_STOP", message: e.message }));
      emit("stopped", { reason: why });
    })();
    return stopping;
  };

  const detach = readCommands(process.stdin, {
    command: (cmd) => {
      try {
        runner.command(cmd);
      } catch (e) {
        emit("error", {
          ...(cmd.id !== undefined ? { id: cmd.id } : {}),
          cmd: cmd.cmd,
          code: "BAD_COMMAND",
          message: (e as Error).message,
        });
      }
    },
    error: (code, message, line) => emit("error", { code, message, ...(line !== undefined ? { line } : {}) }),
    end: () => {
      // stdin closed: keep serving (a daemon may run with </dev/null); signals stop us.
    },
  });

  return new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      void stop(sig).then(() => resolve(0));
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    carrier?.start();
    runner.start().catch((e: Error) => {
      emit("error", { code: (e as { code?: string }).code ?? "START", message: e.message });
      void stop("start failed").then(() => resolve(1));
    });
  });
}

/** One FastNetMon notify call: JSON lines on stdout (and appended to --log), exit code 0/1/2. */
async function fastnetmonNotify(argv: string[]): Promise<number> {
  const emit = makeEventWriter(process.stdout);
  let cfg;
  try {
    cfg = parseFastNetMonArgsAndFlags(argv);
  } catch (e) {
    emit("error", { code: e instanceof CliUsageError ? "USAGE" : "CONFIG", message: (e as Error).message, argv });
    process.stderr.write(`dots-call-home fastnetmon-notify: ${(e as Error).message}\n`);
    return 2;
  }
  if (cfg === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  const log = cfg.log;
  const both: typeof emit = log
    ? makeEventWriter({
        write: (line: string) => {
          process.stdout.write(line);
          try {
            fs.appendFileSync(log, line, { mode: 0o640 });
          } catch (e) {
            process.stderr.write(`dots-call-home fastnetmon-notify: cannot append to --log ${log}: ${(e as Error).message}\n`);
          }
          return true;
        },
      } as unknown as Writable)
    : emit;
  // ban and attack_details bring the details on stdin; unban runs with FastNetMon's own stdin
  let details: string | undefined;
  if (cfg.call.action !== "unban") {
    const r = await readDetails(process.stdin, cfg.stdinTimeoutMs);
    if (r.truncated) both("note", { address: cfg.call.address, note: "details longer than 1 MiB: the rest was not read" });
    if (r.timedOut)
      both("note", { address: cfg.call.address, note: `stdin still open after ${cfg.stdinTimeoutMs} ms: read what had arrived` });
    details = r.text;
  }
  try {
    return await runFastNetMonNotify(cfg, details, both);
  } catch (e) {
    both("error", { code: "FAILED", address: cfg.call.address, action: cfg.call.action, message: (e as Error).message });
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.stdout.write("", () => process.exit(code)),
    (e: Error) => {
      process.stderr.write(`dots-call-home: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
