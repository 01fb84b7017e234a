// The ISP engine against a hand-built home: a real DTLS client connection and a real CoAP
// endpoint whose handlers the test writes, so it can do what our home engine never does (send a
// base 5.03 redirect, go silent, serve odd configurations) and inspect what the ISP sends.
import { strict as assert } from "node:assert";
import { decodeDotsCbor, encodeDotsCbor } from "../../src/cbor";
import { CoapEndpoint, type IncomingRequest } from "../../src/coap/endpoint";
import { CONTENT_FORMAT_DOTS_CBOR, Code, OptionNumber } from "../../src/coap/message";
import type { SessionInfo, StatusNotification } from "../../src/dots/api";
import { cuidFromPskIdentity } from "../../src/dots/ids";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { IspRequestError, type ResyncEvent } from "../../src/dots/isp-session";
import { buildConfigJson, DEFAULT_CONFIG_LIMITS, DEFAULT_CONFIG_SET } from "../../src/dots/session-config";
import type { Connection } from "../../src/transport/connection";
import { connectDtls } from "../../src/transport/dtls-client";
import { delay, waitFor } from "./harness";

const PSK = { identity: "peer-home", key: Buffer.from("peer-home-key-0123") };
const MS = "ietf-dots-signal-channel:mitigation-scope";
const scope = { "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 };

interface Seen {
  method: string;
  path: string[];
  confirmable: boolean;
  body?: Record<string, unknown>;
  ifMatch?: Buffer;
  observe?: number;
  /** Arrival time, epoch ms. */
  at: number;
}

/** A home made of parts: DTLS client + CoAP endpoint + handlers chosen per test. */
class HandHome {
  conn!: Connection;
  ep!: CoapEndpoint;
  readonly seen: Seen[] = [];
  onMitigate: (req: IncomingRequest, n: number) => void = (req) =>
    req.respond({
      code: Code.Created,
      payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 1, lifetime: 600 }] } }),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
    });
  private puts = 0;
  silent = false;
  configMaxAge = 3600;
  /** Answer GET /config with this code and a diagnostic instead of the configuration. */
  configFailure: number | undefined;
  /** Leave GET /config unanswered (after the first one). */
  configDeaf = false;
  /** CoAP transmission parameters served in both configuration sets, when set. */
  transmission: { ackTimeout: number; ackRandomFactor: number; maxRetransmit: number } | undefined;
  /** Hold the answer to GET /config this long (gives the ISP a long RTT estimate). */
  configDelayMs = 0;
  /** Scope entries answered to GET /mitigate/cuid=X (all mitigations); undefined: 4.04, none. */
  getAll: Array<Record<string, unknown>> | undefined;
  /** Handles GET /mitigate/cuid=X itself when set (failures, silence). */
  onGetAll: ((req: IncomingRequest) => void) | undefined;
  /** heartbeat-interval of mitigating-config when it differs from idle-config. */
  mitigatingHeartbeatInterval: number | undefined;

  constructor(
    private readonly heartbeatInterval: number,
    private readonly missingHbAllowed: number,
  ) {}

  async connect(port: number): Promise<void> {
    this.conn = await connectDtls({ host: "127.0.0.1", port, psk: PSK, handshakeTimeoutMs: 500 });
    this.ep = new CoapEndpoint(this.conn);
    this.ep.on("protocol-error", () => undefined);
    this.ep.onRequest((req) => {
      if (this.silent) return; // a saturated uplink: nothing gets through
      const s: Seen = { method: req.method, path: req.path, confirmable: req.confirmable, observe: req.observe, at: Date.now() };
      if (req.payload.length > 0) s.body = decodeDotsCbor(req.payload);
      const im = req.options.find((o) => o.number === OptionNumber.IfMatch);
      if (im) s.ifMatch = im.value;
      this.seen.push(s);
      const p = req.path.join("/");
      if (p === ".well-known/dots/config") {
        if (this.configFailure !== undefined)
          return req.respond({ code: this.configFailure, payload: Buffer.from("no configuration here") });
        if (this.configDeaf) return;
        const set = {
          ...DEFAULT_CONFIG_SET,
          heartbeatInterval: this.heartbeatInterval,
          missingHbAllowed: this.missingHbAllowed,
          ...(this.transmission ?? {}),
        };
        const mitigating = { ...set, heartbeatInterval: this.mitigatingHeartbeatInterval ?? this.heartbeatInterval };
        const limits = {
          ...DEFAULT_CONFIG_LIMITS,
          ackTimeout: { min: 0.1, max: 30 },
          ackRandomFactor: { min: 1.0, max: 4 },
          maxRetransmit: { min: 0, max: 15 },
        };
        const answer = (): void =>
          req.respond({
            code: Code.Content,
            payload: encodeDotsCbor(buildConfigJson({ idle: set, mitigating }, { idle: limits, mitigating: limits })),
            contentFormat: CONTENT_FORMAT_DOTS_CBOR,
            maxAge: this.configMaxAge,
          });
        if (this.configDelayMs > 0) setTimeout(answer, this.configDelayMs);
        else answer();
      } else if (p === ".well-known/dots/hb") {
        req.respond({ code: Code.Changed });
      } else if (req.path[2] === "mitigate" && req.method === "PUT") {
        this.onMitigate(req, this.puts++);
      } else if (req.path[2] === "mitigate" && req.method === "GET" && req.path.length === 4 && this.onGetAll) {
        this.onGetAll(req);
      } else if (req.path[2] === "mitigate" && req.method === "GET" && req.path.length === 4 && this.getAll === undefined) {
        // GET of all mitigations (the ISP's resync at session-up): this home holds none.
        req.respond({ code: Code.NotFound, payload: Buffer.from("no mitigations") });
      } else if (req.path[2] === "mitigate" && req.method === "GET" && req.path.length === 4 && this.getAll !== undefined) {
        req.respond({
          code: Code.Content,
          payload: encodeDotsCbor({ [MS]: { scope: this.getAll } }),
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
        });
      } else if (req.path[2] === "mitigate" && req.method === "GET") {
        req.respond({
          code: Code.Content,
          payload: encodeDotsCbor({
            [MS]: { scope: [{ mid: 1, lifetime: 500, status: "attack-successfully-mitigated", "mitigation-start": 1 }] },
          }),
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
        });
      } else req.respond({ code: Code.NotFound, payload: Buffer.from("no") });
    });
  }

  /** Sends a PUT /hb as the home does, returning the response code byte. */
  async heartbeat(body: Buffer = encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } })): Promise<number> {
    const res = await this.ep.request({
      method: "PUT",
      path: [".well-known", "dots", "hb"],
      confirmable: false,
      payload: body,
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      timeoutMs: 3000,
    });
    return res.code;
  }

  close(): void {
    this.ep?.close();
  }
}

