// What a transport listener reports, collected for assertions.
import type { Connection } from "../../src/transport/connection";
import type { AuthFailure, CallHomeTransportListener, DropEvent } from "../../src/transport/listener";

export interface ListenerEvents {
  accepted: Connection[];
  failures: AuthFailure[];
  drops: DropEvent[];
}

/** Records connections, authentication failures and drops; every connection also goes to `conns` (for clean-up). */
export function recordListenerEvents(l: CallHomeTransportListener, conns: Connection[]): ListenerEvents {
  const events: ListenerEvents = { accepted: [], failures: [], drops: [] };
  l.on("connection", (c: Connection) => (events.accepted.push(c), conns.push(c)));
  l.on("auth-failure", (f: AuthFailure) => events.failures.push(f));
  l.on("drop", (d: DropEvent) => events.drops.push(d));
  return events;
}
