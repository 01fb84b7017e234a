// Flow fixtures shared by the node tests: the whole call-home loop in one runtime.
import { HOME_SETTING_NAMES } from "../../nodes/lib/home-endpoint";
import { ISP_SETTING_NAMES } from "../../nodes/lib/isp-endpoint";
export const PSK_HEX = "6b2f0c1e9a5d4b3c8f7e6d5c4b3a2918";

export const natTable = [
  {
    protocol: "tcp",
    device: "192.168.1.20",
    devicePort: 51000,
    public: "198.51.100.7",
    publicPort: 40001,
    target: "203.0.113.5",
    targetPort: 443,
    mac: "02:00:00:00:00:20",
  },
];

export interface LoopOptions {
  port: number;
  consent?: "auto" | "manual";
  transport?: "udp" | "tcp" | "auto";
  listenerTls?: boolean;
}

/**
 * ISP listener + home dialer, NAT lookup (static) and filter action (dry run), all wired; the
 * listener and dialer use the endpoint config nodes "ispEp" and "homeEp" (config version 2).
 */
export function loopFlow(o: LoopOptions): unknown[] {
  const v1 = loopFlowV1(o) as Array<Record<string, unknown>>;
  const lis = v1.find((n) => n.id === "lis")!;
  const dia = v1.find((n) => n.id === "dia")!;
  const ispEp = { id: "ispEp", type: "dots-isp-endpoint", version: 1, ...pick(lis, ISP_SETTINGS) };
  const homeEp = { id: "homeEp", type: "dots-home-endpoint", version: 1, ...pick(dia, HOME_SETTINGS) };
  return [
    ...v1.slice(0, 2),
    ispEp,
    homeEp,
    ...v1.slice(2).map((n) => {
      if (n.id === "lis") return { id: "lis", type: "dots-call-home-listener", z: "t", endpoint: "ispEp", version: 2, wires: n.wires };
      if (n.id === "dia") return { id: "dia", type: "dots-call-home-dialer", z: "t", endpoint: "homeEp", version: 2, wires: n.wires };
      return n;
    }),
  ];
}

/** The endpoint settings the v1 nodes carried inline: the runtime's own lists. */
export const ISP_SETTINGS: readonly string[] = ISP_SETTING_NAMES;
export const HOME_SETTINGS: readonly string[] = HOME_SETTING_NAMES;

function pick(n: Record<string, unknown>, names: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of names) if (n[k] !== undefined) out[k] = n[k];
  return out;
}

/** The same loop as saved by release 0.1 (config version 1): listener and dialer settings inline. */
export function loopFlowV1(o: LoopOptions): unknown[] {
  return [
    { id: "t", type: "tab" },
    { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex" },
    {
      id: "req",
      type: "dots-mitigation-request",
      z: "t",
      home: "home-1",
      targetPrefix: "203.0.113.5",
      sourcePrefix: "198.51.100.7",
      sourcePort: "40001",
      targetPort: "443",
      protocol: "tcp",
      lifetime: "600",
      wires: [["lis"]],
    },
    {
      id: "lis",
      type: "dots-call-home-listener",
      z: "t",
      port: o.port,
      host: "127.0.0.1",
      dtls: true,
      tls: o.listenerTls === true,
      psk: "k",
      homePrefixes: "home-1: 198.51.100.0/24",
      wires: [["ispEvents"], ["ispResp"]],
    },
    { id: "ispEvents", type: "helper", z: "t" },
    { id: "ispResp", type: "helper", z: "t" },
    {
      id: "dia",
      type: "dots-call-home-dialer",
      z: "t",
      hosts: "127.0.0.1",
      port: o.port,
      transport: o.transport ?? "udp",
      psk: "k",
      homePrefixes: "198.51.100.0/24",
      heartbeatInterval: 30,
      decisionWait: 2000,
      terminatingPeriod: 0,
      wires: [["nat", "homeMit"], ["filter", "homeEnded"], ["homeEvents"]],
    },
    { id: "homeMit", type: "helper", z: "t" },
    { id: "homeEnded", type: "helper", z: "t" },
    { id: "homeEvents", type: "helper", z: "t" },
    { id: "nat", type: "dots-nat-lookup", z: "t", source: "static", table: JSON.stringify(natTable), wires: [["filter"]] },
    {
      id: "filter",
      type: "dots-filter-action",
      z: "t",
      backend: "dry-run",
      action: "block",
      consent: o.consent ?? "auto",
      consentTimeout: 60,
      onTimeout: "reject",
      wires: [["dia", "decisions"], ["notices"]],
    },
    { id: "decisions", type: "helper", z: "t" },
    { id: "notices", type: "helper", z: "t" },
    { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
    { id: "caught", type: "helper", z: "t" },
  ];
}

export const loopCredentials = { k: { identity: "home-1", key: PSK_HEX } };
