// The call-home loop in a real Node-RED for the live-view tests: ISP endpoint + listener, home
// endpoint + dialer, NAT lookup (static, two devices) and filter-action in dry-run with manual
// consent. Two inject nodes send a mitigation each ("go1" for 203.0.113.5, "go2" for .6); what the
// listener answers is recorded in global context and read back at GET api/dots-test/state.
import { PSK_HEX } from "../nodes/flows";

export interface LiveRec {
  topic?: string;
  mid?: number;
  code?: string;
  status?: string;
  statusCode?: number;
  conflictCauseCode?: number;
}

const natTable = [
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
  {
    protocol: "tcp",
    device: "192.168.1.21",
    devicePort: 51001,
    public: "198.51.100.7",
    publicPort: 40002,
    target: "203.0.113.6",
    targetPort: 443,
    mac: "02:00:00:00:00:21",
  },
];

const record = `const a = global.get("resp") || []; a.push({ topic: msg.topic, mid: msg.dots && msg.dots.mid, code: msg.dots && msg.dots.code, status: msg.dots && msg.dots.status, statusCode: msg.dots && msg.dots.statusCode, conflictCauseCode: msg.dots && msg.dots.conflictCauseCode }); global.set("resp", a.slice(-200)); return null;`;

/** `home` is the PSK identity and home name (the browser test uses one full of markup). */
/** `deadPort`: a second home endpoint dials a port where no ISP listens (its errors fill the list). */
export function liveFlow(port: number, o: { home?: string; ispName?: string; deadPort?: number } = {}): unknown[] {
  const home = o.home ?? "home-1";
  const req = (id: string, target: string, sourcePort: string, y: number): Record<string, unknown> => ({
    id,
    type: "dots-mitigation-request",
    z: "t",
    name: id,
    home,
    homeType: "str",
    targetPrefix: target,
    targetPrefixType: "str",
    sourcePrefix: "198.51.100.7",
    sourcePrefixType: "str",
    sourcePort,
    sourcePortType: "str",
    targetPort: "443",
    targetPortType: "str",
    protocol: "tcp",
    protocolType: "str",
    lifetime: "600",
    lifetimeType: "str",
    version: 1,
    x: 300,
    y,
    wires: [["lis"]],
  });
  return [
    { id: "t", type: "tab", label: "live view" },
    { id: "k", type: "dots-psk", name: "home key", home, keyFormat: "hex", version: 1, credentials: { identity: home, key: PSK_HEX } },
    {
      id: "ispEp",
      type: "dots-isp-endpoint",
      name: o.ispName ?? "ISP",
      port,
      host: "127.0.0.1",
      dtls: true,
      tls: false,
      psk: "k",
      extraPsks: [],
      tlsConfig: "",
      homePrefixes: `${home}: 198.51.100.0/24`,
      allowUnscoped: false,
      dropMaxFailures: 5,
      dropWindow: 60,
      dropBan: 300,
      version: 1,
    },
    {
      id: "homeEp",
      type: "dots-home-endpoint",
      name: "home router",
      hosts: "127.0.0.1",
      port,
      transport: "udp",
      psk: "k",
      tlsConfig: "",
      homePrefixes: "198.51.100.0/24",
      heartbeatInterval: 15,
      decisionWait: 1000,
      allowIndefinite: false,
      terminatingPeriod: 0,
      version: 1,
    },
    ...(o.deadPort
      ? [
          {
            id: "homeEp2",
            type: "dots-home-endpoint",
            name: "second home (no ISP there)",
            hosts: "127.0.0.1",
            port: o.deadPort,
            transport: "udp",
            psk: "k",
            tlsConfig: "",
            homePrefixes: "198.51.100.0/24",
            heartbeatInterval: 15,
            decisionWait: 1000,
            allowIndefinite: false,
            terminatingPeriod: 0,
            version: 1,
          },
        ]
      : []),
    {
      id: "go1",
      type: "inject",
      z: "t",
      name: "go1",
      props: [{ p: "payload" }],
      payload: "",
      payloadType: "date",
      repeat: "",
      once: false,
      x: 100,
      y: 60,
      wires: [["req1"]],
    },
    {
      id: "go2",
      type: "inject",
      z: "t",
      name: "go2",
      props: [{ p: "payload" }],
      payload: "",
      payloadType: "date",
      repeat: "",
      once: false,
      x: 100,
      y: 120,
      wires: [["req2"]],
    },
    req("req1", "203.0.113.5", "40001", 60),
    req("req2", "203.0.113.6", "40002", 120),
    {
      id: "lis",
      type: "dots-call-home-listener",
      z: "t",
      name: "listener",
      endpoint: "ispEp",
      version: 2,
      x: 520,
      y: 90,
      wires: [[], ["rec"]],
    },
    { id: "rec", type: "function", z: "t", name: "record", func: record, outputs: 1, x: 720, y: 90, wires: [[]] },
    {
      id: "dia",
      type: "dots-call-home-dialer",
      z: "t",
      name: "dialer",
      endpoint: "homeEp",
      version: 2,
      x: 120,
      y: 240,
      wires: [["nat"], ["fil"], []],
    },
    {
      id: "nat",
      type: "dots-nat-lookup",
      z: "t",
      source: "static",
      table: JSON.stringify(natTable),
      netns: "",
      version: 1,
      x: 320,
      y: 240,
      wires: [["fil"]],
    },
    {
      id: "fil",
      type: "dots-filter-action",
      z: "t",
      name: "blocker",
      backend: "dry-run",
      action: "block",
      consent: "manual",
      consentTimeout: 600,
      onTimeout: "reject",
      table: "dots_call_home",
      netns: "",
      version: 1,
      x: 540,
      y: 240,
      wires: [["dia"], []],
    },
    { id: "stIn", type: "http in", z: "t", url: "/dots-test/state", method: "get", x: 120, y: 340, wires: [["stFn"]] },
    {
      id: "stFn",
      type: "function",
      z: "t",
      func: 'msg.payload = global.get("resp") || []; return msg;',
      outputs: 1,
      x: 320,
      y: 340,
      wires: [["stOut"]],
    },
    { id: "stOut", type: "http response", z: "t", statusCode: "", x: 520, y: 340, wires: [] },
  ];
}