describe("ISP engine against a hand-built home over DTLS-PSK", function () {
  this.timeout(20000);
  let listener: CallHomeListener | undefined;
  let home: HandHome | undefined;

  /** The listener the hand-built home dials: one PSK home "peer", DTLS only, short request timers. */
  function peerListener(tuning: Record<string, unknown>): CallHomeListener {
    return new CallHomeListener(
      {
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: true, tls: false },
        psk: [{ ...PSK, home: "peer" }],
        homePrefixes: { peer: ["203.0.113.0/24"] },
      },
      { nonRepeatMs: 100, requestTimeoutMs: 4000, ...tuning },
    );
  }

  async function start(
    hb: number,
    missing: number,
    tuning: Record<string, unknown> = {},
    prepare?: (h: HandHome) => void,
  ): Promise<[CallHomeListener, HandHome, SessionInfo]> {
    listener = peerListener(tuning);
    listener.on("error", () => undefined);
    await listener.start();
    home = new HandHome(hb, missing);
    prepare?.(home);
    const up = waitFor<[SessionInfo]>(listener, "session-up");
    await home.connect(listener.port as number);
    const [s] = await up;
    return [listener, home, s];
  }

  afterEach(async () => {
    home?.close();
    await listener?.stop();
    home = undefined;
    listener = undefined;
  });

  it("GETs /config as CON first and sends NON PUTs with cuid then mid, cuid from the PSK identity (R20, R21, R42)", async () => {
    const [l, h, s] = await start(30, 15);
    const { at: _at, ...first } = h.seen[0];
    void _at;
    assert.deepEqual(first, { method: "GET", path: [".well-known", "dots", "config"], confirmable: true, observe: undefined });
    const a = await l.mitigate(s.id, { [MS]: { scope: [scope] } });
    const b = await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": ["198.51.100.8/32"] }] } }, { observe: false });
    const puts = h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate");
    const cuid = cuidFromPskIdentity(PSK.identity);
    assert.deepEqual(puts[0].path, [".well-known", "dots", "mitigate", `cuid=${cuid}`, `mid=${a.mid}`]);
    assert.equal(puts[0].confirmable, false);
    assert.ok((b.mid as number) > (a.mid as number), "mid increases");
    assert.equal(a.cuid, cuid);
    // The status Observe: GET with Observe 0 on the new mid after 2.01.
    const obs = await (async () => {
      for (let i = 0; i < 50; i++) {
        const g = h.seen.find((x) => x.method === "GET" && x.observe === 0);
        if (g) return g;
        await delay(20);
      }
      return undefined;
    })();
    assert.ok(obs, "observe registered");
    assert.deepEqual(obs.path, [".well-known", "dots", "mitigate", `cuid=${cuid}`, `mid=${a.mid}`]);
  });

  it("sends the efficacy update with an empty If-Match and the original parameters plus attack-status (R40)", async () => {
    const [l, h, s] = await start(30, 15);
    h.onMitigate = (req, n) =>
      req.respond({
        code: n === 0 ? Code.Created : Code.Changed,
        payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 1, lifetime: 600 }] } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    const a = await l.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false });
    const e = await l.efficacy(s.id, a.mid as number, "attack-successfully-mitigated");
    assert.equal(e.code, "2.04");
    const upd = h.seen.filter((x) => x.method === "PUT").pop() as Seen;
    assert.deepEqual(upd.ifMatch, Buffer.alloc(0));
    assert.deepEqual(upd.body, { [MS]: { scope: [{ ...scope, "attack-status": "attack-successfully-mitigated" }] } });
    await assert.rejects(
      l.efficacy(s.id, 987654, "under-attack"),
      (err: unknown) => err instanceof IspRequestError && err.code === "UNKNOWN_MITIGATION",
    );
  });

  it("silently discards a base 5.03 redirect and keeps repeating until a real answer (R51)", async () => {
    const [l, h, s] = await start(30, 15);
    h.onMitigate = (req, n) => {
      if (n === 0) {
        req.respond({
          code: Code.ServiceUnavailable,
          payload: encodeDotsCbor({ "ietf-dots-signal-channel:redirected-signal": { "alt-server": "elsewhere.example" } }),
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
        });
      } else {
        req.respond({
          code: Code.Created,
          payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 1, lifetime: 600 }] } }),
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
        });
      }
    };
    const discarded = waitFor(l, "discarded");
    const res = await l.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false });
    await discarded;
    assert.equal(res.code, "2.01");
    assert.equal(h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate").length, 2);
  });

  it("does not resend a request the home deactivated before its retry-timer runs out (R39)", async () => {
    const [l, h, s] = await start(30, 15);
    h.onMitigate = (req) =>
      req.respond({
        code: Code.Conflict,
        payload: encodeDotsCbor({
          [MS]: {
            scope: [
              {
                "conflict-information": {
                  "conflict-status": "request-inactive-other-active",
                  "conflict-cause": "overlapping-targets",
                  "retry-timer": 600,
                },
              },
            ],
          },
        }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    const first = await l.mitigate(s.id, { [MS]: { scope: [scope] } });
    assert.equal(first.code, "4.09");
    await assert.rejects(
      l.mitigate(s.id, { [MS]: { scope: [{ ...scope, lifetime: 60 }] } }),
      (e: unknown) => e instanceof IspRequestError && e.code === "RETRY_TIMER",
    );
    // Another scope is not held back.
    const other = await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": ["198.51.100.99/32"] }] } });
    assert.equal(other.code, "4.09");
    assert.equal(h.seen.filter((x) => x.method === "PUT").length, 2);
  });

  it("refreshes /config before Max-Age runs out while idle, and not while an attack is active (R46)", async () => {
    // Max-Age 2 s compressed to 2 x 100 ms by msPerSecond.
    listener = peerListener({ msPerSecond: 100 });
    listener.on("error", () => undefined);
    await listener.start();
    home = new HandHome(30, 15);
    home.configMaxAge = 2;
    const up = waitFor<[SessionInfo]>(listener, "session-up");
    await home.connect(listener.port as number);
    const [s] = await up;
    const configGets = (): number => (home as HandHome).seen.filter((x) => x.path[2] === "config").length;
    await delay(700);
    assert.ok(configGets() >= 3, `idle: ${configGets()} GET /config in 700 ms`);
    const res = await listener.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false });
    assert.equal(res.code, "2.01");
    await delay(150);
    const during = configGets();
    await delay(700);
    assert.equal(configGets(), during, "no refresh during an attack");
  });

  it("refuses a request that would not fit one DTLS datagram instead of sending it (R13)", async () => {
    const [l, h, s] = await start(30, 15);
    const many = Array.from({ length: 100 }, (_, i) => `198.51.100.${i}/32`);
    await assert.rejects(
      l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": many }] } }),
      (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST" && /datagram/.test(e.message),
    );
    assert.equal(h.seen.filter((x) => x.method === "PUT").length, 0);
    const fits = await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": many.slice(0, 20) }] } }, { observe: false });
    assert.equal(fits.code, "2.01");
  });

  it("answers the home's heartbeat 2.04, a malformed one 4.00, and serves nothing else (R14, R45)", async () => {
    const [, h] = await start(30, 15);
    assert.equal(await h.heartbeat(), Code.Changed);
    assert.equal(await h.heartbeat(encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": {} } as never)), Code.BadRequest);
    const res = await h.ep.request({
      method: "GET",
      path: [".well-known", "dots", "mitigate", "cuid=x"],
      confirmable: true,
      timeoutMs: 3000,
    });
    assert.equal(res.code, Code.NotFound);
    assert.ok(res.payload.length > 0, "diagnostic payload");
  });

  it("heartbeats at the negotiated interval and tells the home whether its heartbeats arrive (R45, R47)", async () => {
    // heartbeat-interval 1 negotiated; the ISP compresses 1 s to 100 ms.
    const [l, h] = await start(1, 15, { msPerSecond: 100 });
    const first = await waitFor<[{ direction: string; peerHbStatus: boolean }]>(l, "heartbeat", (x) => x.direction === "out", 2000);
    assert.equal(first[0].peerHbStatus, false, "no heartbeat from the home yet");
    await h.heartbeat();
    await waitFor<[{ direction: string; peerHbStatus: boolean }]>(l, "heartbeat", (x) => x.direction === "out" && x.peerHbStatus, 2000);
    await delay(250);
    const hbs = h.seen.filter((x) => x.path[2] === "hb");
    assert.ok(hbs.length >= 2, `${hbs.length} heartbeats arrived`);
    assert.ok(
      hbs.every((x) => !x.confirmable && x.path.length === 3),
      "NON, no cuid/mid on /hb",
    );
  });

  it("declares a silent idle session lost, but keeps it while an attack it reported is active (R48)", async () => {
    // Idle: silence for missing-hb-allowed (2) x interval (1 s = 50 ms) ends the session.
    const [l, h, s] = await start(1, 2, { msPerSecond: 50 });
    h.silent = true;
    const [, reason] = await waitFor<[SessionInfo, string]>(l, "session-down", () => true, 3000);
    assert.match(reason, /heartbeat loss/);
    assert.equal(l.findSession(s.id), undefined);
    home?.close();
    await l.stop();

    // With an active mitigation the same silence does not end it.
    const [l2, h2, s2] = await start(1, 2, { msPerSecond: 50 });
    const res = await l2.mitigate(s2.id, { [MS]: { scope: [scope] } }, { observe: false });
    assert.equal(res.code, "2.01");
    h2.silent = true;
    let down = false;
    l2.on("session-down", () => (down = true));
    await delay(600); // 6 heartbeat intervals, three times the loss threshold
    assert.equal(down, false);
    assert.ok(l2.findSession(s2.id));
  });

  it("reports every Observe notification as a status event", async () => {
    const [l, h, s] = await start(30, 15);
    let observer: ((status: string) => void) | undefined;
    // Serve the observe GET with a handle we can notify through.
    h.ep.onRequest((req) => {
      const p = req.path.join("/");
      if (p === ".well-known/dots/hb") return req.respond({ code: Code.Changed });
      if (req.method === "PUT")
        return req.respond({
          code: Code.Created,
          payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 7, lifetime: 600 }] } }),
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
        });
      if (req.method === "GET" && req.observe === 0) {
        const handle = req.acceptObserve();
        const body = (st: string) => encodeDotsCbor({ [MS]: { scope: [{ mid: 7, lifetime: 600, status: st, "mitigation-start": 1 }] } });
        req.respond({ code: Code.Content, payload: body("attack-mitigation-in-progress"), contentFormat: CONTENT_FORMAT_DOTS_CBOR });
        observer = (st) => handle.notify({ code: Code.Content, payload: body(st), contentFormat: CONTENT_FORMAT_DOTS_CBOR });
        return;
      }
      req.respond({ code: Code.NotFound, payload: Buffer.from("no") });
    });
    const statuses: string[] = [];
    l.on("status", (n: StatusNotification) => statuses.push(n.status ?? "?"));
    await l.mitigate(s.id, { [MS]: { scope: [scope] } }, { mid: 7 });
    for (let i = 0; i < 50 && !observer; i++) await delay(20);
    assert.ok(observer, "observation registered");
    observer("attack-successfully-mitigated");
    await waitFor<[StatusNotification]>(l, "status", (n) => n.status === "attack-successfully-mitigated", 3000);
    observer("attack-mitigation-terminated");
    await waitFor<[StatusNotification]>(l, "status", (n) => n.status === "attack-mitigation-terminated", 3000);
    assert.deepEqual(statuses, ["attack-mitigation-in-progress", "attack-successfully-mitigated", "attack-mitigation-terminated"]);
  });
  it("after a discarded base 5.03 waits for the next repeat slot, never resending at once (R21, R51)", async () => {
    // Every answer is a base redirect: the ISP keeps treating it as no answer until its timeout.
    const [l, h, s] = await start(30, 15, { nonRepeatMs: 100, requestTimeoutMs: 1000 });
    h.onMitigate = (req) =>
      req.respond({
        code: Code.ServiceUnavailable,
        payload: encodeDotsCbor({ "ietf-dots-signal-channel:redirected-signal": { "alt-server": "elsewhere.example" } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    await assert.rejects(
      l.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false }),
      (e: unknown) => e instanceof IspRequestError && e.code === "TIMEOUT",
    );
    const puts = h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate").length;
    // One copy per 100 ms repeat slot over 1 s (resending on every discard would send hundreds).
    assert.ok(puts >= 3 && puts <= 12, `${puts} PUTs in 1 s with a 100 ms repeat interval`);
  });

  it("takes a new cuid after a 4.09 cuid-collision and sends the request again under it (R19)", async () => {
    const [l, h, s] = await start(30, 15);
    h.onMitigate = (req, n) =>
      n === 0
        ? req.respond({
            code: Code.Conflict,
            payload: encodeDotsCbor({ [MS]: { scope: [{ "conflict-information": { "conflict-cause": "cuid-collision" } }] } }),
            contentFormat: CONTENT_FORMAT_DOTS_CBOR,
          })
        : req.respond({
            code: Code.Created,
            payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 1, lifetime: 600 }] } }),
            contentFormat: CONTENT_FORMAT_DOTS_CBOR,
          });
    const changed = waitFor<[{ sessionId: string; previous: string; cuid: string }]>(l, "cuid-changed");
    const res = await l.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false });
    const [c] = await changed;
    const old = cuidFromPskIdentity(PSK.identity);
    assert.equal(res.code, "2.01");
    assert.equal(c.previous, old);
    assert.match(c.cuid, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(c.cuid, old);
    assert.equal(res.cuid, c.cuid);
    const puts = h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate");
    assert.deepEqual(
      puts.map((x) => x.path[3]),
      [`cuid=${old}`, `cuid=${c.cuid}`],
    );
    // Later requests and lookups use the new cuid.
    await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": ["198.51.100.8/32"] }] } }, { observe: false });
    assert.equal(h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate").pop()?.path[3], `cuid=${c.cuid}`);
    assert.equal(l.session(s.id).cuid, c.cuid);
  });

  it("refuses each invalid request before anything is sent (R21, R22, R24, R25)", async () => {
    const [l, h, s] = await start(30, 15);
    const { "target-prefix": _t, ...noTarget } = scope;
    const { "ietf-dots-call-home:source-prefix": _s, ...noSource } = scope;
    void _t;
    void _s;
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ["no target-prefix", { [MS]: { scope: [noTarget] } }, /target-prefix/],
      ["no source-prefix", { [MS]: { scope: [noSource] } }, /source-prefix/],
      ["lifetime 0", { [MS]: { scope: [{ ...scope, lifetime: 0 }] } }, /lifetime/],
      ["trigger-mitigation false", { [MS]: { scope: [{ ...scope, "trigger-mitigation": false }] } }, /trigger-mitigation/],
      ["two scopes", { [MS]: { scope: [scope, scope] } }, /scope/],
      ["mid in the body", { [MS]: { scope: [{ ...scope, mid: 5 }] } }, /Uri-Path/],
      ["multicast source", { [MS]: { scope: [{ ...scope, "ietf-dots-call-home:source-prefix": ["224.0.0.1/32"] }] } }, /multicast/],
      ["broadcast source", { [MS]: { scope: [{ ...scope, "ietf-dots-call-home:source-prefix": ["255.255.255.255/32"] }] } }, /broadcast/],
      ["loopback source", { [MS]: { scope: [{ ...scope, "ietf-dots-call-home:source-prefix": ["::1/128"] }] } }, /loopback/],
      [
        "IPv4 prefix longer than 32",
        { [MS]: { scope: [{ ...scope, "ietf-dots-call-home:source-prefix": ["203.0.113.9/33"] }] } },
        /source-prefix/,
      ],
      [
        "source outside the home's domain",
        { [MS]: { scope: [{ ...scope, "ietf-dots-call-home:source-prefix": ["192.0.2.9/32"] }] } },
        /not inside/,
      ],
    ];
    for (const [name, body, why] of cases) {
      await assert.rejects(
        l.mitigate(s.id, body),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST" && why.test(e.message),
        name,
      );
    }
    assert.equal(h.seen.filter((x) => x.method === "PUT").length, 0, "nothing reached the home");
  });

  it("refuses multicast, broadcast (also the home prefix's) and unspecified targets before anything is sent, naming target-prefix", async () => {
    const [l, h, s] = await start(30, 15);
    for (const [target, why] of [
      ["224.0.0.1/32", /target-prefix\[0\].*multicast/],
      ["ff02::1/128", /target-prefix\[0\].*multicast/],
      ["255.255.255.255/32", /target-prefix\[0\].*broadcast/],
      ["203.0.113.255/32", /target-prefix\[0\].*broadcast address of a home prefix/],
      ["0.0.0.0/32", /target-prefix\[0\].*unspecified/],
      ["::/128", /target-prefix\[0\].*unspecified/],
    ] as const) {
      await assert.rejects(
        l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": [target] }] } }),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST" && why.test(e.message),
        target,
      );
    }
    assert.equal(h.seen.filter((x) => x.method === "PUT").length, 0, "nothing reached the home");
  });

  it("answers a heartbeat in another Content-Format 4.15 with a diagnostic (R17)", async () => {
    const [, h] = await start(30, 15);
    const res = await h.ep.request({
      method: "PUT",
      path: [".well-known", "dots", "hb"],
      confirmable: true,
      payload: Buffer.from('{"peer-hb-status":true}'),
      contentFormat: 50,
      timeoutMs: 3000,
    });
    assert.equal(res.code, Code.UnsupportedContentFormat);
    assert.match(res.payload.toString(), /dots\+cbor/);
  });

  it("sends its own heartbeat right after the home's when configured to, or when the home misses ours (R47)", async () => {
    const hbsAtHome = (x: HandHome): number => x.seen.filter((m) => m.path[2] === "hb").length;
    const until = async (pred: () => boolean): Promise<boolean> => {
      for (let i = 0; i < 50 && !pred(); i++) await delay(20);
      return pred();
    };
    // Default: a home that hears us gets no extra heartbeat; one that does not, gets one at once.
    const [l, h] = await start(30, 15);
    await h.heartbeat();
    await delay(300);
    assert.equal(hbsAtHome(h), 0, "interval 30 s: nothing sent yet");
    await h.heartbeat(encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": false } }));
    assert.ok(await until(() => hbsAtHome(h) === 1), "answered the home's 'not arriving'");
    // 15 stale heartbeats in a burst (queued behind a congested link): no burst of ours back
    const stale = encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": false } });
    for (let i = 0; i < 15; i++) await h.heartbeat(stale);
    await delay(300);
    assert.equal(hbsAtHome(h), 1, "at most one immediate answer per heartbeat interval");
    h.close();
    await l.stop();
    // answerHeartbeatsImmediately: every heartbeat from the home is answered with ours.
    const [, h2] = await start(30, 15, { answerHeartbeatsImmediately: true });
    await h2.heartbeat();
    assert.ok(await until(() => hbsAtHome(h2) === 1), "answered at once");
    const last = h2.seen.filter((m) => m.path[2] === "hb").pop();
    assert.deepEqual(last?.body, { "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } });
  });

  it("uses the RFC 9132 defaults when GET /config fails, and still comes up (R42)", async () => {
    const errors: string[] = [];
    const [l, , s] = await start(5, 3, {}, (h) => {
      h.configFailure = Code.NotFound;
      (listener as CallHomeListener).on("error", (e: Error) => errors.push(e.message));
    });
    const session = l.session(s.id);
    assert.deepEqual(session.negotiated.idle, { ...DEFAULT_CONFIG_SET });
    assert.deepEqual(session.negotiated.mitigating, { ...DEFAULT_CONFIG_SET });
    assert.equal(s.config, undefined);
    assert.ok(
      errors.some((m) => /4\.04/.test(m) && /defaults/.test(m)),
      errors.join("; "),
    );
  });

  it("closes a session the home never speaks on (its handshake finished only here), without session-up; a home that speaks gets the defaults", async () => {
    listener = peerListener({ configTimeoutMs: 600 });
    const errors: string[] = [];
    const ups: SessionInfo[] = [];
    listener.on("error", (e: Error) => errors.push(e.message));
    listener.on("session-up", (s: SessionInfo) => ups.push(s));
    await listener.start();
    const l = listener;
    // Nothing at all from the home after the handshake: dead, closed, never announced.
    home = new HandHome(30, 15);
    home.silent = true;
    await home.connect(l.port as number);
    const closed = new Promise<void>((resolve) => home?.conn.once("close", () => resolve()));
    await closed;
    assert.equal(ups.length, 0, "no session-up for a session the home never used");
    assert.deepEqual(l.sessions(), []);
    assert.ok(!errors.some((m) => /defaults/.test(m)), errors.join("; "));
    home.close();
    // Deaf to GET /config but sending its heartbeat: alive, so the session comes up on the defaults.
    const h = new HandHome(30, 15);
    home = h;
    h.silent = true;
    const up = waitFor<[SessionInfo]>(l, "session-up");
    await h.connect(l.port as number);
    assert.equal(await h.heartbeat(), Code.Changed);
    const [s] = await up;
    assert.deepEqual(l.session(s.id).negotiated.idle, { ...DEFAULT_CONFIG_SET });
    assert.ok(
      errors.some((m) => /GET \/config failed/.test(m) && /defaults/.test(m)),
      errors.join("; "),
    );
  });

  it("switches to mitigating-config's heartbeat interval while an attack is active, and back (R46)", async () => {
    // idle 30 s (3 s compressed), mitigating 1 s (100 ms compressed).
    const [l, h, s] = await start(30, 15, { msPerSecond: 100 }, (x) => (x.mitigatingHeartbeatInterval = 1));
    h.onMitigate = (req) =>
      req.respond({
        code: Code.Created,
        payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 1, lifetime: 1 }] } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    const hbs = (): number => h.seen.filter((m) => m.path[2] === "hb").length;
    await delay(400);
    assert.equal(hbs(), 0, "idle: no heartbeat within 400 ms");
    const res = await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, lifetime: 1 }] } }, { observe: false });
    assert.equal(res.code, "2.01");
    await delay(700);
    assert.ok(hbs() >= 3, `mitigating: ${hbs()} heartbeats in 700 ms`);
    // The granted lifetime (1 s) runs out: back to idle-config, i.e. a quiet spell of 600 ms
    // (six mitigating intervals) must come within 4 s.
    let quiet = false;
    for (let last = hbs(), since = Date.now(), end = Date.now() + 4000; Date.now() < end; await delay(50)) {
      if (hbs() !== last) {
        last = hbs();
        since = Date.now();
      } else if (Date.now() - since >= 600) {
        quiet = true;
        break;
      }
    }
    assert.ok(quiet, "heartbeats went back to the idle interval once the mitigation expired");
  });
  it("carries source-port-range, source-icmp-type-range and RFC 9244 attack-detail to the home as given (R23, R60)", async () => {
    const [l, h, s] = await start(30, 15);
    const full = {
      ...scope,
      "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000, "upper-port": 40010 }],
      "ietf-dots-call-home:source-icmp-type-range": [{ "lower-type": 8 }],
      "ietf-dots-telemetry:attack-detail": [
        {
          "vendor-id": 32473,
          "attack-id": 77,
          "attack-severity": "high",
          "top-talker": { talker: [{ "source-prefix": "203.0.113.9/32" }] },
        },
      ],
    };
    const res = await l.mitigate(s.id, { [MS]: { scope: [full] } }, { observe: false });
    assert.equal(res.code, "2.01");
    const put = h.seen.find((x) => x.method === "PUT" && x.path[2] === "mitigate") as Seen;
    assert.deepEqual(put.body, { [MS]: { scope: [full] } });
    // A port range upside down is refused before sending.
    await assert.rejects(
      l.mitigate(s.id, {
        [MS]: { scope: [{ ...full, "ietf-dots-call-home:source-port-range": [{ "lower-port": 50, "upper-port": 40 }] }] },
      }),
      (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST" && /source-port-range/.test(e.message),
    );
  });

  it("spaces new requests over DTLS one RTT apart, however many the caller starts at once (R21)", async () => {
    // The home holds its /config answer 300 ms: the ISP's RTT estimate is about 300 ms.
    const [l, h, s] = await start(30, 15, {}, (x) => (x.configDelayMs = 300));
    const targets = ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"];
    const all = await Promise.all(
      targets.map((t) => l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": [t] }] } }, { observe: false })),
    );
    assert.deepEqual(
      all.map((r) => r.code),
      ["2.01", "2.01", "2.01"],
    );
    const puts = h.seen.filter((x) => x.method === "PUT" && x.path[2] === "mitigate");
    assert.deepEqual(
      puts.map((x) => (x.body as Record<string, { scope: Array<Record<string, string[]>> }>)[MS].scope[0]["target-prefix"][0]),
      targets,
      "sent in call order",
    );
    // Lower bounds only: load can stretch the gaps, never shrink them.
    for (let i = 1; i < puts.length; i++) assert.ok(puts[i].at - puts[i - 1].at >= 200, `gap ${i}: ${puts[i].at - puts[i - 1].at} ms`);
  });

  it("retransmits its CON GET /config on the ack-timeout the home negotiated (R12)", async () => {
    // Negotiated ack-timeout 0.2 s: the first retransmission comes after 0.2-0.22 s. With the
    // default 2 s it would take at least 2 s.
    const [, h] = await start(30, 15, { msPerSecond: 100 }, (x) => {
      x.transmission = { ackTimeout: 0.2, ackRandomFactor: 1.1, maxRetransmit: 2 };
      x.configMaxAge = 2;
    });
    h.configDeaf = true; // the refresh (due after 180 ms here) goes unanswered
    const copies = new Map<number, number[]>(); // message id -> arrival times of CON GET /config copies
    h.conn.on("message", (m: Buffer) => {
      const con = ((m[0] >> 4) & 3) === 0;
      if (con && m[1] === 0x01 && m.includes("config"))
        copies.set(m.readUInt16BE(2), [...(copies.get(m.readUInt16BE(2)) ?? []), Date.now()]);
    });
    for (let i = 0; i < 60 && ![...copies.values()].some((t) => t.length >= 2); i++) await delay(50);
    const first = [...copies.values()][0];
    assert.ok(first && first.length >= 2, `a retransmission arrived: ${JSON.stringify([...copies])}`);
    assert.ok(first[1] - first[0] < 1500, `retransmitted after ${first[1] - first[0]} ms`);
  });
  it("resyncs before session-up: GET /mitigate/cuid= without mid after /config, live mids observed again, final ones only counted, new mids above all (R20, R37, R39)", async () => {
    const cuid = cuidFromPskIdentity(PSK.identity);
    const resynced: ResyncEvent[] = [];
    const statuses: StatusNotification[] = [];
    const [l, h, s] = await start(30, 15, {}, (x) => {
      x.getAll = [
        { mid: 40, ...scope, lifetime: 300, status: "attack-successfully-mitigated", "mitigation-start": "1", "bytes-dropped": "0" },
        { mid: 90, ...scope, "target-prefix": ["198.51.100.90/32"], lifetime: 0, status: "attack-mitigation-terminated" },
      ];
      listener?.on("resynced", (r) => resynced.push(r));
      listener?.on("status", (n) => statuses.push(n));
    });
    void l;
    const first = h.seen.slice(0, 2).map((x) => [x.method, x.path.join("/"), x.observe]);
    assert.deepEqual(first, [
      ["GET", ".well-known/dots/config", undefined],
      ["GET", `.well-known/dots/mitigate/cuid=${cuid}`, undefined],
    ]);
    await delay(100);
    assert.equal(resynced.length, 1);
    assert.deepEqual(
      resynced[0].mitigations.map((m) => [m.mid, m.status]),
      [
        [40, "attack-successfully-mitigated"],
        [90, "attack-mitigation-terminated"],
      ],
    );
    assert.equal(resynced[0].complete, true);
    const observed = h.seen.filter((x) => x.method === "GET" && x.observe === 0).map((x) => x.path[4]);
    assert.deepEqual(observed, ["mid=40"], "only the live mitigation is observed");
    assert.ok(statuses.some((n) => n.mid === 40));
    // The efficacy update repeats the scope as the home reported it, without its status fields.
    h.onMitigate = (req) =>
      req.respond({
        code: Code.Changed,
        payload: encodeDotsCbor({ [MS]: { scope: [{ mid: 40, lifetime: 300 }] } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    assert.equal((await l.efficacy(s.id, 40, "under-attack")).code, "2.04");
    const upd = h.seen.filter((x) => x.method === "PUT").pop() as Seen;
    assert.deepEqual(upd.body, { [MS]: { scope: [{ ...scope, lifetime: 300, "attack-status": "under-attack" }] } });
    h.onMitigate = (req) =>
      req.respond({
        code: Code.Created,
        payload: encodeDotsCbor({ [MS]: { scope: [{ lifetime: 600 }] } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    const next = await l.mitigate(s.id, { [MS]: { scope: [{ ...scope, "target-prefix": ["198.51.100.99/32"] }] } }, { observe: false });
    assert.equal(next.mid, 91, "above the highest mid the home reported, final or not");
  });

  it("a resync GET that fails: the session still comes up, resynced says incomplete and why, and an error is emitted", async () => {
    const errors: Error[] = [];
    const resynced: ResyncEvent[] = [];
    let gets = 0;
    const [l, h, s] = await start(30, 15, {}, (x) => {
      x.onGetAll = (req) =>
        gets++ === 0 ? req.respond({ code: Code.InternalServerError, payload: Buffer.from("store offline") }) : undefined;
      listener?.on("error", (e) => errors.push(e));
      listener?.on("resynced", (r) => resynced.push(r));
    });
    assert.equal(resynced.length, 1);
    assert.equal(resynced[0].complete, false);
    assert.match(String(resynced[0].error), /answered 5\.00 \(store offline\)/);
    assert.ok(
      errors.some((e) => /resync with peer: .*store offline/.test(e.message)),
      errors.map((e) => e.message).join("; "),
    );
    assert.equal(l.sessions().length, 1);
    h.onMitigate = (req) =>
      req.respond({
        code: Code.Created,
        payload: encodeDotsCbor({ [MS]: { scope: [{ lifetime: 600 }] } }),
        contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      });
    assert.equal(
      (await l.mitigate(s.id, { [MS]: { scope: [scope] } }, { observe: false })).code,
      "2.01",
      "requests work without the resync",
    );
  });
});
