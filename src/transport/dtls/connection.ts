// The Connection a DtlsServer hands out per established peer (src/transport/connection.ts contract).
// It holds an opaque handle to the server's session record, so the server needs no lookup table
// from connections to sessions; everything shared by all connections is shared, not copied.
import { EventEmitter } from "node:events";
import type { Connection, LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";

/** What the connection needs from the server that owns it; `session` is the handle it was given. */
export interface DtlsConnectionOwner {
  sendApplicationData(session: object, conn: DtlsServerConnection, data: Buffer): boolean;
  closeByApplication(session: object, conn: DtlsServerConnection): void;
  readonly maxRecordPlaintext: number;
}

/** The server side of a PSK handshake presents no identity of its own. */
const PSK_SERVER_LOCAL: LocalIdentity = Object.freeze({ method: "psk", pskIdentity: undefined });

export class DtlsServerConnection extends EventEmitter implements Connection {
  private isClosed = false;

  constructor(
    private readonly owner: DtlsConnectionOwner,
    private readonly session: object,
    readonly peer: PeerIdentity,
    public remoteAddress: string,
    public remotePort: number,
    readonly localAddress: string,
    readonly localPort: number,
    readonly cipher: string,
    private readonly localIdentity: LocalIdentity = PSK_SERVER_LOCAL,
  ) {
    super();
  }

  get transport(): "dtls" {
    return "dtls";
  }

  /** The server drops replayed records (its per-peer ReplayWindow). */
  get dropsDuplicates(): boolean {
    return true;
  }

  get local(): LocalIdentity {
    return this.localIdentity;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** One application-data record per call. Throws TransportError FRAME_TOO_LARGE above maxRecordPlaintext. */
  send(data: Buffer): boolean {
    if (this.isClosed) return false;
    if (data.length > this.owner.maxRecordPlaintext) {
      throw new TransportError("FRAME_TOO_LARGE", `${data.length} bytes exceed the DTLS record limit of ${this.owner.maxRecordPlaintext}`);
    }
    return this.owner.sendApplicationData(this.session, this, data);
  }

  close(): void {
    if (this.isClosed) return;
    this.owner.closeByApplication(this.session, this);
  }

  /** Called by the server when the peer moved (RFC 9146 Connection ID): 'moved' with the old and new endpoints. */
  moved(address: string, port: number): void {
    const from = { address: this.remoteAddress, port: this.remotePort };
    this.remoteAddress = address;
    this.remotePort = port;
    this.emit("moved", { from, to: { address, port } });
  }

  /** Called by the server exactly once when the association ends. */
  markClosed(error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.emit("close", error);
  }
}
