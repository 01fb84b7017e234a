// Turns the mitigation-request form/msg values into the DOTS JSON view (RFC 9132 names plus the
// RFC 9066 call-home attributes). Shared by the request node and its tests.
import { FieldError, parseInteger, parsePrefixes, parseProtocols, parseRanges } from "./common";
import type { DotsJson } from "../../src/dots/api";
import { MITIGATION_SCOPE_KEY as MITIGATION_SCOPE, SCOPE } from "../../src/dots/vocabulary";

/** The fields a user fills in, each with its TypedInput type ("<field>Type"). */
export const requestFields = [
  "home",
  "targetPrefix",
  "sourcePrefix",
  "sourcePort",
  "targetPort",
  "protocol",
  "icmpType",
  "lifetime",
  "attackDescription",
] as const;
export type FieldName = (typeof requestFields)[number];

export type RequestDef = import("node-red").NodeDef &
  Record<FieldName, string> &
  Record<`${FieldName}Type`, string> & { version: number; allowIndefinite: boolean };

/** What the validator module (src/dots/validation.ts) offers, as far as this node uses it. */
export interface ValidationModule {
  validateMitigationRequest(
    json: unknown,
    opts: { side: "home" | "isp"; homePrefixes?: string[]; allowIndefiniteLifetime?: boolean },
  ): { ok: true; scope?: unknown } | { ok: false; errors: Array<{ field: string; rule?: string; message: string }> };
}

export { MITIGATION_SCOPE_KEY as MITIGATION_SCOPE, CALL_HOME_MODULE as CH } from "../../src/dots/vocabulary";
export const DEFAULT_LIFETIME = 3600;

/** Field label (as shown in the form) -> the DOTS attribute name it fills, for error messages. */
export const attributeOf: Record<FieldName, string> = {
  home: "home",
  targetPrefix: SCOPE.targetPrefix,
  sourcePrefix: SCOPE.sourcePrefix,
  sourcePort: SCOPE.sourcePortRange,
  targetPort: SCOPE.targetPortRange,
  protocol: SCOPE.targetProtocol,
  icmpType: SCOPE.sourceIcmpTypeRange,
  lifetime: SCOPE.lifetime,
  attackDescription: SCOPE.attackDetail,
};

export function buildScope(values: Partial<Record<FieldName, unknown>>, allowIndefinite: boolean): DotsJson {
  const scope: DotsJson = {};
  const target = parsePrefixes(attributeOf.targetPrefix, values.targetPrefix);
  if (target.length === 0)
    throw new FieldError(attributeOf.targetPrefix, "at least one target prefix is required (RFC 9066 section 5.3.1)");
  scope["target-prefix"] = target;
  const source = parsePrefixes(attributeOf.sourcePrefix, values.sourcePrefix);
  if (source.length === 0) throw new FieldError(attributeOf.sourcePrefix, "at least one source prefix is required in Call Home");
  scope[SCOPE.sourcePrefix] = source;
  const sourcePorts = parseRanges(attributeOf.sourcePort, values.sourcePort, 65535, "lower-port", "upper-port");
  if (sourcePorts.length) scope[SCOPE.sourcePortRange] = sourcePorts;
  const targetPorts = parseRanges(attributeOf.targetPort, values.targetPort, 65535, "lower-port", "upper-port");
  if (targetPorts.length) scope["target-port-range"] = targetPorts;
  const protocols = parseProtocols(attributeOf.protocol, values.protocol);
  if (protocols.length) scope["target-protocol"] = protocols;
  const icmp = parseRanges(attributeOf.icmpType, values.icmpType, 255, "lower-type", "upper-type");
  if (icmp.length) scope[SCOPE.sourceIcmpTypeRange] = icmp;
  // Lifetime is mandatory in a request; an empty field means RFC 9132's recommended 3600 s.
  const lifetime = parseInteger(attributeOf.lifetime, values.lifetime, -1, 0xffffffff) ?? DEFAULT_LIFETIME;
  {
    if (lifetime === 0) throw new FieldError("lifetime", "0 is not a valid lifetime (use a positive number of seconds)");
    if (lifetime === -1 && !allowIndefinite) throw new FieldError("lifetime", "-1 (indefinite) is not enabled on this node");
    scope.lifetime = lifetime;
  }
  const description = values.attackDescription;
  if (description !== undefined && description !== null && description !== "") {
    if (typeof description !== "string") throw new FieldError(attributeOf.attackDescription, "the attack description must be text");
    // RFC 9244 attack-detail: attack-id is mandatory; 0 means "described by text only".
    scope["ietf-dots-telemetry:attack-detail"] = [{ "vendor-id": 0, "attack-id": 0, "attack-description": description }];
  }
  return { [MITIGATION_SCOPE]: { scope: [scope] } };
}
