// `dots-call-home dial`: the home side (Call Home DOTS server) driven by JSON lines. With
// --enforce, the home enforcer (NAT lookup + nftables) decides every mitigation instead of stdin.
import type { DecisionOutcome } from "../dots/api";
import { CallHomeDialer } from "../dots/home-engine";
import { isDecisionOutcome } from "../dots/vocabulary";
import type { Device } from "../home/nat-lookup";
import type { HandleResult, HomeEnforcer } from "../home/enforcer";
import { createHomeEnforcerFromFlags, resumeMissing, wireDialer } from "../home/wiring";
import type { DialConfig } from "./args";
import type { EventWriter } from "./jsonl";

type Cmd = Record<string, unknown>;

export interface DialRunner {
  start(): Promise<void>;
  command(cmd: Cmd): void;
  stop(): Promise<void>;
}

/** What the engine and the enforcer need of each other; lets tests build the enforcer themselves. */
export interface DialRunnerDeps {
  createEnforcer?(config: NonNullable<DialConfig["enforcement"]>): Promise<HomeEnforcer>;
}

/** A device as printed: no flow records (they can be many), the facts an operator acts on. */
function deviceSummary(d: Device): Record<string, unknown> {
  return {
    address: d.address,
    ...(d.mac ? { mac: d.mac } : {}),
    ...(d.otherAddresses.length ? { otherAddresses: d.otherAddresses } : {}),
    ports: d.ports,
    publicPorts: d.publicPorts,
    protocols: d.protocols,
    flows: d.flows.length,
  };
}

function needMid(cmd: Cmd): number {
  const mid = cmd.mid;
  if (typeof mid !== "number" || !Number.isInteger(mid) || mid < 0 || mid > 0xffffffff) throw new Error(`"mid" must be a uint32`);
  return mid;
}

