// `dots-call-home listen`: the ISP side (Call Home DOTS client) driven by JSON lines.
import type { DotsJson, StatusNotification } from "../dots/api";
import { CallHomeListener } from "../dots/isp-engine";
import type { ListenConfig } from "./args";
import type { EventWriter } from "./jsonl";

type Cmd = Record<string, unknown>;

function needString(cmd: Cmd, name: string): string {
  const v = cmd[name];
  if (typeof v !== "string" || v.length === 0) throw new Error(`"${name}" must be a non-empty string`);
  return v;
}

function needMid(cmd: Cmd, optional = false): number | undefined {
  const v = cmd.mid;
  if (v === undefined && optional) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`"mid" must be a uint32`);
  return v;
}

export interface ListenRunner {
  start(): Promise<void>;
  /** reply: where this command's response/error goes (default: the runner's event writer). */
  command(cmd: Cmd, reply?: EventWriter): void;
  /** Closes a live session (its session-down event follows); false when there is none. */
  closeSession(sessionId: string, reason: string): boolean;
  stop(): Promise<void>;
}

export function makeListenRunner(config: ListenConfig, emit: EventWriter): ListenRunner {
  const tuning: Record<string, unknown> = {};
  if (config.requestRepeatMs !== undefined) tuning.nonRepeatMs = config.requestRepeatMs;
  if (config.requestTimeoutMs !== undefined) tuning.requestTimeoutMs = config.requestTimeoutMs;
  if (config.cuidIdentity !== undefined) tuning.cuidIdentity = config.cuidIdentity;
  if (config.maxTcpPerAddress !== undefined) tuning.maxTcpPerAddress = config.maxTcpPerAddress;
  if (config.maxHandshakesPerSource !== undefined) tuning.maxDtlsHandshakesPerSource = config.maxHandshakesPerSource;
  if (config.dtlsCookieAlways === true) tuning.dtlsResumeWithoutCookie = false;
  const listener = new CallHomeListener(config.options, tuning);

  listener.on("listening", (info) => emit("listening", info));
  listener.on("session-up", (s) => emit("session-up", { session: s }));
  listener.on("session-down", (s, reason) => emit("session-down", { session: s, reason }));
  listener.on("status", (n: StatusNotification) => emit("status", { ...n }));
  listener.on("heartbeat", (h: unknown) => emit("heartbeat", h as Record<string, unknown>));
  listener.on("discarded", (d: unknown) => emit("discarded", d as Record<string, unknown>));
  listener.on("cuid-changed", (d: unknown) => emit("cuid-changed", d as Record<string, unknown>));
  listener.on("auth-failure", (d: unknown) => emit("auth-failure", d as Record<string, unknown>));
  listener.on("drop", (d: unknown) => emit("drop", d as Record<string, unknown>));
  listener.on("identity-conflict", (d) => emit("identity-conflict", { ...d }));
  listener.on("resynced", (r) => emit("resynced", { ...r }));
  listener.on("session-moved", (m) => emit("session-moved", { ...m }));
  listener.on("error", (e: Error) => {
    const file = (e as { file?: unknown }).file;
    emit("error", { code: (e as { code?: string }).code ?? "ENGINE", message: e.message, ...(typeof file === "string" ? { file } : {}) });
  });
  listener.on("drop-end", (d: unknown) => emit("drop-end", d as Record<string, unknown>));

  const run = (cmd: Cmd, name: string, work: () => Promise<unknown>, reply: EventWriter): void => {
    const id = cmd.id;
    work().then(
      (outcome) => reply("response", { cmd: name, ...(id !== undefined ? { id } : {}), outcome }),
      (e: Error) =>
        reply("error", {
          cmd: name,
          ...(id !== undefined ? { id } : {}),
          code: (e as { code?: string }).code ?? "FAILED",
          message: e.message,
        }),
    );
  };

  return {
    start: () => listener.start(),
    stop: () => listener.stop(),
    closeSession: (sessionId, reason) => listener.closeSession(sessionId, reason),
    command(cmd, reply = emit) {
      const name = cmd.cmd;
      switch (name) {
        case "mitigate": {
          const session = needString(cmd, "session");
          if (typeof cmd.request !== "object" || cmd.request === null || Array.isArray(cmd.request))
            throw new Error(`"request" must be a JSON object (the mitigation request's JSON view)`);
          const mid = needMid(cmd, true);
          run(cmd, name, () => listener.mitigate(session, cmd.request as DotsJson, mid !== undefined ? { mid } : undefined), reply);
          return;
        }
        case "withdraw": {
          const session = needString(cmd, "session");
          const mid = needMid(cmd) as number;
          run(cmd, name, () => listener.withdraw(session, mid), reply);
          return;
        }
        case "get": {
          const session = needString(cmd, "session");
          const mid = needMid(cmd, true);
          run(cmd, name, () => listener.get(session, mid), reply);
          return;
        }
        case "efficacy": {
          const session = needString(cmd, "session");
          const mid = needMid(cmd) as number;
          const st = cmd.attackStatus ?? cmd["attack-status"];
          if (st !== "under-attack" && st !== "attack-successfully-mitigated")
            throw new Error(`"attackStatus" must be "under-attack" or "attack-successfully-mitigated"`);
          run(cmd, name, () => listener.efficacy(session, mid, st), reply);
          return;
        }
        case "redirect": {
          const session = needString(cmd, "session");
          const altClient = needString(cmd, "altClient");
          const target: { altClient: string; records?: string[]; ttl?: number } = { altClient };
          if (cmd.records !== undefined) target.records = cmd.records as string[];
          if (cmd.ttl !== undefined) target.ttl = cmd.ttl as number;
          run(cmd, name, () => listener.redirect(session, target), reply);
          return;
        }
        case "sessions":
          reply("sessions", { ...(cmd.id !== undefined ? { id: cmd.id } : {}), sessions: listener.sessions() });
          return;
        default:
          throw new Error(`unknown command ${JSON.stringify(name)}; listen accepts mitigate, withdraw, get, efficacy, redirect, sessions`);
      }
    },
  };
}
