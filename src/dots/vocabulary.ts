// The DOTS vocabulary both engines, the enforcer, the CLI and the nodes share: JSON-view member
// names (RFC 9132 section 6, RFC 9066 section 6), the enumeration labels of the CBOR key table,
// the Uri-Path of the resources, the decision outcomes and the domain-name syntax. One name for
// one thing: nothing below nodes/ spells these strings anywhere else.
import { isIP } from "node:net";
import { DOTS_CONTENT_FORMAT, dotsEnumLabels } from "../cbor";

export { DOTS_CONTENT_FORMAT };

/** Module prefix of the RFC 9066 call-home members. */
export const CALL_HOME_MODULE = "ietf-dots-call-home:";

export const MITIGATION_SCOPE_KEY = "ietf-dots-signal-channel:mitigation-scope";
export const REDIRECTED_SIGNAL_KEY = "ietf-dots-signal-channel:redirected-signal";

/**
 * The members a call-home mitigation request scope may carry, by role. Adding an attribute: a row
 * here, its CBOR key in src/cbor/schema.ts, its check and typed field in src/dots/validation.ts.
 */
export const SCOPE = {
  targetPrefix: "target-prefix",
  targetPortRange: "target-port-range",
  targetProtocol: "target-protocol",
  targetFqdn: "target-fqdn",
  targetUri: "target-uri",
  lifetime: "lifetime",
  triggerMitigation: "trigger-mitigation",
  attackStatus: "attack-status",
  sourcePrefix: `${CALL_HOME_MODULE}source-prefix`,
  sourcePortRange: `${CALL_HOME_MODULE}source-port-range`,
  sourceIcmpTypeRange: `${CALL_HOME_MODULE}source-icmp-type-range`,
  attackDetail: "ietf-dots-telemetry:attack-detail",
} as const;

/** Every member of SCOPE: what a request scope may carry besides the Uri-Path identifiers. */
export const SCOPE_REQUEST_MEMBERS: ReadonlySet<string> = new Set(Object.values(SCOPE));

/** Identifiers that live in the Uri-Path, never in a body (RFC 9132 section 4.4.1). */
export const SCOPE_ID_MEMBERS: ReadonlySet<string> = new Set(["cuid", "cdid", "mid"]);

/** Optional status attributes a server reports about what it dropped (RFC 9132 section 4.4.2, keys 25-28). */
export const DROPPED = {
  bytes: "bytes-dropped",
  bps: "bps-dropped",
  packets: "pkts-dropped",
  pps: "pps-dropped",
} as const;

export const REDIRECT = {
  altClient: `${CALL_HOME_MODULE}alt-ch-client`,
  altClientRecord: `${CALL_HOME_MODULE}alt-ch-client-record`,
  ttl: `${CALL_HOME_MODULE}ttl`,
} as const;

/** Uri-Path prefix of every DOTS signal-channel resource. */
export const WELL_KNOWN_DOTS = [".well-known", "dots"] as const;

/** RFC 9132 status registry (key 16). */
export const MitigationStatus = {
  InProgress: 1,
  Mitigated: 2,
  Stopped: 3,
  ExceededCapability: 4,
  ClientWithdrawn: 5,
  Terminated: 6,
  ServerWithdrawn: 7,
  SignalLoss: 8,
} as const;
export type MitigationStatusCode = (typeof MitigationStatus)[keyof typeof MitigationStatus];

/** status (key 16) labels by code, RFC 9132 section 4.4.2. */
export const STATUS_LABELS = dotsEnumLabels("status");

/** conflict-cause (key 19) labels, RFC 9132 plus RFC 9066 (4) and RFC 9244 (5). */
export const CONFLICT_CAUSE_LABELS = dotsEnumLabels("conflict-cause");

/** attack-status (key 29) codes by label. */
export const ATTACK_STATUS_CODES: Readonly<Record<string, number>> = { "under-attack": 1, "attack-successfully-mitigated": 2 };

/** What the home decided about a request (the dialer's decide(), the enforcer, the CLI and nodes). */
export const DECISION_OUTCOMES = ["enforced", "pending", "legitimate", "failed"] as const;
export type DecisionOutcome = (typeof DECISION_OUTCOMES)[number];

export function isDecisionOutcome(v: unknown): v is DecisionOutcome {
  return typeof v === "string" && (DECISION_OUTCOMES as readonly string[]).includes(v);
}

const FQDN = /^(?=.{1,253}\.?$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$/;

/** A DNS domain name (RFC 1123 labels, at most 253 characters plus an optional final dot), not an IP literal. */
export function isFqdn(v: unknown): v is string {
  return typeof v === "string" && FQDN.test(v) && isIP(v) === 0;
}
