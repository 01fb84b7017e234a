// The DOTS CBOR key table: RFC 9132 Table 5 (keys 1..51), the RFC 9066 call-home keys and the
// RFC 9244 attack-detail subset a call-home client may attach to a scope. Everything else in
// src/cbor (name <-> key maps, enumeration label tables, which key may appear where) derives
// from TABLE below; there is no second list to keep in step.

/** How a key's value looks on the wire (CBOR) and in the JSON view (RFC 7951 encoding of YANG). */
export type DotsValueType =
  /** CBOR map <-> JSON object. */
  | { readonly kind: "container" }
  /** CBOR array of maps <-> JSON array of objects (YANG list). */
  | { readonly kind: "list" }
  /** CBOR array of text <-> JSON array of strings (YANG leaf-list of strings/prefixes/addresses). */
  | { readonly kind: "string-list" }
  /** CBOR array of uints <-> JSON array of numbers, each <= max (e.g. target-protocol, uint8). */
  | { readonly kind: "uint-list"; readonly max: number }
  /** CBOR uint <-> JSON number, <= max (uint8/16/32: RFC 7951 keeps these as JSON numbers). */
  | { readonly kind: "uint"; readonly max: number }
  /** CBOR uint <-> JSON decimal string, <= max (uint64 counters, gauges, times; see Table 5). */
  | { readonly kind: "uint-string"; readonly max: bigint }
  /** CBOR text <-> JSON string. */
  | { readonly kind: "string" }
  /** CBOR true/false <-> JSON boolean. */
  | { readonly kind: "boolean" }
  /** CBOR uint <-> JSON label. */
  | { readonly kind: "enum"; readonly labels: ReadonlyArray<readonly [number, string]> }
  /** CBOR tag 4 [-2, mantissa] <-> JSON string with two fraction digits ("2.00"). */
  | { readonly kind: "decimal64" }
  /** lifetime: union of uint32 and int32 -1; JSON number, CBOR uint or negative int -1. */
  | { readonly kind: "lifetime" };

/** One row of the key table. */
export interface DotsKeyRow {
  /** The CBOR map key. */
  readonly key: number;
  /** The member name in the JSON view, module-qualified exactly where RFC 7951 wants it. */
  readonly name: string;
  readonly type: DotsValueType;
  /** Keys of the containers/lists this key may appear in; ROOT for top-level objects. */
  readonly parents: readonly number[];
  /** Where the number comes from; "[B]" marks numbers not confirmed against the RFC text. */
  readonly source: string;
}

/** Parent id of top-level members (no CBOR key is 0). */
export const ROOT = 0;

const CONTAINER: DotsValueType = { kind: "container" };
const LIST: DotsValueType = { kind: "list" };
const STRINGS: DotsValueType = { kind: "string-list" };
const STRING: DotsValueType = { kind: "string" };
const BOOLEAN: DotsValueType = { kind: "boolean" };
const DECIMAL: DotsValueType = { kind: "decimal64" };
const UINT8: DotsValueType = { kind: "uint", max: 0xff };
const UINT16: DotsValueType = { kind: "uint", max: 0xffff };
const UINT32: DotsValueType = { kind: "uint", max: 0xffffffff };
const UINT32_TEXT: DotsValueType = { kind: "uint-string", max: 0xffffffffn };
const UINT64_TEXT: DotsValueType = { kind: "uint-string", max: 0xffffffffffffffffn };

// Parent groups used more than once.
const SCOPE = 2;
const CONFLICT_SCOPE = 21;
const CONFIG_SETS = [32, 44]; // mitigating-config, idle-config
const INT_PARAMS = [33, 37, 38, 50]; // heartbeat-interval, missing-hb-allowed, max-retransmit, probing-rate
const DECIMAL_PARAMS = [39, 40]; // ack-timeout, ack-random-factor
const TALKER = 186;

const S9132 = "RFC 9132 Table 5";
const S9066 = "RFC 9066 section 6";
const S9066B = "RFC 9066 redirect [B]";
// RFC 9244 numbers: the digest's pre-publication table and go-dots (which claims RFC 9244) disagree
// on some; these follow go-dots' current codec tags. Comprehension-optional, so a peer that
// numbers them differently only loses the detail, never the request.
const S9244B = "RFC 9244 [B]";

