// The DOTS layer's public surface: the two call-home engines, their shared contract, identifiers,
// validation and session configuration. Nodes and the CLI import from here.
export * from "./api";
export { CallHomeListener, type IspEngineTuning, type IspExtraEvents } from "./isp-engine";
export {
  IspRequestError,
  type IspErrorCode,
  type IspTuning,
  DEFAULT_TUNING as DEFAULT_ISP_TUNING,
  type AttackStatus,
  type RedirectTarget as IspRedirectTarget,
  normalizeMitigationRequest,
  efficacyBody,
  redirectBody,
  readScopeStatuses,
  mitigatePath,
} from "./isp-session";
export {
  CALL_HOME_MODULE,
  MITIGATION_SCOPE_KEY,
  REDIRECTED_SIGNAL_KEY,
  REDIRECT,
  SCOPE,
  SCOPE_REQUEST_MEMBERS,
  WELL_KNOWN_DOTS,
  MitigationStatus,
  STATUS_LABELS,
  STATUS_LABELS as ISP_STATUS_LABELS,
  CONFLICT_CAUSE_LABELS,
  ATTACK_STATUS_CODES,
  DECISION_OUTCOMES,
  DOTS_CONTENT_FORMAT,
  isDecisionOutcome,
  isFqdn,
} from "./vocabulary";
export type { ResyncEvent, ResyncedMitigation } from "./isp-session";
export { CallHomeDialer, type HomeEngineTuning, type HomeEngineOptions } from "./home-engine";
export { MID_ROLLOVER, MidAllocator, MidExhaustedError, cuidFromPskIdentity, cuidFromSpki, cuidForSession, sessionIdForPeer } from "./ids";
export {
  validateMitigationRequest,
  assertValidMitigationRequest,
  MitigationValidationError,
  type MitigationValidationContext,
  type MitigationValidationFailure,
  type MitigationValidationResult,
} from "./validation";
export { SessionConfig, DEFAULT_CONFIG_SET, DEFAULT_CONFIG_LIMITS, type ConfigSet, type SessionConfigOptions } from "./session-config";
export { buildHeartbeatJson, parseHeartbeatJson, HEARTBEAT_KEY } from "./heartbeat";
export { discoveryDomainProblem, dnsServerProblem } from "./dialer-connect";
export * from "./auth-events";
export { AUTH_PROBLEMS, type AuthProblem } from "../transport/auth-failure";
export { ConnectFailureTracker, BAN_HINT_AFTER_ROUNDS, type ConnectFailureReport } from "./connect-diagnosis";
export { DEFAULTS, LIMITS, MIN_PSK_KEY_BYTES, MAX_PSK_IDENTITY_LENGTH, pskKeyProblem, pskIdentityProblem, parseDuration } from "./defaults";
