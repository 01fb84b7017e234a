// Glue for the two users of the enforcer: the dialer (mitigation/ended events in, decide() out)
// and the CLI flags (--nat, --enforce, --action, --consent).
import type { Decision, DropMetricsSource, MitigationEnded, MitigationEvent } from "../dots/api";
import { HomeError } from "./errors";
import { createHomeEnforcer, parseStoredEnforcement, type EnforcementAction, type HandleResult, type HomeEnforcer } from "./enforcer";
import type { ConsentPolicy } from "./consent";
import { parseNatSpec, sharedNatSource } from "./nat-source";
import { CommandRunner, netnsRunner } from "./runner";

/** What wireDialer needs of CallHomeDialer (src/dots/home-engine.ts). */
export interface DialerLike {
  on(event: "mitigation", listener: (m: MitigationEvent) => void): unknown;
  on(event: "ended", listener: (e: MitigationEnded) => void): unknown;
  off(event: "mitigation", listener: (m: MitigationEvent) => void): unknown;
  off(event: "ended", listener: (e: MitigationEnded) => void): unknown;
  decide(d: Decision): void;
  /** Status reports take bytes-/pkts-dropped from here (CallHomeDialer.setMetricsSource). */
  setMetricsSource?(source: DropMetricsSource | undefined): void;
}

export interface WireOptions {
  /** Every outcome handed to the dialer (for logs, Node-RED status, admin notices). */
  onResult?(r: HandleResult): void;
  onError?(err: Error): void;
}

/**
 * Connects a dialer to an enforcer: each new or refreshed mitigation is handled and its outcome
 * goes to dialer.decide (a later consent answer too); withdrawals and expiries remove the block.
 * Returns a function that disconnects them.
 */
export function wireDialer(dialer: DialerLike, enforcer: HomeEnforcer, opts: WireOptions = {}): () => void {
  const report = (err: unknown) => opts.onError?.(err instanceof Error ? err : new Error(String(err)));
  const decide = (r: HandleResult) => {
    opts.onResult?.(r);
    try {
      // what enforcement added goes into the dialer's state file, so a restart can put it back
      const enforcement =
        r.outcome === "enforced" && r.elements && r.elements.length > 0
          ? { action: r.action, elements: r.elements.map((e) => ({ set: e.set, key: e.key })) }
          : undefined;
      dialer.decide({ cuid: r.cuid, mid: r.mid, outcome: r.outcome, detail: r.detail, ...(enforcement ? { enforcement } : {}) });
    } catch (err) {
      report(err); // the mitigation ended meanwhile
    }
  };
  const onMitigation = (m: MitigationEvent) => {
    enforcer.handle({ cuid: m.cuid, mid: m.mid, scope: m.scope, lifetime: m.lifetime, kind: m.kind }).then((r) => {
      if (m.kind !== "efficacy") decide(r);
    }, report);
  };
  const onEnded = (e: MitigationEnded) => {
    enforcer.end({ cuid: e.cuid, mid: e.mid }).catch(report);
  };
  dialer.on("mitigation", onMitigation);
  dialer.on("ended", onEnded);
  enforcer.on("decision", decide);
  dialer.setMetricsSource?.(enforcer.metricsSource());
  return () => {
    dialer.setMetricsSource?.(undefined);
    dialer.off("mitigation", onMitigation);
    dialer.off("ended", onEnded);
    enforcer.off("decision", decide);
  };
}

/** A mitigation the dialer still holds after a restart (CallHomeDialer.mitigations()). */
export interface HeldMitigation {
  cuid: string;
  mid: number;
  lifetime: number;
  scope: unknown;
  enforcement?: unknown;
}

/**
 * After a restart, for the live mitigations whose elements the kernel no longer holds (reconcile's
 * `missing`: a reboot or a flushed table): put back what the state file says enforcement added,
 * else handle them again (NAT lookup, consent); every outcome goes to the dialer as a decision.
 */
