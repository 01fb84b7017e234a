// Helpers shared by the DOTS Node-RED nodes: parsing of form/msg values into DOTS JSON pieces,
// typed-input evaluation, and loading of library modules. Kept free of protocol logic: the
// library in src/ decides what is valid DOTS; this file only turns editor text into data.
import { parsePrefix } from "../../src/dots/prefixes";
import type { Node, NodeAPI, NodeMessage } from "node-red";
import type { CertificateCredential } from "../../src/dots/api";
import { CONFLICT_CAUSE_LABELS, discoveryDomainProblem, dnsServerProblem, ISP_STATUS_LABELS } from "../../src/dots";

/** An error that names the form field (or msg property) it is about, for Catch nodes. */
export class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
    /** False when the message already names the field(s). */
    prefix = true,
  ) {
    super(prefix ? `${field}: ${message}` : message);
    this.name = "FieldError";
  }
}

export function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** Splits "a, b c" or ["a","b"] or a number into trimmed, non-empty strings. */
export function listOf(value: unknown): string[] {
  if (value === undefined || value === null || value === "") return [];
  if (Array.isArray(value)) return value.flatMap((v) => listOf(v));
  if (typeof value === "number") return [String(value)];
  if (typeof value === "string") return value.split(/[\s,;]+/).filter((s) => s.length > 0);
  throw new Error(`expected text or a list, got ${typeof value}`);
}

/** listOf for a form field or msg property: a value that is not text or a list names the field. */
function fieldList(field: string, value: unknown): string[] {
  try {
    return listOf(value);
  } catch (e) {
    throw new FieldError(field, toError(e).message);
  }
}

/** Normalises a prefix or bare address to CIDR text; throws with a readable reason. */
export function normalisePrefix(text: string): string {
  // The runtime's strict parser (src/dots/prefixes.ts), which the editor's rules script mirrors;
  // a bare address is a host prefix.
  return parsePrefix(text, { allowBareAddress: true }).text;
}

export function parsePrefixes(field: string, value: unknown): string[] {
  try {
    return listOf(value).map(normalisePrefix);
  } catch (e) {
    throw new FieldError(field, toError(e).message);
  }
}

/** "80, 1000-2000" -> [{lower, upper?}] within 0..max. */
export function parseRanges(field: string, value: unknown, max: number, lowerKey: string, upperKey: string): Array<Record<string, number>> {
  const items = fieldList(field, value);
  return items.map((item) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    if (!m) throw new FieldError(field, `"${item}" is not a number or a range like 10-20`);
    const lower = Number(m[1]);
    const upper = m[2] === undefined ? undefined : Number(m[2]);
    if (lower > max || (upper !== undefined && upper > max)) throw new FieldError(field, `"${item}" is outside 0..${max}`);
    if (upper !== undefined && upper < lower) throw new FieldError(field, `"${item}": upper bound is below lower bound`);
    const range: Record<string, number> = { [lowerKey]: lower };
    if (upper !== undefined && upper !== lower) range[upperKey] = upper;
    return range;
  });
}

const protocolNames: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, gre: 47, esp: 50, icmpv6: 58, "ipv6-icmp": 58, sctp: 132 };

export function parseProtocols(field: string, value: unknown): number[] {
  const items = fieldList(field, value);
  return items.map((item) => {
    const named = protocolNames[item.toLowerCase()];
    if (named !== undefined) return named;
    if (!/^\d{1,3}$/.test(item) || Number(item) > 255)
      throw new FieldError(field, `"${item}" is not a protocol number (0..255) or name (tcp, udp, icmp, icmpv6)`);
    return Number(item);
  });
}

export function parseInteger(field: string, value: unknown, min: number, max: number): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  const n = typeof value === "number" ? value : typeof value === "string" && /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new FieldError(field, `"${String(value)}" is not a whole number in ${min}..${max}`);
  return n;
}

/** Evaluates a TypedInput property (str/num/msg/flow/global/env/json/jsonata) as a promise. */
export function evaluate(RED: NodeAPI, node: Node, value: string, type: string | undefined, msg: NodeMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    RED.util.evaluateNodeProperty(value, type || "str", node, msg, (err: Error | null, result: unknown) => {
      if (err) reject(err);
      else resolve(result);
    });
  });
}

