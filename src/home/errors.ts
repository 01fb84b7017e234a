// Typed errors of the home side. Every failure a caller can act on has its own class and a
// stable `code`, so the CLI and the nodes can report it without parsing messages.

export type HomeErrorCode =
  | "TOOL_MISSING"
  | "PERMISSION_DENIED"
  | "COMMAND_TIMEOUT"
  | "OUTPUT_TOO_LARGE"
  | "COMMAND_FAILED"
  | "INVALID_SCOPE"
  | "INVALID_TABLE"
  | "NFT_ERROR"
  | "TOO_MANY_ELEMENTS"
  | "UNKNOWN_MITIGATION"
  | "CLOSED";

export class HomeError extends Error {
  readonly code: HomeErrorCode;
  constructor(code: HomeErrorCode, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A program (conntrack, nft, ip, cat) is not installed or not on PATH. */
export class ToolMissingError extends HomeError {
  constructor(
    readonly tool: string,
    detail?: string,
  ) {
    super("TOOL_MISSING", `required tool "${tool}" is not installed or not on PATH${detail ? `: ${detail}` : ""}`);
  }
}

/** The tool ran but the kernel refused (not root, no CAP_NET_ADMIN). */
export class PermissionDeniedError extends HomeError {
  constructor(
    readonly tool: string,
    detail: string,
  ) {
    super("PERMISSION_DENIED", `"${tool}" was refused by the kernel (needs root or CAP_NET_ADMIN): ${detail}`);
  }
}

export class CommandTimeoutError extends HomeError {
  constructor(
    readonly tool: string,
    readonly timeoutMs: number,
  ) {
    super("COMMAND_TIMEOUT", `"${tool}" did not finish within ${timeoutMs} ms and was stopped`);
  }
}

export class OutputTooLargeError extends HomeError {
  constructor(
    readonly tool: string,
    readonly limitBytes: number,
  ) {
    super("OUTPUT_TOO_LARGE", `"${tool}" produced more than ${limitBytes} bytes of output and was stopped`);
  }
}

export class CommandFailedError extends HomeError {
  constructor(
    readonly tool: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super("COMMAND_FAILED", `"${tool}" failed (exit ${exitCode ?? "signal"}): ${stderr.trim().slice(0, 500) || "no message"}`);
  }
}

/** The mitigation scope cannot be turned into a lookup or a filter (names the offending field). */
export class InvalidScopeError extends HomeError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super("INVALID_SCOPE", `${field}: ${message}`);
  }
}

/** A static NAT table (file or array) is malformed. */
export class InvalidTableError extends HomeError {
  constructor(message: string) {
    super("INVALID_TABLE", message);
  }
}

/** nft rejected a transaction; nothing of it was applied (nft -f is all or nothing). */
export class NftError extends HomeError {
  constructor(
    readonly nftMessage: string,
    readonly script: string,
  ) {
    super("NFT_ERROR", `nft rejected the transaction, nothing was applied: ${nftMessage.trim().slice(0, 800)}`);
  }
}

export class TooManyElementsError extends HomeError {
  constructor(
    readonly count: number,
    readonly limit: number,
  ) {
    super("TOO_MANY_ELEMENTS", `the mitigation would need ${count} filter elements, more than the limit of ${limit}`);
  }
}

export class UnknownMitigationError extends HomeError {
  constructor(what: string) {
    super("UNKNOWN_MITIGATION", `no such mitigation: ${what}`);
  }
}

export class ClosedError extends HomeError {
  constructor(what: string) {
    super("CLOSED", `${what} is closed`);
  }
}