export const TABLE: readonly DotsKeyRow[] = [
  // RFC 9132 Table 5
  { key: 1, name: "ietf-dots-signal-channel:mitigation-scope", type: CONTAINER, parents: [ROOT], source: S9132 },
  { key: 2, name: "scope", type: LIST, parents: [1], source: S9132 },
  { key: 3, name: "cdid", type: STRING, parents: [SCOPE], source: S9132 },
  { key: 4, name: "cuid", type: STRING, parents: [SCOPE], source: S9132 },
  { key: 5, name: "mid", type: UINT32, parents: [SCOPE], source: S9132 },
  { key: 6, name: "target-prefix", type: STRINGS, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 7, name: "target-port-range", type: LIST, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 8, name: "lower-port", type: UINT16, parents: [7, 32769, 189], source: S9132 },
  { key: 9, name: "upper-port", type: UINT16, parents: [7, 32769, 189], source: S9132 },
  { key: 10, name: "target-protocol", type: { kind: "uint-list", max: 0xff }, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 11, name: "target-fqdn", type: STRINGS, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 12, name: "target-uri", type: STRINGS, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 13, name: "alias-name", type: STRINGS, parents: [SCOPE, CONFLICT_SCOPE], source: S9132 },
  { key: 14, name: "lifetime", type: { kind: "lifetime" }, parents: [SCOPE], source: S9132 },
  { key: 15, name: "mitigation-start", type: UINT64_TEXT, parents: [SCOPE], source: S9132 },
  {
    key: 16,
    name: "status",
    type: {
      kind: "enum",
      labels: [
        [1, "attack-mitigation-in-progress"],
        [2, "attack-successfully-mitigated"],
        [3, "attack-stopped"],
        [4, "attack-exceeded-capability"],
        [5, "dots-client-withdrawn-mitigation"],
        [6, "attack-mitigation-terminated"],
        [7, "attack-mitigation-withdrawn"],
        [8, "attack-mitigation-signal-loss"],
      ],
    },
    parents: [SCOPE],
    source: S9132,
  },
  { key: 17, name: "conflict-information", type: CONTAINER, parents: [SCOPE], source: S9132 },
  {
    key: 18,
    name: "conflict-status",
    type: {
      kind: "enum",
      labels: [
        [1, "request-inactive-other-active"],
        [2, "request-active"],
        [3, "all-requests-inactive"],
      ],
    },
    parents: [17],
    source: S9132,
  },
  {
    key: 19,
    name: "conflict-cause",
    type: {
      kind: "enum",
      labels: [
        [1, "overlapping-targets"],
        [2, "conflict-with-acceptlist"],
        [3, "cuid-collision"],
        [4, "request-rejected-legitimate-traffic"], // RFC 9066
        [5, "overlapping-pipes"], // RFC 9244 [B]
      ],
    },
    parents: [17],
    source: S9132,
  },
  { key: 20, name: "retry-timer", type: UINT32_TEXT, parents: [17], source: S9132 },
  { key: 21, name: "conflict-scope", type: CONTAINER, parents: [17], source: S9132 },
  { key: 22, name: "acl-list", type: LIST, parents: [CONFLICT_SCOPE], source: S9132 },
  { key: 23, name: "acl-name", type: STRING, parents: [22], source: S9132 },
  { key: 24, name: "acl-type", type: STRING, parents: [22], source: S9132 },
  { key: 25, name: "bytes-dropped", type: UINT64_TEXT, parents: [SCOPE], source: S9132 },
  { key: 26, name: "bps-dropped", type: UINT64_TEXT, parents: [SCOPE], source: S9132 },
  { key: 27, name: "pkts-dropped", type: UINT64_TEXT, parents: [SCOPE], source: S9132 },
  { key: 28, name: "pps-dropped", type: UINT64_TEXT, parents: [SCOPE], source: S9132 },
  {
    key: 29,
    name: "attack-status",
    type: {
      kind: "enum",
      labels: [
        [1, "under-attack"],
        [2, "attack-successfully-mitigated"],
      ],
    },
    parents: [SCOPE],
    source: S9132,
  },
  { key: 30, name: "ietf-dots-signal-channel:signal-config", type: CONTAINER, parents: [ROOT], source: S9132 },
  { key: 31, name: "sid", type: UINT32, parents: [30], source: S9132 },
  { key: 32, name: "mitigating-config", type: CONTAINER, parents: [30], source: S9132 },
  { key: 33, name: "heartbeat-interval", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 34, name: "max-value", type: UINT16, parents: INT_PARAMS, source: S9132 },
  { key: 35, name: "min-value", type: UINT16, parents: INT_PARAMS, source: S9132 },
  { key: 36, name: "current-value", type: UINT16, parents: INT_PARAMS, source: S9132 },
  { key: 37, name: "missing-hb-allowed", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 38, name: "max-retransmit", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 39, name: "ack-timeout", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 40, name: "ack-random-factor", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 41, name: "max-value-decimal", type: DECIMAL, parents: DECIMAL_PARAMS, source: S9132 },
  { key: 42, name: "min-value-decimal", type: DECIMAL, parents: DECIMAL_PARAMS, source: S9132 },
  { key: 43, name: "current-value-decimal", type: DECIMAL, parents: DECIMAL_PARAMS, source: S9132 },
  { key: 44, name: "idle-config", type: CONTAINER, parents: [30], source: S9132 },
  { key: 45, name: "trigger-mitigation", type: BOOLEAN, parents: [SCOPE], source: S9132 },
  { key: 46, name: "ietf-dots-signal-channel:redirected-signal", type: CONTAINER, parents: [ROOT], source: S9132 },
  { key: 47, name: "alt-server", type: STRING, parents: [46], source: S9132 },
  { key: 48, name: "alt-server-record", type: STRINGS, parents: [46], source: S9132 },
  { key: 49, name: "ietf-dots-signal-channel:heartbeat", type: CONTAINER, parents: [ROOT], source: S9132 },
  { key: 50, name: "probing-rate", type: CONTAINER, parents: CONFIG_SETS, source: S9132 },
  { key: 51, name: "peer-hb-status", type: BOOLEAN, parents: [49], source: S9132 },

  // RFC 9066 call home (all comprehension-optional). lower-type/upper-type are unprefixed because
  // their parent list already belongs to the call-home module (RFC 7951 section 4).
  { key: 32768, name: "ietf-dots-call-home:source-prefix", type: STRINGS, parents: [SCOPE], source: S9066 },
  { key: 32769, name: "ietf-dots-call-home:source-port-range", type: LIST, parents: [SCOPE], source: S9066 },
  { key: 32770, name: "ietf-dots-call-home:source-icmp-type-range", type: LIST, parents: [SCOPE], source: S9066 },
  { key: 32771, name: "lower-type", type: UINT8, parents: [32770, 190], source: S9066 },
  { key: 32772, name: "upper-type", type: UINT8, parents: [32770, 190], source: S9066 },
  { key: 32773, name: "ietf-dots-call-home:alt-ch-client", type: STRING, parents: [46], source: S9066B },
  { key: 32774, name: "ietf-dots-call-home:alt-ch-client-record", type: STRINGS, parents: [46], source: S9066B },
  { key: 32775, name: "ietf-dots-call-home:ttl", type: UINT32, parents: [46], source: S9066B },

  // RFC 9244 attack-detail subset inside a mitigation scope [B] (all comprehension-optional).
  { key: 209, name: "ietf-dots-telemetry:attack-detail", type: LIST, parents: [SCOPE], source: S9244B },
  { key: 204, name: "vendor-id", type: UINT32, parents: [209], source: S9244B },
  { key: 164, name: "attack-id", type: UINT32, parents: [209], source: S9244B },
  { key: 165, name: "attack-description", type: STRING, parents: [209], source: S9244B },
  {
    key: 166,
    name: "attack-severity",
    type: {
      kind: "enum",
      labels: [
        [1, "none"],
        [2, "low"],
        [3, "medium"],
        [4, "high"],
        [5, "unknown"],
      ],
    },
    parents: [209],
    source: S9244B,
  },
  { key: 167, name: "start-time", type: UINT64_TEXT, parents: [209], source: S9244B },
  { key: 168, name: "end-time", type: UINT64_TEXT, parents: [209], source: S9244B },
  { key: 170, name: "top-talker", type: CONTAINER, parents: [209], source: S9244B },
  { key: TALKER, name: "talker", type: LIST, parents: [170], source: S9244B },
  { key: 171, name: "spoofed-status", type: BOOLEAN, parents: [TALKER], source: S9244B },
  { key: 187, name: "source-prefix", type: STRING, parents: [TALKER], source: S9244B },
  { key: 189, name: "source-port-range", type: LIST, parents: [TALKER], source: S9244B },
  { key: 190, name: "source-icmp-type-range", type: LIST, parents: [TALKER], source: S9244B },
];