/** Converts a PSK given as hex ("0x..." allowed) or as text to bytes. */
export function pskBytes(key: string, format: string): Buffer {
  if (format === "hex") {
    const hex = key.replace(/^0x/i, "").replace(/[\s:]/g, "");
    if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex))
      throw new Error("the key is not valid hexadecimal (even number of 0-9/a-f digits)");
    return Buffer.from(hex, "hex");
  }
  if (key.length === 0) throw new Error("the key is empty");
  return Buffer.from(key, "utf8");
}

/**
 * Loads a library module that may not exist yet in a partial build; returns undefined only when
 * the module itself is missing (any other load error is real and thrown).
 */
export function tryRequire<T>(spec: string): T | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(spec) as T;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err && err.code === "MODULE_NOT_FOUND" && String(err.message).includes(spec.replace(/^(\.\.\/)+/, ""))) return undefined;
    throw e;
  }
}

/** Runs close steps with a deadline so Node-RED never reports "Close timed out". */
export function closeWithin(ms: number, work: Promise<unknown>, done: () => void, onError: (e: Error) => void): void {
  let finished = false;
  const timer = setTimeout(() => {
    if (finished) return;
    finished = true;
    onError(new Error(`close took longer than ${ms} ms`));
    done();
  }, ms);
  work
    .then(
      () => undefined,
      (e) => onError(toError(e)),
    )
    .finally(() => {
      clearTimeout(timer);
      if (finished) return;
      finished = true;
      done();
    });
}

/** What a node owns that emits socket errors: detached after it stops. */
export interface Detachable {
  removeAllListeners(): unknown;
  on(event: "error", listener: () => void): unknown;
}

/** Stops `target` (if any), then detaches its listeners; socket errors after close are not fatal. */
export function stopAndDetach<T extends Detachable>(target: T | undefined, stop: (t: T) => Promise<unknown>): Promise<unknown> {
  if (!target) return Promise.resolve();
  return stop(target).finally(() => {
    target.removeAllListeners();
    target.on("error", () => undefined);
  });
}

/** The end of every node's close handler: `done` always runs within `ms`, status cleared, a slow or failed stop only warned. */
export function finishClose(node: Node, reporter: ErrorReporter, work: Promise<unknown>, done: () => void, ms = 10000): void {
  reporter.dispose();
  closeWithin(
    ms,
    work,
    () => {
      node.status({});
      done();
    },
    (err) => node.warn(err.message),
  );
}

/** "home-a: 198.51.100.0/24, 2001:db8::/48" per line -> { "home-a": [...] }. */
export function parseHomePrefixes(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  (text || "").split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) return;
    const m = /^([^\s:]+)\s*:\s*(.+)$/.exec(line);
    if (!m) throw new Error(`home prefixes line ${i + 1}: expected "home-name: prefix, prefix"`);
    try {
      out[m[1]] = [...(out[m[1]] ?? []), ...listOf(m[2]).map(normalisePrefix)];
    } catch (e) {
      throw new Error(`home prefixes line ${i + 1}: ${toError(e).message}`);
    }
  });
  return out;
}

/** What a core tls-config node offers (npm:@node-red/nodes core/network/05-tls.js). */
export interface TlsConfigNode extends Node {
  valid?: boolean;
  addTLSOptions(opts: Record<string, unknown>): Record<string, unknown>;
}

/** Certificate credentials from a core tls-config node (PEM text it loaded). */
export function certificateFrom(tlsNode: TlsConfigNode): CertificateCredential {
  const o = tlsNode.addTLSOptions({}) as {
    cert?: string | Buffer;
    key?: string | Buffer;
    ca?: string | Buffer;
    passphrase?: string;
    servername?: string;
  };
  if (!o.cert || !o.key) throw new Error("the TLS configuration has no certificate and key");
  const c: CertificateCredential = { cert: o.cert, key: o.key };
  if (o.ca) c.ca = o.ca;
  if (o.passphrase) c.passphrase = o.passphrase;
  if (o.servername) c.servername = o.servername;
  return c;
}

/** The config version this release writes (the editor's `version` default). */
export const CONFIG_VERSION = 1;

/**
 * Warns when a node was saved by a newer release: its settings may mean more than this release
 * understands. Older versions are migrated by the node itself (the listener and dialer, v1 -> v2).
 */
