// Encode+decode rate of a DOTS mitigation PUT over both CoAP framings, next to references measured
// in the same run: copying the same bytes (the floor), JSON stringify/parse of the message model,
// and raw cbor-x on the CBOR body alone (to show what the CoAP framing adds to a whole DOTS message).
// Rounds alternate between the cases so machine noise hits all of them alike; each figure is the
// median over rounds and each ratio the median of per-round ratios.
// Run: node --expose-gc .build/<out>/bench/codec-coap.js
import { Encoder } from "cbor-x";
import { decodeDotsCbor, encodeDotsCbor } from "../src/cbor";
import { Code, CONTENT_FORMAT_DOTS_CBOR, type CoapMessage } from "../src/coap/message";
import { contentFormatOption, splitPath, uriPathOptions } from "../src/coap/options";
import { decodeUdp, encodeUdp } from "../src/coap/udp-codec";
import { decodeTcp, encodeTcp } from "../src/coap/tcp-codec";
import { callHomeRequest, callHomeRequestMap } from "./lib/call-home-request";
import { fmtRate, median, rate } from "./lib/measure";

const raw = new Encoder({ useRecords: false, mapsAsObjects: false });
const options = [
  ...uriPathOptions(splitPath("/.well-known/dots/mitigate/cuid=dz6pHjaADkaFTbjr0JGBpw/mid=123")),
  contentFormatOption(CONTENT_FORMAT_DOTS_CBOR),
];
const msg: CoapMessage = {
  type: "NON",
  code: Code.PUT,
  messageId: 0x1234,
  token: Buffer.from("0102030405060708", "hex"),
  options,
  payload: encodeDotsCbor(callHomeRequest),
};
if (!Buffer.from(raw.encode(callHomeRequestMap)).equals(msg.payload)) {
  console.error("cbor-x and the schema layer disagree on the body bytes; the comparison would mean nothing");
  process.exit(1);
}
const udpBytes = encodeUdp(msg);
const tcpBytes = encodeTcp(msg);
const asJson = {
  ...msg,
  token: msg.token.toString("hex"),
  options: msg.options.map((o) => [o.number, o.value.toString("hex")]),
  payload: msg.payload.toString("base64"),
};

let sink = 0;
const cases: Record<string, () => void> = {
  udp: () => {
    sink += decodeUdp(encodeUdp(msg)).payload.length;
  },
  tcp: () => {
    sink += decodeTcp(encodeTcp(msg)).payload.length;
  },
  copy: () => {
    const b = Buffer.concat([udpBytes.subarray(0, 20), udpBytes.subarray(20)]);
    sink += Buffer.from(b).length;
  },
  json: () => {
    sink += (JSON.parse(JSON.stringify(asJson)) as { code: number }).code;
  },
  // The whole DOTS message: JSON view -> CBOR -> CoAP/UDP bytes -> CoAP -> JSON view.
  full: () => {
    const out = encodeUdp({ ...msg, payload: encodeDotsCbor(callHomeRequest) });
    sink += Object.keys(decodeDotsCbor(decodeUdp(out).payload)).length;
  },
  cborx: () => {
    sink += (raw.decode(raw.encode(callHomeRequestMap)) as Map<number, unknown>).size;
  },
};

for (const fn of Object.values(cases)) for (let i = 0; i < 30000; i++) fn(); // warm up the JIT
const rounds = 15;
const rates: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) {
  const names = Object.keys(cases);
  if (r % 2 === 1) names.reverse();
  for (const k of names) rates[k].push(rate(cases[k], 100, 500));
}
const ratio = (a: string, b: string): number => median(rates[a].map((x, i) => x / rates[b][i]));
const line = (label: string, k: string) => console.log(`${label.padEnd(52)} ${fmtRate(median(rates[k]))} /s`);

console.log(
  `message: DOTS PUT /mitigate (RFC 9066 request, ${msg.payload.length}-byte CBOR body); UDP ${udpBytes.length} bytes, TCP ${tcpBytes.length} bytes; median of ${rounds} alternating rounds`,
);
line("CoAP/UDP encode+decode", "udp");
line("CoAP/TCP encode+decode", "tcp");
line("reference: Buffer.concat + copy of the same bytes", "copy");
line("reference: JSON stringify+parse of the model", "json");
console.log(`ratio copy/UDP codec: ${ratio("copy", "udp").toFixed(1)}x; UDP codec vs JSON: ${ratio("udp", "json").toFixed(2)}x faster`);
console.log(`ratio copy/TCP codec: ${ratio("copy", "tcp").toFixed(1)}x; TCP codec vs JSON: ${ratio("tcp", "json").toFixed(2)}x faster`);
line("whole DOTS PUT: schema CBOR + CoAP/UDP, both ways", "full");
line("reference: raw cbor-x encode+decode of the body", "cborx");
console.log(`cost ratio whole message / raw cbor-x body: ${ratio("cborx", "full").toFixed(2)}x`);
if (sink === -1) console.log("unreachable");

// Endpoint round trips on loopback: CON request -> piggybacked response through two CoapEndpoints
// over plain UDP, next to a bare dgram echo of the same bytes (the socket floor) in the same run.
async function endpointRoundTrips(): Promise<void> {
  const dgram = await import("node:dgram");
  const { CoapEndpoint } = await import("../src/coap/endpoint");
  const { listenPlainUdp, connectPlainUdp } = await import("../test/support/plain-connection");
  const n = 5000;
  const echo = dgram.createSocket("udp4");
  echo.on("message", (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, "127.0.0.1", () => r()));
  const cli = dgram.createSocket("udp4");
  await new Promise<void>((r) => cli.bind(0, "127.0.0.1", () => r()));
  const echoPort = echo.address().port;
  let t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await new Promise<void>((r) => {
      cli.once("message", () => r());
      cli.send(udpBytes, echoPort, "127.0.0.1");
    });
  }
  const rawUs = Number(process.hrtime.bigint() - t) / 1000 / n;
  const server = await listenPlainUdp();
  server.on("connection", (c) => new CoapEndpoint(c).onRequest((req) => req.respond({ code: Code.Changed, payload: req.payload })));
  const client = new CoapEndpoint(await connectPlainUdp(server.port));
  const put = {
    method: "PUT" as const,
    path: splitPath("/.well-known/dots/mitigate/cuid=dz6pHjaADkaFTbjr0JGBpw/mid=123"),
    payload: msg.payload,
    contentFormat: CONTENT_FORMAT_DOTS_CBOR,
  };
  await client.request(put);
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await client.request(put);
  const epUs = Number(process.hrtime.bigint() - t) / 1000 / n;
  console.log(
    `sequential round trip, ${n} each: raw dgram echo ${rawUs.toFixed(1)} us, CoAP endpoint CON PUT -> 2.04 ${epUs.toFixed(1)} us (ratio ${(epUs / rawUs).toFixed(2)}x)`,
  );
  client.close();
  await server.close();
  cli.close();
  echo.close();
}
void endpointRoundTrips();
