// Two-sided test harness: a real CallHomeListener (ISP) and a real CallHomeDialer (home) talking
// over loopback DTLS or TLS. Every helper frees what it opened.
import type { EventEmitter } from "node:events";
import type { DialerOptions, ListenerOptions, SessionInfo } from "../../src/dots/api";
import { CallHomeListener, type IspEngineTuning } from "../../src/dots/isp-engine";
import { CallHomeDialer, type HomeEngineTuning } from "../../src/dots/home-engine";
import { makeTestPki, type TestPki } from "../support/certs";

export const HOME_PREFIX = "203.0.113.0/24";
export const PSK_IDENTITY = "home-1";
export const PSK_KEY = Buffer.from("secretPSK-0123456789");

export type VariantName = "dtls-psk" | "tls-cert" | "tls-psk";

export interface Variant {
  name: VariantName;
  transport: "udp" | "tcp";
}

export const VARIANTS: Variant[] = [
  { name: "dtls-psk", transport: "udp" },
  { name: "tls-cert", transport: "tcp" },
  { name: "tls-psk", transport: "tcp" },
];

/** Short timers so the suite stays fast; the RFC defaults stay the engines' defaults. */
export const FAST_ISP: Partial<IspEngineTuning> = { nonRepeatMs: 200, requestTimeoutMs: 5000, configTimeoutMs: 5000 };

export function listenerOptions(v: Variant, pki: TestPki, extra: Partial<ListenerOptions> = {}): ListenerOptions {
  const base: ListenerOptions = {
    port: 0,
    host: "127.0.0.1",
    transports: { dtls: v.transport === "udp", tls: v.transport === "tcp" },
    homePrefixes: { [PSK_IDENTITY]: [HOME_PREFIX], "home-1.example": [HOME_PREFIX] },
    dropList: { maxFailures: 100, windowMs: 60_000, banMs: 60_000 },
  };
  if (v.name === "tls-cert") base.certificate = { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert };
  else base.psk = [{ identity: PSK_IDENTITY, key: PSK_KEY, home: PSK_IDENTITY }];
  return { ...base, ...extra };
}

export function dialerOptions(v: Variant, pki: TestPki, port: number, extra: Partial<DialerOptions> = {}): DialerOptions {
  const base: DialerOptions = {
    hosts: ["127.0.0.1"],
    port,
    transport: v.transport,
    homePrefixes: [HOME_PREFIX],
    heartbeatInterval: 1,
    decisionWaitMs: 1000,
    reconnect: { minMs: 100, maxMs: 500 },
  };
  if (v.name === "tls-cert") base.certificate = { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "localhost" };
  else base.psk = { identity: PSK_IDENTITY, key: PSK_KEY };
  return { ...base, ...extra };
}

/** Resolves with the first event (args array) matching `pred`, or rejects after `ms`. */
export function waitFor<A extends unknown[]>(
  em: EventEmitter,
  event: string,
  pred: (...args: A) => boolean = () => true,
  ms = 5000,
): Promise<A> {
  return new Promise<A>((resolve, reject) => {
    const onEvent = (...args: unknown[]): void => {
      let ok = false;
      try {
        ok = pred(...(args as A));
      } catch {
        ok = false;
      }
      if (!ok) return;
      clearTimeout(timer);
      em.off(event, onEvent);
      resolve(args as A);
    };
    const timer = setTimeout(() => {
      em.off(event, onEvent);
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`));
    }, ms);
    em.on(event, onEvent);
  });
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Pair {
  pki: TestPki;
  listener: CallHomeListener;
  dialer: CallHomeDialer;
  port: number;
  session: SessionInfo;
  close(): Promise<void>;
}

export interface PairOptions {
  listener?: Partial<ListenerOptions>;
  isp?: Partial<IspEngineTuning>;
  dialer?: Partial<DialerOptions>;
  /** Home-engine tuning (terminating period, lifetimes, ...). */
  home?: HomeEngineTuning;
  /** Decide every new mitigation with this outcome (like --auto-decide). */
  autoDecide?: "enforced" | "pending" | "legitimate" | "failed";
}

export async function startPair(v: Variant, opts: PairOptions = {}): Promise<Pair> {
  const pki = await makeTestPki();
  const listener = new CallHomeListener(listenerOptions(v, pki, opts.listener), { ...FAST_ISP, ...opts.isp });
  listener.on("error", () => undefined);
  await listener.start();
  const port = listener.port as number;
  const dialer = new CallHomeDialer({ ...dialerOptions(v, pki, port, opts.dialer), tuning: { dtlsHandshakeTimeoutMs: 500, ...opts.home } });
  dialer.on("error", () => undefined);
  if (opts.autoDecide) {
    const outcome = opts.autoDecide;
    dialer.on("mitigation", (m) => {
      if (m.kind === "new") dialer.decide({ cuid: m.cuid, mid: m.mid, outcome });
    });
  }
  const up = waitFor<[SessionInfo]>(listener, "session-up");
  await dialer.start();
  let session: SessionInfo;
  try {
    [session] = await up;
  } catch (e) {
    await dialer.stop();
    await listener.stop();
    throw e;
  }
  return {
    pki,
    listener,
    dialer,
    port,
    session,
    async close() {
      await dialer.stop();
      await listener.stop();
    },
  };
}
