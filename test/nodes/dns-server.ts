// A tiny authoritative DNS server on loopback (RFC 1035 wire format, UDP) that answers SRV, A and
// AAAA queries from a fixed zone, so RFC 8973 discovery runs node's real resolver end to end.
// Used by the node tests and the CLI tests; the unit tests of src/dots have their own.
import * as dgram from "node:dgram";
import * as net from "node:net";

export interface TestZone {
  srv?: Record<string, Array<{ priority: number; weight: number; port: number; target: string }>>;
  a?: Record<string, string[]>;
  aaaa?: Record<string, string[]>;
}

export interface TestDnsServer {
  /** "127.0.0.1:<port>", as a dnsServers entry. */
  server: string;
  /** "SRV _dots-call-home._udp.isp.test" per query received. */
  queries: string[];
  close(): Promise<void>;
}

const TYPE_NAMES: Record<number, string> = { 1: "A", 28: "AAAA", 33: "SRV" };

function encodeName(name: string): Buffer {
  const parts = name
    .split(".")
    .filter((l) => l.length > 0)
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "ascii")]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function ipv6Bytes(text: string): Buffer {
  // expand "::" into the missing zero groups, then write 8 groups of 16 bits
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function answer(query: Buffer, zone: TestZone, log: string[]): Buffer | undefined {
  if (query.length < 17) return undefined;
  let i = 12;
  const labels: string[] = [];
  while (i < query.length && query[i] !== 0) {
    const len = query[i];
    if (len > 63 || i + 1 + len > query.length) return undefined;
    labels.push(query.subarray(i + 1, i + 1 + len).toString("ascii"));
    i += len + 1;
  }
  if (i + 5 > query.length) return undefined;
  const qtype = query.readUInt16BE(i + 1);
  const name = labels.join(".").toLowerCase();
  log.push(`${TYPE_NAMES[qtype] ?? qtype} ${name}`);
  const records: Buffer[] = [];
  const add = (type: number, rdata: Buffer): void => {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    rr.writeUInt16BE(type, 2);
    rr.writeUInt16BE(1, 4); // class IN
    rr.writeUInt32BE(30, 6); // ttl
    rr.writeUInt16BE(rdata.length, 10);
    records.push(rr, rdata);
  };
  if (qtype === 33) {
    for (const r of zone.srv?.[name] ?? []) {
      const fixed = Buffer.alloc(6);
      fixed.writeUInt16BE(r.priority, 0);
      fixed.writeUInt16BE(r.weight, 2);
      fixed.writeUInt16BE(r.port, 4);
      add(33, Buffer.concat([fixed, encodeName(r.target)]));
    }
  }
  if (qtype === 1) for (const a of zone.a?.[name] ?? []) if (net.isIPv4(a)) add(1, Buffer.from(a.split(".").map(Number)));
  if (qtype === 28) for (const a of zone.aaaa?.[name] ?? []) if (net.isIPv6(a)) add(28, ipv6Bytes(a));
  const exists = zone.srv?.[name] !== undefined || zone.a?.[name] !== undefined || zone.aaaa?.[name] !== undefined;
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // id
  header.writeUInt16BE(0x8400 | (exists ? 0 : 3), 2); // QR, AA; NOERROR or NXDOMAIN
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length / 2, 6);
  return Buffer.concat([header, query.subarray(12, i + 5), ...records]);
}

export async function startTestDns(zone: TestZone): Promise<TestDnsServer> {
  const sock = dgram.createSocket("udp4");
  const queries: string[] = [];
  sock.on("message", (msg, from) => {
    const reply = answer(msg, zone, queries);
    if (reply) sock.send(reply, from.port, from.address);
  });
  sock.on("error", () => undefined);
  await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", () => resolve()));
  const { port } = sock.address();
  return {
    server: `127.0.0.1:${port}`,
    queries,
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  };
}