export function makeDialRunner(config: DialConfig, emit: EventWriter, deps: DialRunnerDeps = {}): DialRunner {
  const tuning = {
    ...(config.terminatingPeriodMs !== undefined ? { terminatingPeriodMs: config.terminatingPeriodMs } : {}),
    ...(config.statusPeriodMs !== undefined ? { statusPeriodMs: config.statusPeriodMs } : {}),
  };
  const dialer = new CallHomeDialer(Object.keys(tuning).length === 0 ? config.options : { ...config.options, tuning });
  let enforcer: HomeEnforcer | undefined;
  let unwire: (() => void) | undefined;
  // RFC 8973: what the SRV lookup named, so an operator sees where the dialer goes and why
  dialer.on("discovered", (d) => emit("discovered", { domain: d.domain, candidates: d.candidates }));
  dialer.on("connecting", (i) => emit("connecting", i));
  dialer.on("connected", (i) => emit("connected", i));
  dialer.on("disconnected", (i) => emit("disconnected", i));
  dialer.on("ended", (e) => emit("ended", { ...e }));
  dialer.on("redirected", (r) => emit("redirected", r));
  dialer.on("error", (e: Error) =>
    emit("error", {
      code: (e as { code?: string }).code ?? "ENGINE",
      message: e.message,
      ...((e as { file?: string }).file ? { file: (e as { file?: string }).file } : {}),
    }),
  );
  dialer.on("restored", (r) => emit("restored", { ...r }));
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

  const startEnforcer = async (flags: NonNullable<DialConfig["enforcement"]>): Promise<void> => {
    const e = deps.createEnforcer ? await deps.createEnforcer(flags) : await createHomeEnforcerFromFlags(flags);
    enforcer = e;
    e.on("lookup", (l) =>
      emit("lookup", { cuid: l.cuid, mid: l.mid, found: l.found, devices: l.devices.map(deviceSummary), detail: l.detail }),
    );
    e.on("consent-request", (c) =>
      emit("consent-request", {
        cuid: c.cuid,
        mid: c.mid,
        action: c.action,
        devices: c.devices.map(deviceSummary),
        lifetime: c.lifetime,
        script: c.script,
        deadline: new Date(c.deadline).toISOString(),
        onTimeout: c.onTimeout,
        answer: `{"cmd":"approve","mid":${c.mid}} or {"cmd":"reject","mid":${c.mid}}`,
      }),
    );
    e.on("enforcement", (c) => emit("enforcement", { ...c }));
    e.on("error", (err) => emit("error", { code: (err as { code?: string }).code ?? "ENFORCER", message: err.message }));
    // fail fast on a missing nft or permission, before the ISP can send anything
    await e.start();
    await e.lookup.source.start(); // reads the static table / builds the conntrack index now
    const held = dialer.mitigations();
    const report = await e.reconcile(held);
    emit("enforcer-ready", {
      backend: e.backend.kind,
      table: e.backend.table,
      action: e.action,
      consent: e.consent.policy,
      nat: e.lookup.source.kind,
    });
    if (report.removed.length > 0 || report.kept.length > 0 || report.missing.length > 0) {
      emit("reconciled", {
        kept: report.kept,
        missing: report.missing,
        removed: report.removed.length,
        ...(report.script ? { script: report.script } : {}),
      });
    }
    const wiring = {
      onResult: (r: HandleResult) =>
        emit("decision", {
          cuid: r.cuid,
          mid: r.mid,
          outcome: r.outcome,
          detail: r.detail,
          ...(r.reason ? { reason: r.reason } : {}),
          action: r.action,
          devices: r.devices.map((d) => d.address),
          ...(r.script && r.outcome !== "pending" ? { script: r.script } : {}),
          source: "enforcer",
        }),
      onError: (err: Error) => emit("error", { code: (err as { code?: string }).code ?? "ENFORCER", message: err.message }),
    };
    unwire = wireDialer(dialer, e, wiring);
    // live mitigations from the state file whose elements the kernel lost (reboot): block again
    await resumeMissing(dialer, e, held, report.missing, wiring);
  };

  const consentAnswer = (cmd: Cmd, approve: boolean): void => {
    if (!enforcer) throw new Error(`"${String(cmd.cmd)}" answers --consent manual; this dialer runs without --enforce`);
    if (enforcer.consent.policy.mode !== "manual")
      throw new Error(`"${String(cmd.cmd)}" answers --consent manual; consent is automatic here`);
    const mid = needMid(cmd);
    if (cmd.cuid !== undefined && typeof cmd.cuid !== "string") throw new Error(`"cuid" must be a string`);
    const cuid = cmd.cuid as string | undefined;
    const ok = approve ? enforcer.approve(mid, cuid) : enforcer.reject(mid, cuid);
    if (!ok) throw new Error(`no mitigation with mid ${mid} waits for consent`);
    emit("consent", {
      ...(cmd.id !== undefined ? { id: cmd.id } : {}),
      mid,
      ...(cuid ? { cuid } : {}),
      answer: approve ? "approved" : "rejected",
      source: "stdin",
    });
  };

  return {
    async start() {
      // the state file first: reconcile must know which kernel elements live mitigations own
      await dialer.restore();
      if (config.enforcement) await startEnforcer(config.enforcement);
      await dialer.start();
    },
    async stop() {
      unwire?.();
      unwire = undefined;
      try {
        await dialer.stop();
      } finally {
        // blocks stay in the kernel until their timeouts: the attack may still be running
        await enforcer?.close();
      }
    },
    command(cmd) {
      switch (cmd.cmd) {
        case "decide": {
          if (enforcer) throw new Error(`with --enforce the enforcer decides; answer consent with approve or reject`);
          const mid = needMid(cmd);
          if (typeof cmd.outcome !== "string" || !isDecisionOutcome(cmd.outcome))
            throw new Error(`"outcome" must be enforced, pending, legitimate or failed`);
          const decision: { mid: number; outcome: DecisionOutcome; cuid?: string; detail?: string } = {
            mid,
            outcome: cmd.outcome as DecisionOutcome,
          };
          if (typeof cmd.cuid === "string") decision.cuid = cmd.cuid;
          if (typeof cmd.detail === "string") decision.detail = cmd.detail;
          dialer.decide(decision);
          emit("decision", { ...(cmd.id !== undefined ? { id: cmd.id } : {}), ...decision, source: "stdin" });
          return;
        }
        case "approve":
          return consentAnswer(cmd, true);
        case "reject":
          return consentAnswer(cmd, false);
        case "mitigations":
          emit("mitigations", {
            ...(cmd.id !== undefined ? { id: cmd.id } : {}),
            mitigations: dialer.mitigations(),
            ...(enforcer
              ? {
                  enforced: enforcer.activeMitigations().map((a) => ({
                    cuid: a.cuid,
                    mid: a.mid,
                    action: a.action,
                    devices: a.devices.map(deviceSummary),
                    elements: a.elements.length,
                    remaining: a.remaining,
                  })),
                  pendingConsent: enforcer.pending().map((p) => ({ cuid: p.cuid, mid: p.mid, devices: p.devices.map(deviceSummary) })),
                }
              : {}),
          });
          return;
        default:
          throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}; dial accepts decide, approve, reject, mitigations`);
      }
    },
  };
}