/** RFC 9132 section 6: unknown keys in these ranges make a message unprocessable (4.00). */
export function isComprehensionRequired(key: number): boolean {
  return (key >= 1 && key <= 127) || (key >= 256 && key <= 16383);
}

/** Numeric form of DotsValueType["kind"], for the codecs' switch (one object shape, no string compares). */
export const enum Kind {
  Container,
  List,
  StringList,
  UintList,
  Uint,
  UintString,
  String,
  Boolean,
  Enum,
  Decimal64,
  Lifetime,
}

const KIND_OF: Record<DotsValueType["kind"], Kind> = {
  container: Kind.Container,
  list: Kind.List,
  "string-list": Kind.StringList,
  "uint-list": Kind.UintList,
  uint: Kind.Uint,
  "uint-string": Kind.UintString,
  string: Kind.String,
  boolean: Kind.Boolean,
  enum: Kind.Enum,
  decimal64: Kind.Decimal64,
  lifetime: Kind.Lifetime,
};

/** A row plus what derives from it, resolved once so the codecs need no lookups per item. */
export interface CompiledRow extends DotsKeyRow {
  readonly kind: Kind;
  /** Largest value for uint, uint-list (0 otherwise). */
  readonly max: number;
  /** Largest value for uint-string (0n otherwise). */
  readonly maxBig: bigint;
  /** For containers and lists: the members allowed inside. */
  readonly children: DotsScope | undefined;
  /** For enumerations: label <-> code. */
  readonly enumTable: EnumTable | undefined;
}

