// Encode+decode rate of a DOTS mitigation PUT over both CoAP framings, next to two references
// measured in the same run: copying the same bytes (the floor) and JSON stringify/parse of the model.
import { Code, CONTENT_FORMAT_DOTS_CBOR, type CoapMessage } from "../src/coap/message";
import { contentFormatOption, splitPath, uriPathOptions } from "../src/coap/options";
import { decodeUdp, encodeUdp } from "../src/coap/udp-codec";
import { decodeTcp, encodeTcp } from "../src/coap/tcp-codec";

const msg: CoapMessage = {
  type: "NON",
  code: Code.PUT,
  messageId: 0x1234,
  token: Buffer.from("0102030405060708", "hex"),
  options: [...uriPathOptions(splitPath("/.well-known/dots/mitigate/cuid=dz6pHjaADkaFTbjr0JGBpw/mid=123")), contentFormatOption(CONTENT_FORMAT_DOTS_CBOR)],
  payload: Buffer.alloc(110, 0xa1),
};

function rate(name: string, fn: () => void): number {
  for (let i = 0; i < 20000; i++) fn(); // warm up the JIT
  const ms = 1000;
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(ms) * 1_000_000n;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 1000; i++) fn();
    n += 1000;
    now = process.hrtime.bigint();
  }
  const perSec = n / (Number(now - start) / 1e9);
  console.log(`${name.padEnd(44)} ${Math.round(perSec).toLocaleString("en-US").padStart(12)} /s`);
  return perSec;
}

const udpBytes = encodeUdp(msg);
const tcpBytes = encodeTcp(msg);
let sink = 0;
console.log(`message: DOTS PUT, ${msg.payload.length}-byte payload; UDP ${udpBytes.length} bytes, TCP ${tcpBytes.length} bytes`);
const udp = rate("CoAP/UDP encode+decode", () => {
  sink += decodeUdp(encodeUdp(msg)).payload.length;
});
const tcp = rate("CoAP/TCP encode+decode", () => {
  sink += decodeTcp(encodeTcp(msg)).payload.length;
});
const copy = rate("reference: Buffer.concat + copy of same bytes", () => {
  const b = Buffer.concat([udpBytes.subarray(0, 20), udpBytes.subarray(20)]);
  sink += Buffer.from(b).length;
});
const asJson = { ...msg, token: msg.token.toString("hex"), options: msg.options.map((o) => [o.number, o.value.toString("hex")]), payload: msg.payload.toString("base64") };
const json = rate("reference: JSON stringify+parse of the model", () => {
  sink += (JSON.parse(JSON.stringify(asJson)) as { code: number }).code;
});
console.log(`ratio UDP codec / copy: ${(copy / udp).toFixed(1)}x slower; UDP codec vs JSON: ${(udp / json).toFixed(2)}x`);
console.log(`ratio TCP codec / copy: ${(copy / tcp).toFixed(1)}x slower; TCP codec vs JSON: ${(tcp / json).toFixed(2)}x`);
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
  const put = { method: "PUT" as const, path: splitPath("/.well-known/dots/mitigate/cuid=dz6pHjaADkaFTbjr0JGBpw/mid=123"), payload: msg.payload, contentFormat: CONTENT_FORMAT_DOTS_CBOR };
  await client.request(put);
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await client.request(put);
  const epUs = Number(process.hrtime.bigint() - t) / 1000 / n;
  console.log(`sequential round trip, ${n} each: raw dgram echo ${rawUs.toFixed(1)} us, CoAP endpoint CON PUT -> 2.04 ${epUs.toFixed(1)} us (ratio ${(epUs / rawUs).toFixed(2)}x)`);
  client.close();
  await server.close();
  cli.close();
  echo.close();
}
void endpointRoundTrips();
