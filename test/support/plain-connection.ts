// Test-only Connection adapters over plain UDP and plain TCP on loopback: NoSec coap:// and
// coap+tcp://, real CoAP transports without (D)TLS, so the CoAP layer can be tested on its own and
// against libcoap's -notls tools. Also a lossy UDP relay that drops chosen datagrams for real.
import { EventEmitter } from "node:events";
import * as dgram from "node:dgram";
import * as net from "node:net";
import type { Connection, LocalIdentity, PeerIdentity, TransportKind } from "../../src/transport/connection";
import { frameLength } from "../../src/coap/tcp-codec";

const NOSEC_PEER: PeerIdentity = { method: "psk", pskIdentity: "nosec-test" };
const NOSEC_LOCAL: LocalIdentity = { method: "psk", pskIdentity: "nosec-test" };

abstract class PlainConnection extends EventEmitter implements Connection {
  abstract readonly transport: TransportKind;
  readonly peer = NOSEC_PEER;
  readonly local = NOSEC_LOCAL;
  readonly cipher = "none (NoSec, test only)";
  closed = false;
  /** Every datagram/frame sent, for tests that replay or inspect bytes. */
  readonly sent: Buffer[] = [];
  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly localAddress: string,
    readonly localPort: number,
  ) {
    super();
  }
  private held: Buffer[] = [];
  abstract send(data: Buffer): boolean;
  abstract close(): void;
  /** Messages that arrive before anyone listens are held (bounded), like a socket's receive buffer. */
  protected emitMessage(data: Buffer): void {
    if (this.closed) return;
    if (this.listenerCount("message") > 0) {
      this.emit("message", data);
      return;
    }
    if (this.held.length === 0) {
      const flush = (event: string | symbol) => {
        if (event !== "message") return;
        this.off("newListener", flush);
        setImmediate(() => {
          for (const m of this.held.splice(0)) if (!this.closed) this.emit("message", m);
        });
      };
      this.on("newListener", flush);
    }
    if (this.held.length < 100) this.held.push(data);
  }
  protected finish(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.emit("close", err);
  }
}

// UDP ----------------------------------------------------------------------------------------

export class PlainUdpConnection extends PlainConnection {
  readonly transport = "dtls" as const;
  constructor(
    private readonly socket: dgram.Socket,
    remoteAddress: string,
    remotePort: number,
    private readonly onClose: () => void,
  ) {
    const a = socket.address();
    super(remoteAddress, remotePort, a.address, a.port);
  }
  send(data: Buffer): boolean {
    if (this.closed) return false;
    this.sent.push(data);
    if (this.sent.length > 1000) this.sent.shift();
    this.socket.send(data, this.remotePort, this.remoteAddress);
    return true;
  }
  /** Delivers one datagram from the peer. */
  deliver(data: Buffer): void {
    this.emitMessage(data);
  }
  close(): void {
    if (this.closed) return;
    this.onClose();
    this.finish();
  }
}

export interface PlainUdpServer extends EventEmitter {
  readonly port: number;
  readonly connections: Map<string, PlainUdpConnection>;
  on(event: "connection", cb: (c: PlainUdpConnection) => void): this;
  close(): Promise<void>;
}

/** One socket; a connection per remote address:port, created by its first datagram. */
export function listenPlainUdp(port = 0, host = "127.0.0.1"): Promise<PlainUdpServer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
    const server = new EventEmitter() as PlainUdpServer;
    const connections = new Map<string, PlainUdpConnection>();
    Object.assign(server, {
      connections,
      close: () =>
        new Promise<void>((done) => {
          for (const c of [...connections.values()]) c.close();
          socket.close(() => done());
        }),
    });
    socket.on("message", (data, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let conn = connections.get(key);
      if (!conn) {
        conn = new PlainUdpConnection(socket, rinfo.address, rinfo.port, () => connections.delete(key));
        connections.set(key, conn);
        server.emit("connection", conn);
      }
      conn.deliver(data);
    });
    socket.once("error", reject);
    socket.bind(port, host, () => {
      Object.defineProperty(server, "port", { value: socket.address().port });
      resolve(server);
    });
  });
}

/** A client socket of its own, talking to host:port. */
export function connectPlainUdp(port: number, host = "127.0.0.1"): Promise<PlainUdpConnection> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", reject);
    socket.bind(0, host.includes(":") ? "::1" : "127.0.0.1", () => {
      const conn = new PlainUdpConnection(socket, host, port, () => socket.close());
      socket.on("message", (data, rinfo) => {
        if (rinfo.port === port) conn.deliver(data);
      });
      resolve(conn);
    });
  });
}

