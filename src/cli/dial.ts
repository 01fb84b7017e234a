// `dots-call-home dial`: the home side (Call Home DOTS server) driven by JSON lines.
import type { DecisionOutcome } from "../dots/api";
import { CallHomeDialer } from "../dots/home-engine";
import type { DialConfig } from "./args";
import type { EventWriter } from "./jsonl";

type Cmd = Record<string, unknown>;
const OUTCOMES = new Set(["enforced", "pending", "legitimate", "failed"]);

export interface DialRunner {
  start(): Promise<void>;
  command(cmd: Cmd): void;
  stop(): Promise<void>;
}

export function makeDialRunner(config: DialConfig, emit: EventWriter): DialRunner {
  const dialer = new CallHomeDialer(config.options);
  dialer.on("connecting", (i) => emit("connecting", i));
  dialer.on("connected", (i) => emit("connected", i));
  dialer.on("disconnected", (i) => emit("disconnected", i));
  dialer.on("ended", (e) => emit("ended", { ...e }));
  dialer.on("redirected", (r) => emit("redirected", r));
  dialer.on("error", (e: Error) => emit("error", { code: (e as { code?: string }).code ?? "ENGINE", message: e.message }));
  dialer.on("mitigation", (m) => {
    emit("mitigation", { ...m });
    if (config.autoDecide && m.kind === "new") {
      try {
        dialer.decide({ cuid: m.cuid, mid: m.mid, outcome: config.autoDecide, detail: "auto-decide" });
        emit("decision", { cuid: m.cuid, mid: m.mid, outcome: config.autoDecide, source: "auto-decide" });
      } catch (e) {
        emit("error", { code: "DECIDE", message: (e as Error).message, mid: m.mid });
      }
    }
  });

  return {
    start: () => dialer.start(),
    stop: () => dialer.stop(),
    command(cmd) {
      switch (cmd.cmd) {
        case "decide": {
          const mid = cmd.mid;
          if (typeof mid !== "number" || !Number.isInteger(mid) || mid < 0) throw new Error(`"mid" must be a uint32`);
          if (typeof cmd.outcome !== "string" || !OUTCOMES.has(cmd.outcome)) throw new Error(`"outcome" must be enforced, pending, legitimate or failed`);
          const decision: { mid: number; outcome: DecisionOutcome; cuid?: string; detail?: string } = { mid, outcome: cmd.outcome as DecisionOutcome };
          if (typeof cmd.cuid === "string") decision.cuid = cmd.cuid;
          if (typeof cmd.detail === "string") decision.detail = cmd.detail;
          dialer.decide(decision);
          emit("decision", { ...(cmd.id !== undefined ? { id: cmd.id } : {}), ...decision, source: "stdin" });
          return;
        }
        case "mitigations":
          emit("mitigations", { ...(cmd.id !== undefined ? { id: cmd.id } : {}), mitigations: dialer.mitigations() });
          return;
        default:
          throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}; dial accepts decide, mitigations`);
      }
    },
  };
}
