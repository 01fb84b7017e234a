// A minimal DTLS 1.2 PSK / ECDHE_PSK client that drives the server step by step. It exists for tests and the
// handshake benchmark (a light client for many sessions, and raw access to every datagram); the
// production client is src/transport/dtls/client.ts.
import * as dgram from "node:dgram";
import { randomBytes, timingSafeEqual } from "node:crypto";
import {
  AlertDescription,
  AlertLevel,
  CIPHER_SUITES,
  ContentType,
  DTLS_1_2,
  HandshakeType,
  type DtlsCipherSuiteName,
} from "../../src/transport/dtls/constants";
import { AeadState } from "../../src/transport/dtls/cipher";
import { generateEphemeralKey } from "../../src/transport/dtls/ecdhe";
import { encodeHandshake, parseHandshakeFragments } from "../../src/transport/dtls/handshake";
import {
  aeadKeyBlock,
  ecdhePskPremasterSecret,
  finishedVerifyData,
  masterSecret,
  pskPremasterSecret,
  sha256,
} from "../../src/transport/dtls/prf";
import { encodeRecord, parseDatagram } from "../../src/transport/dtls/record";

export interface ScriptedClientOptions {
  address: string;
  port: number;
  identity: string;
  psk: Buffer;
  suites?: DtlsCipherSuiteName[];
  extendedMasterSecret?: boolean;
  renegotiationInfo?: boolean;
  /** Resend the current flight after this long without an answer (default 500 ms). */
  retransmitMs?: number;
  /** Reuse a bound socket (a client "restarting" on the same address and port). */
  socket?: dgram.Socket;
  /** supported_groups sent when an ECDHE suite is offered (default x25519, secp256r1); null = no extension. */
  supportedGroups?: number[] | null;
  /** ec_point_formats sent when an ECDHE suite is offered (default [0] uncompressed); null = no extension. */
  ecPointFormats?: number[] | null;
  /** Replaces our ECDH public value in ClientKeyExchange (to test point validation). */
  replaceEcdhPoint?(own: Buffer): Buffer;
}

export class DtlsAlertError extends Error {
  constructor(
    readonly level: number,
    readonly description: number,
  ) {
    super(`DTLS alert ${level}/${description}`);
    this.name = "DtlsAlertError";
  }
}

type Waiter = (datagram: Buffer) => void;

export class ScriptedDtlsClient {
  readonly socket: dgram.Socket;
  /** Every datagram this client sent, in order (CH1, CH2, flight 5, ...), for replay and fuzzing. */
  readonly sent: Buffer[] = [];
  readonly received: Buffer[] = [];
  /** Decrypted application data not yet taken by nextMessage(). */
  private readonly inbox: Buffer[] = [];
  readonly alerts: Array<{ level: number; description: number }> = [];
  private waiter: Waiter | undefined;
  private writeSeq0 = 0;
  private writeSeq1 = 0;
  private write: AeadState | undefined;
  private read: AeadState | undefined;
  private messageSeq = 0;
  suite: DtlsCipherSuiteName | undefined;
  extendedMasterSecretNegotiated = false;
  /** ECDHE_PSK: the server's group, identity hint and ECDH public value from ServerKeyExchange. */
  serverKeyExchange: { group: number; hint: Buffer; point: Buffer } | undefined;
  /** The ServerHello's extensions as type -> data. */
  serverHelloExtensions = new Map<number, Buffer>();
  /** The server's verify_data from the handshake (after connect()). */
  serverVerifyData: Buffer | undefined;
  private closed = false;

  constructor(private readonly opts: ScriptedClientOptions) {
    this.socket = opts.socket ?? dgram.createSocket(opts.address.includes(":") ? "udp6" : "udp4");
    this.socket.on("message", (msg) => this.onDatagram(msg));
    this.socket.on("error", () => undefined);
  }

  async bind(): Promise<number> {
    await new Promise<void>((resolve) => this.socket.bind(0, this.opts.address.includes(":") ? "::1" : "127.0.0.1", () => resolve()));
    return this.socket.address().port;
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  sendRaw(datagram: Buffer): void {
    if (this.closed) return;
    this.sent.push(datagram);
    this.socket.send(datagram, this.opts.port, this.opts.address);
  }

  private onDatagram(msg: Buffer): void {
    this.received.push(msg);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(msg);
      return;
    }
    this.absorbApplication(msg);
  }

