// The handshake transcript (RFC 5246 7.4.9, RFC 6347 4.2.6): its messages, for the signatures over
// them (CertificateVerify), and their running SHA-256, so the session hash and each Finished cost
// one digest instead of a pass over every message again.
import { Sha256 } from "./sha256";

/** Scratch for digests, shared: digest() never yields. */
const FORK = new Sha256();

export class Transcript {
  readonly messages: Buffer[] = [];
  private readonly hash = new Sha256();

  constructor(...messages: Buffer[]) {
    this.add(...messages);
  }

  add(...messages: Buffer[]): void {
    for (const m of messages) {
      this.messages.push(m);
      this.hash.update(m);
    }
  }

  /** SHA-256 of the messages so far; more may be added after. */
  digest(): Buffer {
    return FORK.copyFrom(this.hash).digest();
  }
}