export async function resumeMissing(
  dialer: DialerLike,
  enforcer: HomeEnforcer,
  held: HeldMitigation[],
  missing: Array<{ cuid: string; mid: number }>,
  opts: WireOptions = {},
): Promise<HandleResult[]> {
  const byKey = new Map(held.map((m) => [`${m.cuid}/${m.mid}`, m]));
  const out: HandleResult[] = [];
  for (const b of missing) {
    const m = byKey.get(`${b.cuid}/${b.mid}`);
    if (!m) continue;
    const stored = parseStoredEnforcement(m.enforcement);
    let r: HandleResult;
    try {
      r = stored
        ? await enforcer.restore({ cuid: m.cuid, mid: m.mid, lifetime: m.lifetime, enforcement: stored })
        : await enforcer.handle({ cuid: m.cuid, mid: m.mid, scope: m.scope, lifetime: m.lifetime, kind: "new" });
    } catch (err) {
      opts.onError?.(err instanceof Error ? err : new Error(String(err)));
      continue;
    }
    out.push(r);
    opts.onResult?.(r);
    const enforcement =
      r.outcome === "enforced" && r.elements && r.elements.length > 0
        ? { action: r.action, elements: r.elements.map((e) => ({ set: e.set, key: e.key })) }
        : undefined;
    try {
      dialer.decide({ cuid: r.cuid, mid: r.mid, outcome: r.outcome, detail: r.detail, ...(enforcement ? { enforcement } : {}) });
    } catch (err) {
      opts.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
  }
  return out;
}

/** The CLI's enforcement flags, as text. */
export interface EnforcementFlags {
  /** auto | conntrack | conntrack-list | proc | proc:PATH | static:FILE (default auto) */
  nat?: string;
  /** nftables | dry-run (default nftables) */
  enforce?: string;
  /** block | quarantine (default block) */
  action?: string;
  /** auto | manual (default auto) */
  consent?: string;
  /** Manual consent: how long to wait, ms (default 300000). */
  consentTimeoutMs?: number;
  /** Manual consent: what a timeout counts as (default reject). */
  consentOnTimeout?: string;
  /** Run conntrack/nft/ip inside this network namespace. */
  netns?: string;
  /** nft table name (default dots_call_home). */
  table?: string;
  /** Upstream ISP name when several dialers share the table (elements tagged, reconcile scoped). */
  owner?: string;
}

export class InvalidOptionError extends HomeError {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super("INVALID_SCOPE", `--${option}: ${message}`);
  }
}

function oneOf<T extends string>(option: string, value: string | undefined, allowed: readonly T[], dflt: T): T {
  if (value === undefined) return dflt;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new InvalidOptionError(option, `expected ${allowed.join(" | ")}, got ${JSON.stringify(value)}`);
}

/** Checks the flags and builds the enforcer they describe (nothing is started yet). */
export async function createHomeEnforcerFromFlags(flags: EnforcementFlags): Promise<HomeEnforcer> {
  const backend = oneOf("enforce", flags.enforce, ["nftables", "dry-run"] as const, "nftables");
  const action: EnforcementAction = oneOf("action", flags.action, ["block", "quarantine"] as const, "block");
  const mode = oneOf("consent", flags.consent, ["auto", "manual"] as const, "auto");
  let consent: ConsentPolicy = { mode: "auto" };
  if (mode === "manual") {
    const timeoutMs = flags.consentTimeoutMs ?? 300_000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
      throw new InvalidOptionError("consent-timeout", "must be a positive number of milliseconds");
    consent = {
      mode: "manual",
      timeoutMs,
      onTimeout: oneOf("consent-on-timeout", flags.consentOnTimeout, ["reject", "approve"] as const, "reject"),
    };
  }
  let spec;
  try {
    spec = parseNatSpec(flags.nat ?? "auto");
  } catch (err) {
    throw new InvalidOptionError("nat", (err as Error).message);
  }
  const runner = flags.netns ? netnsRunner(flags.netns) : new CommandRunner();
  // one NAT source (one conntrack -E child) per router, shared by every enforcer in this process
  const nat = await sharedNatSource(spec, { runner, router: flags.netns ?? "host" });
  return createHomeEnforcer({ nat, backend, action, consent, runner, table: flags.table, owner: flags.owner });
}