export function checkConfigVersion(RED: NodeAPI, node: Node, version: unknown, supported = CONFIG_VERSION): void {
  const v = Number(version ?? supported);
  if (Number.isFinite(v) && v > supported) node.warn(RED._(`${node.type}.errors.newer-version`, { version: v, supported }));
}

/** At most this many errors wait for the flows to start; later ones are only logged. */
const MAX_EARLY_ERRORS = 20;

type RuntimeEvents = NodeAPI["events"];

/**
 * Reporters waiting for the flows to start, per runtime. One shared "flows:started" listener per
 * runtime, not one per node: a deploy of many nodes must not trip MaxListenersExceededWarning.
 */
const waiting = new WeakMap<RuntimeEvents, Set<ErrorReporter>>();

function waitForStart(events: RuntimeEvents, reporter: ErrorReporter): void {
  let set = waiting.get(events);
  if (!set) {
    const pending = new Set<ErrorReporter>();
    set = pending;
    waiting.set(events, pending);
    const onStarted = (): void => {
      events.removeListener("flows:started", onStarted);
      waiting.delete(events);
      for (const r of pending) r.flowsStarted();
    };
    events.on("flows:started", onStarted);
  }
  set.add(reporter);
}

/**
 * Sends errors to Catch nodes, holding those raised before the flows have started. Node-RED
 * builds a flow's list of Catch nodes only after every node of the flow has been constructed,
 * so an error raised in a constructor (bad configuration) or right after it would be logged but
 * never caught. `dispose()` belongs in the node's close handler.
 */
export class ErrorReporter {
  private started = false;
  private readonly early: Array<[Error, NodeMessage]> = [];

  constructor(
    private readonly RED: NodeAPI,
    private readonly node: Node,
  ) {
    waitForStart(RED.events, this);
  }

  /** Called once by the shared listener. */
  flowsStarted(): void {
    if (this.started) return;
    this.started = true;
    for (const [err, msg] of this.early.splice(0)) this.node.error(err, msg);
  }

  report(e: unknown, msg: NodeMessage = {}): void {
    const err = toError(e);
    if (this.started) this.node.error(err, msg);
    else if (this.early.length < MAX_EARLY_ERRORS) this.early.push([err, msg]);
    else this.node.log(err.message);
  }

  dispose(): void {
    this.started = true; // nothing more to deliver
    this.early.length = 0;
    waiting.get(this.RED.events)?.delete(this);
  }
}

/** A domain to discover the ISP from (RFC 8973), trimmed; throws when it is not a DNS name. */
export function parseDomain(field: string, value: unknown): string | undefined {
  const text = typeof value === "string" ? value.trim() : value === undefined || value === null ? "" : String(value);
  if (text === "") return undefined;
  const problem = discoveryDomainProblem(text);
  if (problem) throw new FieldError(field, `"${text}" ${problem}`);
  return text;
}

/** DNS server addresses as node:dns takes them: "192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:5353". */
export function parseDnsServers(field: string, value: unknown): string[] {
  const items = fieldList(field, value);
  return items.map((text) => {
    const problem = dnsServerProblem(text);
    if (problem) throw new FieldError(field, `"${text}" is not a DNS server address: ${problem}`);
    return text;
  });
}

function codeOf(labelText: string | undefined, table: Readonly<Record<number, string>>): number | undefined {
  if (labelText === undefined) return undefined;
  if (/^\d+$/.test(labelText)) return Number(labelText); // a code the table does not name
  for (const [code, name] of Object.entries(table)) if (name === labelText) return Number(code);
  return undefined;
}

/**
 * The status (RFC 9132 section 4.4.2) and conflict cause of a mitigation as label and number, so
 * flows can compare numbers without a mapping of their own. Absent values are left out.
 */
export function statusFields(status: string | undefined, conflictCause: string | undefined): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  const statusCode = codeOf(status, ISP_STATUS_LABELS);
  if (status !== undefined) out.status = status;
  if (statusCode !== undefined) out.statusCode = statusCode;
  const causeCode = codeOf(conflictCause, CONFLICT_CAUSE_LABELS);
  if (conflictCause !== undefined) out.conflictCause = conflictCause;
  if (causeCode !== undefined) out.conflictCauseCode = causeCode;
  return out;
}
