// The Connection a DtlsServer hands out per established peer (src/transport/connection.ts contract).
import { EventEmitter } from "node:events";
import type { Connection, LocalIdentity, PeerIdentity } from "../connection";
import { TransportError } from "../connection";

/** What the connection needs from the server that owns it. */
export interface DtlsConnectionOwner {
  sendApplicationData(conn: DtlsServerConnection, data: Buffer): boolean;
  closeByApplication(conn: DtlsServerConnection): void;
  readonly maxRecordPlaintext: number;
}

export class DtlsServerConnection extends EventEmitter implements Connection {
  readonly transport = "dtls" as const;
  readonly peer: PeerIdentity;
  readonly local: LocalIdentity = { method: "psk", pskIdentity: undefined };
  private isClosed = false;

  constructor(
    private readonly owner: DtlsConnectionOwner,
    pskIdentity: string,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly localAddress: string,
    readonly localPort: number,
    readonly cipher: string,
  ) {
    super();
    this.peer = { method: "psk", pskIdentity };
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
    return this.owner.sendApplicationData(this, data);
  }

  close(): void {
    if (this.isClosed) return;
    this.owner.closeByApplication(this);
  }

  /** Called by the server exactly once when the association ends. */
  markClosed(error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.emit("close", error);
  }
}