/** Members allowed inside one container/list (or at ROOT), by key and by JSON name. */
export interface DotsScope {
  readonly byKey: ReadonlyMap<number, CompiledRow>;
  readonly byName: ReadonlyMap<string, CompiledRow>;
}

/** Enumeration tables derived from the rows: label -> code and code -> label per enum key. */
export interface EnumTable {
  readonly codeByLabel: ReadonlyMap<string, number>;
  readonly labelByCode: ReadonlyMap<number, string>;
}

function enumTableOf(row: DotsKeyRow): EnumTable | undefined {
  if (row.type.kind !== "enum") return undefined;
  return {
    codeByLabel: new Map(row.type.labels.map(([code, label]) => [label, code])),
    labelByCode: new Map(row.type.labels.map(([code, label]) => [code, label])),
  };
}

function buildScopes(): ReadonlyMap<number, DotsScope> {
  const scopes = new Map<number, { byKey: Map<number, CompiledRow>; byName: Map<string, CompiledRow> }>();
  const seenKeys = new Set<number>();
  const compiled = TABLE.map((row) => {
    if (seenKeys.has(row.key)) throw new Error(`DOTS key table: key ${row.key} listed twice`);
    seenKeys.add(row.key);
    const t = row.type;
    return {
      ...row,
      kind: KIND_OF[t.kind],
      max: t.kind === "uint" || t.kind === "uint-list" ? t.max : 0,
      maxBig: t.kind === "uint-string" ? t.max : 0n,
      children: undefined as DotsScope | undefined,
      enumTable: enumTableOf(row),
    };
  });
  for (const row of compiled) {
    for (const parent of row.parents) {
      let scope = scopes.get(parent);
      if (!scope) scopes.set(parent, (scope = { byKey: new Map(), byName: new Map() }));
      if (scope.byName.has(row.name)) throw new Error(`DOTS key table: name ${row.name} twice under ${parent}`);
      scope.byKey.set(row.key, row);
      scope.byName.set(row.name, row);
    }
  }
  for (const row of compiled) {
    const nested = row.type.kind === "container" || row.type.kind === "list";
    row.children = scopes.get(row.key);
    if (nested && !row.children) throw new Error(`DOTS key table: ${row.name} has no members`);
    if (!nested && row.children) throw new Error(`DOTS key table: ${row.name} is a leaf but has members`);
  }
  return scopes;
}

/** Parent key (or ROOT) -> the members allowed there. Only containers and lists have an entry. */
export const SCOPES: ReadonlyMap<number, DotsScope> = buildScopes();

/** Key -> row, whatever the context (every key has one name). */
export const ROW_BY_KEY: ReadonlyMap<number, DotsKeyRow> = new Map(TABLE.map((r) => [r.key, r]));

/** Enum key -> its label table. */
export const ENUMS: ReadonlyMap<number, EnumTable> = new Map(
  TABLE.flatMap((row) => {
    const table = enumTableOf(row);
    return table ? [[row.key, table] as const] : [];
  }),
);

/** The members allowed under `parent` (a container/list key, or ROOT). */
export function membersOf(parent: number): DotsScope {
  const scope = SCOPES.get(parent);
  if (!scope) throw new Error(`DOTS key ${parent} is not a container or list`);
  return scope;
}

/** Human-readable JSON path of a key, e.g. for error messages. */
export function nameOfKey(key: number): string | undefined {
  return ROW_BY_KEY.get(key)?.name;
}