// TCP ----------------------------------------------------------------------------------------

export class PlainTcpConnection extends PlainConnection {
  readonly transport = "tls" as const;
  private buffered: Buffer = Buffer.alloc(0);
  constructor(
    private readonly socket: net.Socket,
    maxFrame = 1024 * 1024,
  ) {
    super(socket.remoteAddress ?? "", socket.remotePort ?? 0, socket.localAddress ?? "", socket.localPort ?? 0);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
      try {
        for (;;) {
          const len = frameLength(this.buffered, maxFrame);
          if (len === undefined || this.buffered.length < len) break;
          const frame = this.buffered.subarray(0, len);
          this.buffered = this.buffered.subarray(len);
          this.emitMessage(Buffer.from(frame));
        }
      } catch (e) {
        // The stream can no longer be cut into frames: nothing after this point is trustworthy.
        socket.destroy();
        this.finish(e as Error);
      }
    });
    socket.on("error", (e) => this.finish(e));
    socket.on("close", () => this.finish());
  }
  send(data: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return false;
    this.sent.push(data);
    if (this.sent.length > 1000) this.sent.shift();
    this.socket.write(data);
    return true;
  }
  /** Raw bytes, bypassing framing: for malformed-input tests. */
  sendRaw(data: Buffer): void {
    this.socket.write(data);
  }
  close(): void {
    if (this.closed) return;
    this.socket.end();
    this.finish();
  }
}

export interface PlainTcpServer extends EventEmitter {
  readonly port: number;
  on(event: "connection", cb: (c: PlainTcpConnection) => void): this;
  close(): Promise<void>;
}

export function listenPlainTcp(port = 0, host = "127.0.0.1"): Promise<PlainTcpServer> {
  return new Promise((resolve, reject) => {
    const sockets = new Set<net.Socket>();
    const srv = net.createServer((socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      server.emit("connection", new PlainTcpConnection(socket));
    });
    const server = new EventEmitter() as PlainTcpServer;
    Object.assign(server, {
      close: () =>
        new Promise<void>((done) => {
          for (const s of sockets) s.destroy();
          srv.close(() => done());
        }),
    });
    srv.once("error", reject);
    srv.listen(port, host, () => {
      Object.defineProperty(server, "port", { value: (srv.address() as net.AddressInfo).port });
      resolve(server);
    });
  });
}

export function connectPlainTcp(port: number, host = "127.0.0.1"): Promise<PlainTcpConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(new PlainTcpConnection(socket));
    });
  });
}

// Lossy relay --------------------------------------------------------------------------------

export interface UdpRelay {
  readonly port: number;
  /** Datagrams forwarded / dropped so far, per direction. */
  readonly stats: { up: number; down: number; droppedUp: number; droppedDown: number };
  close(): Promise<void>;
}

/**
 * Forwards datagrams between one client and 127.0.0.1:targetPort, dropping those for which
 * `drop(direction, data, index)` returns true (index counts datagrams per direction from 0).
 */
export function startLossyUdpRelay(
  targetPort: number,
  drop: (direction: "up" | "down", data: Buffer, index: number) => boolean,
): Promise<UdpRelay> {
  return new Promise((resolve, reject) => {
    const front = dgram.createSocket("udp4");
    const back = dgram.createSocket("udp4");
    const stats = { up: 0, down: 0, droppedUp: 0, droppedDown: 0 };
    let client: dgram.RemoteInfo | undefined;
    let upIndex = 0;
    let downIndex = 0;
    front.on("message", (data, rinfo) => {
      client = rinfo;
      if (drop("up", data, upIndex++)) stats.droppedUp++;
      else {
        stats.up++;
        back.send(data, targetPort, "127.0.0.1");
      }
    });
    back.on("message", (data) => {
      if (!client) return;
      if (drop("down", data, downIndex++)) stats.droppedDown++;
      else {
        stats.down++;
        front.send(data, client.port, client.address);
      }
    });
    front.once("error", reject);
    back.bind(0, "127.0.0.1", () =>
      front.bind(0, "127.0.0.1", () =>
        resolve({
          port: front.address().port,
          stats,
          close: () => new Promise<void>((done) => front.close(() => back.close(() => done()))),
        }),
      ),
    );
  });
}