  /** Outside the handshake: decrypt application data and alerts into inbox / alerts. */
  private absorbApplication(msg: Buffer): void {
    for (const r of parseDatagram(msg, 18000).records) {
      if (r.epoch === 1 && this.read) {
        const p = this.read.decrypt(r.type, r.version, r.epoch, r.sequence, r.fragment);
        if (!p) continue;
        if (r.type === ContentType.ApplicationData) this.inbox.push(p);
        if (r.type === ContentType.Alert && p.length === 2) this.alerts.push({ level: p[0], description: p[1] });
      } else if (r.type === ContentType.Alert && r.fragment.length === 2) {
        this.alerts.push({ level: r.fragment[0], description: r.fragment[1] });
      }
    }
    const w = this.inboxWaiter;
    if (w && (this.inbox.length > 0 || this.alerts.length > 0)) {
      this.inboxWaiter = undefined;
      w();
    }
  }

  private inboxWaiter: (() => void) | undefined;

  /** Sends `flight` and resolves with the next datagram, resending on silence. */
  private exchange(flight: Buffer, deadline: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const tick = (): void => {
        if (Date.now() >= deadline) {
          this.waiter = undefined;
          reject(new Error("DTLS handshake timed out"));
          return;
        }
        this.sendRaw(flight);
        timer = setTimeout(tick, this.opts.retransmitMs ?? 500);
      };
      this.waiter = (d) => {
        if (timer) clearTimeout(timer);
        resolve(d);
      };
      tick();
    });
  }

  /** Waits for more datagrams without sending (for the rest of a flight). */
  private next(deadline: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.waiter = undefined;
          reject(new Error("DTLS handshake timed out"));
        },
        Math.max(1, deadline - Date.now()),
      );
      this.waiter = (d) => {
        clearTimeout(timer);
        resolve(d);
      };
    });
  }

  private clientHello(random: Buffer, cookie: Buffer): Buffer {
    const suites = (this.opts.suites ?? ["TLS_PSK_WITH_AES_128_CCM_8"]).map((n) => CIPHER_SUITES[n].id);
    const suiteBytes = Buffer.alloc(suites.length * 2);
    suites.forEach((s, i) => suiteBytes.writeUInt16BE(s, i * 2));
    const ext: Buffer[] = [];
    if (this.opts.extendedMasterSecret) ext.push(Buffer.from([0x00, 0x17, 0, 0]));
    if (this.opts.renegotiationInfo) ext.push(Buffer.from([0xff, 0x01, 0, 1, 0]));
    const offersEcdhe = (this.opts.suites ?? []).some((n) => CIPHER_SUITES[n].keyExchange === "ecdhe_psk");
    const groups = this.opts.supportedGroups === undefined ? [29, 23] : this.opts.supportedGroups;
    if (offersEcdhe && groups) {
      const list = Buffer.alloc(2 * groups.length);
      groups.forEach((g, i) => list.writeUInt16BE(g, 2 * i));
      ext.push(Buffer.concat([u16(0x000a), u16(list.length + 2), u16(list.length), list]));
    }
    const formats = this.opts.ecPointFormats === undefined ? [0] : this.opts.ecPointFormats;
    if (offersEcdhe && formats) ext.push(Buffer.concat([u16(0x000b), u16(formats.length + 1), Buffer.from([formats.length, ...formats])]));
    const extBytes = Buffer.concat(ext);
    const parts = [
      Buffer.from([0xfe, 0xfd]),
      random,
      Buffer.from([0, cookie.length]),
      cookie,
      u16(suiteBytes.length),
      suiteBytes,
      Buffer.from([1, 0]),
    ];
    if (ext.length > 0) parts.push(u16(extBytes.length), extBytes);
    return encodeHandshake(HandshakeType.ClientHello, this.messageSeq++, Buffer.concat(parts));
  }

  private plain(type: number, body: Buffer): Buffer {
    return encodeRecord(type, DTLS_1_2, 0, this.writeSeq0++, body);
  }

  protect(type: number, body: Buffer): Buffer {
    const seq = this.writeSeq1++;
    return encodeRecord(type, DTLS_1_2, 1, seq, this.write!.encrypt(type, DTLS_1_2, 1, seq, body));
  }

  /** Full handshake; rejects with DtlsAlertError when the server sends an alert. */
  async connect(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const random = randomBytes(32);
    const ch1 = this.clientHello(random, Buffer.alloc(0));
    const hvr = await this.exchange(this.plain(ContentType.Handshake, ch1), deadline);
    const hvrMsg = this.handshakeMessages(hvr).find((m) => m.msgType === HandshakeType.HelloVerifyRequest);
    if (!hvrMsg) throw new Error("expected HelloVerifyRequest");
    const cookie = hvrMsg.body.subarray(3, 3 + hvrMsg.body[2]);
    this.messageSeq = 1;
    const ch2 = this.clientHello(random, cookie);
    const transcript: Buffer[] = [ch2];
    let flight4 = this.handshakeMessages(await this.exchange(this.plain(ContentType.Handshake, ch2), deadline));
    const got: Array<{ msgType: number; messageSeq: number; body: Buffer }> = [];
    for (;;) {
      for (const m of flight4) if (!got.some((g) => g.messageSeq === m.messageSeq)) got.push(m);
      if (got.some((m) => m.msgType === HandshakeType.ServerHelloDone)) break;
      flight4 = this.handshakeMessages(await this.next(deadline));
    }
    got.sort((a, b) => a.messageSeq - b.messageSeq);
    const serverHello = got.find((m) => m.msgType === HandshakeType.ServerHello);
    if (!serverHello) throw new Error("no ServerHello");
    for (const m of got) transcript.push(encodeHandshake(m.msgType, m.messageSeq, m.body));
    const serverRandom = serverHello.body.subarray(2, 34);
    const suiteId = serverHello.body.readUInt16BE(35 + serverHello.body[34]);
    const suite = Object.values(CIPHER_SUITES).find((s) => s.id === suiteId);
    if (!suite) throw new Error(`server chose unknown suite ${suiteId}`);
    this.suite = suite.name;
    this.serverHelloExtensions = parseExtensions(serverHello.body.subarray(38 + serverHello.body[34]));
    this.extendedMasterSecretNegotiated = this.serverHelloExtensions.has(0x0017);
    let ecdhSecret: Buffer | undefined;
    let ownPoint: Buffer | undefined;
    if (suite.keyExchange === "ecdhe_psk") {
      const ske = got.find((m) => m.msgType === HandshakeType.ServerKeyExchange);
      if (!ske) throw new Error("no ServerKeyExchange for ECDHE_PSK");
      const hintLength = ske.body.readUInt16BE(0);
      const at = 2 + hintLength;
      if (ske.body[at] !== 3) throw new Error("ServerKeyExchange: not a named curve");
      const group = ske.body.readUInt16BE(at + 1);
      const point = ske.body.subarray(at + 4, at + 4 + ske.body[at + 3]);
      this.serverKeyExchange = { group, hint: Buffer.from(ske.body.subarray(2, at)), point: Buffer.from(point) };
      const own = generateEphemeralKey(group);
      ecdhSecret = own.derive(point);
      if (!ecdhSecret) throw new Error("server sent an invalid ECDH point");
      ownPoint = this.opts.replaceEcdhPoint ? this.opts.replaceEcdhPoint(own.publicKey) : own.publicKey;
    }

    this.messageSeq = Math.max(this.messageSeq, 2);
    const identity = Buffer.from(this.opts.identity, "utf8");
    const ckeParts = [u16(identity.length), identity];
    if (ownPoint) ckeParts.push(Buffer.from([ownPoint.length]), ownPoint);
    const cke = encodeHandshake(HandshakeType.ClientKeyExchange, this.messageSeq++, Buffer.concat(ckeParts));
    transcript.push(cke);
    const premaster = ecdhSecret ? ecdhePskPremasterSecret(ecdhSecret, this.opts.psk) : pskPremasterSecret(this.opts.psk);
    const master = masterSecret(premaster, random, serverRandom, this.extendedMasterSecretNegotiated ? sha256(transcript) : undefined);
    const keys = aeadKeyBlock(master, random, serverRandom, suite.keyLength, suite.fixedIvLength);
    this.write = new AeadState(suite, keys.clientKey, keys.clientSalt);
    this.read = new AeadState(suite, keys.serverKey, keys.serverSalt);
    const finished = encodeHandshake(
      HandshakeType.Finished,
      this.messageSeq++,
      finishedVerifyData(master, "client finished", sha256(transcript)),
    );
    transcript.push(finished);
    const flight5 = Buffer.concat([
      this.plain(ContentType.Handshake, cke),
      this.plain(ContentType.ChangeCipherSpec, Buffer.from([1])),
      this.protect(ContentType.Handshake, finished),
    ]);
    let reply = await this.exchange(flight5, deadline);
    for (;;) {
      this.handshakeMessages(reply); // throws on an alert
      for (const r of parseDatagram(reply, 18000).records) {
        if (r.epoch !== 1 || r.type !== ContentType.Handshake) continue;
        const p = this.read.decrypt(r.type, r.version, r.epoch, r.sequence, r.fragment);
        if (!p) continue;
        const [f] = parseHandshakeFragments(p);
        const expected = finishedVerifyData(master, "server finished", sha256(transcript));
        if (f.msgType !== HandshakeType.Finished || f.body.length !== 12 || !timingSafeEqual(f.body, expected))
          throw new Error("bad server Finished");
        this.serverVerifyData = Buffer.from(f.body);
        return;
      }
      // Not the final flight (e.g. a late copy of flight 4): keep repeating flight 5 until it comes.
      reply = await this.exchange(flight5, deadline);
    }
  }

  /** Records of a datagram as this client reads them: epoch-1 records decrypted (undefined when they do not authenticate). */
  openRecords(datagram: Buffer): Array<{ type: number; epoch: number; sequence: number; plaintext: Buffer | undefined }> {
    return parseDatagram(datagram, 18000).records.map((r) => ({
      type: r.type,
      epoch: r.epoch,
      sequence: r.sequence,
      plaintext: r.epoch === 1 ? this.read?.decrypt(r.type, r.version, r.epoch, r.sequence, r.fragment) : r.fragment,
    }));
  }

  /** Plaintext handshake messages of a datagram; throws DtlsAlertError on an alert. */
  private handshakeMessages(datagram: Buffer): Array<{ msgType: number; messageSeq: number; body: Buffer }> {
    const out: Array<{ msgType: number; messageSeq: number; body: Buffer }> = [];
    for (const r of parseDatagram(datagram, 18000).records) {
      if (r.type === ContentType.Alert) {
        const p = r.epoch === 1 && this.read ? this.read.decrypt(r.type, r.version, r.epoch, r.sequence, r.fragment) : r.fragment;
        if (p && p.length === 2) {
          this.alerts.push({ level: p[0], description: p[1] });
          throw new DtlsAlertError(p[0], p[1]);
        }
      }
      if (r.type !== ContentType.Handshake || r.epoch !== 0) continue;
      for (const f of parseHandshakeFragments(r.fragment)) out.push({ msgType: f.msgType, messageSeq: f.messageSeq, body: f.body });
    }
    return out;
  }

  send(data: Buffer): void {
    this.sendRaw(this.protect(ContentType.ApplicationData, data));
  }

  /** Next application-data record or alert from the server. */
  async nextMessage(timeoutMs = 2000): Promise<Buffer> {
    if (this.inbox.length > 0) return this.inbox.shift()!;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.inboxWaiter = undefined;
        reject(new Error("no message"));
      }, timeoutMs);
      this.inboxWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    if (this.inbox.length > 0) return this.inbox.shift()!;
    const a = this.alerts[this.alerts.length - 1];
    throw new DtlsAlertError(a.level, a.description);
  }

  /** Waits until an alert arrives (or returns one already received). */
  async nextAlert(timeoutMs = 2000): Promise<{ level: number; description: number }> {
    const deadline = Date.now() + timeoutMs;
    while (this.alerts.length === 0) {
      if (Date.now() >= deadline) throw new Error("no alert");
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.alerts.shift()!;
  }

  /** Sends close_notify (when connected) and frees the socket. */
  async close(sendCloseNotify = true): Promise<void> {
    if (this.closed) return;
    if (sendCloseNotify && this.write) {
      const record = this.protect(ContentType.Alert, Buffer.from([AlertLevel.Warning, AlertDescription.CloseNotify]));
      this.sent.push(record);
      await new Promise<void>((resolve) => this.socket.send(record, this.opts.port, this.opts.address, () => resolve()));
    }
    this.closed = true;
    await new Promise<void>((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // already closed by a client sharing the socket
      }
    });
  }
}

function parseExtensions(bytes: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  if (bytes.length < 2) return out;
  let o = 2;
  while (o + 4 <= bytes.length) {
    const len = bytes.readUInt16BE(o + 2);
    out.set(bytes.readUInt16BE(o), bytes.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return out;
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n, 0);
  return b;
}
