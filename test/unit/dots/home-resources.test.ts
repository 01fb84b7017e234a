import { strict as assert } from "node:assert";
import { Code, CONTENT_FORMAT_DOTS_CBOR, CONTENT_FORMAT_TEXT } from "../../../src/coap/message";
import { encodeDotsCbor, decodeDotsCbor } from "../../../src/cbor";
import {
  HomeResources,
  ResourceRequest,
  ResourceResponse,
  ResourceObserver,
  parseMitigatePath,
  RedirectTarget,
} from "../../../src/dots/home-resources";
import { MitigationStore } from "../../../src/dots/mitigation-store";
import { SessionConfig, buildConfigPutJson, SIGNAL_CONFIG_KEY } from "../../../src/dots/session-config";
import { buildHeartbeatJson } from "../../../src/dots/heartbeat";
import type { MitigationEvent, MitigationEnded } from "../../../src/dots/api";

const MS = "ietf-dots-signal-channel:mitigation-scope";
const SP = "ietf-dots-call-home:source-prefix";
const codec = { encode: (j: Record<string, unknown>) => encodeDotsCbor(j), decode: (b: Buffer) => decodeDotsCbor(b) };

interface Sent {
  ignored?: boolean;
  res: Promise<ResourceResponse>;
  notes: ResourceResponse[];
  observer?: FakeObserver;
}
// The observation handle is the seam the CoAP endpoint fills in; this stand-in records notifications.
class FakeObserver implements ResourceObserver {
  active = true;
  notes: ResourceResponse[] = [];
  private cancels: Array<() => void> = [];
  notify(r: ResourceResponse) {
    this.notes.push(r);
  }
  onCancel(l: () => void) {
    this.cancels.push(l);
  }
  cancel() {
    this.active = false;
    this.cancels.forEach((c) => c());
  }
}

function send(
  h: HomeResources,
  r: {
    method: number;
    path: string;
    body?: Record<string, unknown> | Buffer;
    cf?: number | null;
    ifMatch?: Buffer[];
    observe?: number;
    peer?: string;
  },
): Sent {
  let resolve!: (x: ResourceResponse) => void;
  const res = new Promise<ResourceResponse>((ok) => (resolve = ok));
  const out: Sent = { res, notes: [] };
  const req: ResourceRequest = {
    method: r.method,
    path: r.path.split("/").filter((s) => s.length > 0),
    contentFormat: r.cf === null ? undefined : (r.cf ?? (r.body ? CONTENT_FORMAT_DOTS_CBOR : undefined)),
    payload: r.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(r.body) ? r.body : encodeDotsCbor(r.body),
    ifMatch: r.ifMatch,
    observe: r.observe,
    respond: (x) => resolve(x),
    ignore: () => (out.ignored = true),
    acceptObserve: () => (out.observer = new FakeObserver()),
  };
  if (r.peer !== undefined) req.peer = r.peer;
  h.handle(req);
  return out;
}
const diag = (r: ResourceResponse) => (r.contentFormat === CONTENT_FORMAT_TEXT ? r.payload!.toString() : "");
const json = (r: ResourceResponse) => decodeDotsCbor(r.payload!) as any;
const request = (scope: Record<string, unknown>) => ({ [MS]: { scope: [scope] } });
const good = (extra: Record<string, unknown> = {}) =>
  request({ "target-prefix": ["198.51.100.7/32"], [SP]: ["203.0.113.5/32"], lifetime: 3600, ...extra });
const P = "/.well-known/dots/mitigate/cuid=abc";

describe("dots/home-resources", () => {
  let store: MitigationStore;
  let config: SessionConfig;
  let h: HomeResources;
  let events: MitigationEvent[];
  let ended: MitigationEnded[];
  const make = (o: Partial<ConstructorParameters<typeof HomeResources>[0]> = {}) => {
    store = new MitigationStore({ terminatingPeriodMs: 30, allowIndefiniteLifetime: o.allowIndefiniteLifetime, maxLifetime: 86400 });
    config = new SessionConfig();
    h = new HomeResources({ store, config, codec, homePrefixes: ["203.0.113.0/24", "2001:db8:1::/48"], decisionWaitMs: 0, ...o });
    events = [];
    ended = [];
    h.on("mitigation", (e) => events.push(e));
    h.on("ended", (e) => ended.push(e));
  };
  beforeEach(() => make());
  afterEach(() => {
    h.dropConnectionState();
    store.clear();
  });

  describe("Uri-Path", () => {
    it("parses [cdid]/cuid/mid in order; empty values, wrong order and non-uint32 mids are errors", () => {
      assert.deepEqual(parseMitigatePath(["cuid=a", "mid=7"]), { cuid: "a", mid: 7 });
      assert.deepEqual(parseMitigatePath(["cdid=x", "cuid=a"]), { cuid: "a" });
      for (const bad of [
        ["mid=1", "cuid=a"],
        ["cuid="],
        ["cuid=a", "mid="],
        ["cuid=a", "mid=4294967296"],
        ["cuid=a", "mid=-1"],
        ["cuid=a", "mid=1", "x=2"],
        [],
      ]) {
        assert.throws(() => parseMitigatePath(bad), Error, JSON.stringify(bad));
      }
    });
  });

  describe("dropped traffic in status (RFC 9132 4.4.2, issue 12 finding 12)", () => {
    it("GET reads the metrics source first and carries bytes-/pkts-dropped (rates only when given); none without a source", async () => {
      let refreshes = 0;
      let counters = { bytes: 0, packets: 0 };
      make({
        metrics: {
          dropped: (cuid, mid) => (cuid === "abc" && mid === 5 ? { ...counters } : undefined),
          refresh: async () => {
            refreshes++;
            counters = { bytes: 2560, packets: 20 };
          },
        },
      });
      await send(h, { method: Code.PUT, path: `${P}/mid=5`, body: good() }).res;
      const e = json(await send(h, { method: Code.GET, path: `${P}/mid=5` }).res)[MS].scope[0];
      assert.equal(refreshes, 1);
      assert.deepEqual([e["bytes-dropped"], e["pkts-dropped"], e["bps-dropped"], e["pps-dropped"]], ["2560", "20", undefined, undefined]);
      h.setMetricsSource({ dropped: () => ({ bytes: 9, packets: 1, bps: 3, pps: 0 }), refresh: async () => undefined });
      const r = json(await send(h, { method: Code.GET, path: `${P}/mid=5` }).res)[MS].scope[0];
      assert.deepEqual([r["bytes-dropped"], r["pkts-dropped"], r["bps-dropped"], r["pps-dropped"]], ["9", "1", "3", "0"]);
      h.setMetricsSource(undefined);
      assert.equal(json(await send(h, { method: Code.GET, path: `${P}/mid=5` }).res)[MS].scope[0]["bytes-dropped"], undefined);
    });

    it("a source that never answers delays a GET by at most 500 ms, which then carries the last numbers", async () => {
      make({ metrics: { dropped: () => ({ bytes: 128, packets: 1 }), refresh: () => new Promise<void>(() => undefined) } });
      await send(h, { method: Code.PUT, path: `${P}/mid=6`, body: good() }).res;
      const r = await Promise.race([
        send(h, { method: Code.GET, path: `${P}/mid=6` }).res,
        new Promise<undefined>((ok) => setTimeout(() => ok(undefined), 3000)),
      ]);
      assert.ok(r, "answered");
      assert.equal(json(r)[MS].scope[0]["pkts-dropped"], "1");
    });
  });

  describe("PUT /mitigate", () => {
    it("2.01 with mid, granted lifetime and status 1 when no decision is waited for; emits 'mitigation'", async () => {
      const s = send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() });
      const r = await s.res;
      assert.equal(r.code, Code.Created);
      assert.equal(r.contentFormat, CONTENT_FORMAT_DOTS_CBOR);
      assert.deepEqual(json(r)[MS].scope[0], { mid: 1, lifetime: 3600, status: "attack-mitigation-in-progress" });
      assert.equal(events.length, 1);
      assert.equal(events[0].kind, "new");
      assert.equal(events[0].cuid, "abc");
      assert.deepEqual(events[0].scope[SP], ["203.0.113.5/32"]);
    });

    it("answers with the decision when it arrives within decisionWaitMs (enforced -> status 2)", async () => {
      make({ decisionWaitMs: 5000 });
      h.on("mitigation", (e) => setImmediate(() => h.decide({ mid: e.mid, outcome: "enforced" })));
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=2`, body: good() }).res;
      assert.equal(r.code, Code.Created);
      assert.equal(json(r)[MS].scope[0].status, "attack-successfully-mitigated");
    });

    it("a late decision is notified to observers; failed -> status 4", async () => {
      make({ decisionWaitMs: 10 });
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=3`, body: good() }).res;
      assert.equal(json(r)[MS].scope[0].status, "attack-mitigation-in-progress");
      const obs = send(h, { method: Code.GET, path: `${P}/mid=3`, observe: 0 });
      assert.equal((await obs.res).code, Code.Content);
      h.decide({ mid: 3, outcome: "failed", detail: "no NAT entry" });
      assert.equal(obs.observer!.notes.length, 1);
      assert.equal(json(obs.observer!.notes[0])[MS].scope[0].status, "attack-exceeded-capability");
    });

    it("legitimate while unanswered -> 4.09 conflict-cause 4 and nothing kept", async () => {
      make({ decisionWaitMs: 5000 });
      h.on("mitigation", (e) => h.decide({ mid: e.mid, outcome: "legitimate" }));
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=4`, body: good() }).res;
      assert.equal(r.code, Code.Conflict);
      assert.equal(json(r)[MS].scope[0]["conflict-information"]["conflict-cause"], "request-rejected-legitimate-traffic");
      assert.equal(store.get("abc", 4), undefined);
      assert.equal((await send(h, { method: Code.GET, path: `${P}/mid=4` }).res).code, Code.NotFound);
    });

    it("issue 12 #5: legitimate while unanswered -> 4.09 with retry-timer; a resend inside it gets 4.09 again, not a new mitigation", async () => {
      make({ decisionWaitMs: 5000, legitimateRetryS: 120 });
      h.once("mitigation", (e) => h.decide({ mid: e.mid, outcome: "legitimate" }));
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=4`, body: good() }).res;
      const first = json(r)[MS].scope[0]["conflict-information"];
      assert.deepEqual(Object.keys(first).sort(), ["conflict-cause", "retry-timer"]);
      assert.equal(first["conflict-cause"], "request-rejected-legitimate-traffic");
      assert.equal(Number(first["retry-timer"]), 120);
      const again = await send(h, { method: Code.PUT, path: `${P}/mid=4`, body: good() }).res;
      assert.equal(again.code, Code.Conflict);
      const ci = json(again)[MS].scope[0]["conflict-information"];
      assert.ok(Number(ci["retry-timer"]) > 0 && Number(ci["retry-timer"]) <= 120, JSON.stringify(ci));
      assert.equal(events.length, 1, "the resend was not handed on for a decision");
    });

    it("issue 12 #3: the overlap 4.09 carries conflict-cause and conflict-scope only (no conflict-status)", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=10`, body: good() }).res;
      const c = await send(h, { method: Code.PUT, path: `${P}/mid=9`, body: good({ [SP]: ["203.0.113.99/32"] }) }).res;
      assert.equal(c.code, Code.Conflict);
      assert.deepEqual(Object.keys(json(c)[MS].scope[0]["conflict-information"]).sort(), ["conflict-cause", "conflict-scope"]);
    });

    it("issue 12 #8: a cuid bound to one peer answers another peer 4.09 cuid-collision with conflict-cause only", async () => {
      assert.equal((await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good(), peer: "psk:isp-a" }).res).code, Code.Created);
      const c = await send(h, {
        method: Code.PUT,
        path: `${P}/mid=2`,
        body: good({ "target-prefix": ["198.51.100.8/32"] }),
        peer: "psk:isp-b",
      }).res;
      assert.equal(c.code, Code.Conflict);
      assert.deepEqual(json(c)[MS].scope, [{ "conflict-information": { "conflict-cause": "cuid-collision" } }]);
      assert.equal(store.get("abc", 2), undefined);
      const same = send(h, {
        method: Code.PUT,
        path: `${P}/mid=2`,
        body: good({ "target-prefix": ["198.51.100.8/32"] }),
        peer: "psk:isp-a",
      });
      assert.equal((await same.res).code, Code.Created);
    });

    it("issue 12 #1: the 2.01 grants min(requested, max lifetime)", async () => {
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=3`, body: good({ lifetime: 4294967295 }) }).res;
      assert.equal(r.code, Code.Created);
      assert.equal(json(r)[MS].scope[0].lifetime, 86400);
    });

    it("issue 12 #4: an efficacy update shaped like RFC 9132 Figure 16 (no lifetime) -> 2.04, lifetime kept", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=7`, body: good({ lifetime: 900 }) }).res;
      const fig16 = request({ "target-prefix": ["198.51.100.7/32"], [SP]: ["203.0.113.5/32"], "attack-status": "under-attack" });
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=7`, body: fig16, ifMatch: [Buffer.alloc(0)] }).res;
      assert.equal(r.code, Code.Changed, diag(r));
      assert.equal(json(r)[MS].scope[0].lifetime, 900);
      assert.equal(store.get("abc", 7)!.attackStatus, 1);
    });

    it("legitimate after the answer -> notification with conflict-cause 4 and the mitigation deactivated", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=5`, body: good() }).res;
      const obs = send(h, { method: Code.GET, path: P, observe: 0 });
      await obs.res;
      h.decide({ mid: 5, outcome: "legitimate" });
      const n = json(obs.observer!.notes[0])[MS].scope[0];
      assert.equal(n.mid, 5);
      assert.equal(n["conflict-information"]["conflict-cause"], "request-rejected-legitimate-traffic");
      assert.equal(store.activeCount(), 0);
      assert.throws(() => h.decide({ mid: 5, outcome: "enforced" }), /no active mitigation/);
    });

    it("refresh with the same parameters -> 2.04 with the new lifetime; changed parameters -> 4.00", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=6`, body: good() }).res;
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=6`, body: good({ lifetime: 60 }) }).res;
      assert.equal(r.code, Code.Changed);
      assert.equal(json(r)[MS].scope[0].lifetime, 60);
      assert.equal(events[1].kind, "refresh");
      const bad = await send(h, { method: Code.PUT, path: `${P}/mid=6`, body: good({ "target-prefix": ["198.51.100.8/32"] }) }).res;
      assert.equal(bad.code, Code.BadRequest);
      assert.match(diag(bad), /unchanged except lifetime/);
    });

    it("efficacy update (empty If-Match): 2.04 on a known mid, silence on an unknown one, 4.00 without attack-status", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=7`, body: good() }).res;
      const r = await send(h, {
        method: Code.PUT,
        path: `${P}/mid=7`,
        body: good({ "attack-status": "under-attack" }),
        ifMatch: [Buffer.alloc(0)],
      }).res;
      assert.equal(r.code, Code.Changed);
      assert.equal(events.at(-1)!.kind, "efficacy");
      let answered = false;
      const unknown = send(h, {
        method: Code.PUT,
        path: `${P}/mid=99`,
        body: good({ "attack-status": "under-attack" }),
        ifMatch: [Buffer.alloc(0)],
      });
      unknown.res.then(
        () => (answered = true),
        () => (answered = true),
      );
      await new Promise((res) => setImmediate(res));
      assert.equal(answered, false);
      assert.equal(unknown.ignored, true, "the exchange is ended without a response");
      assert.equal(store.get("abc", 99), undefined);
      const noStatus = await send(h, { method: Code.PUT, path: `${P}/mid=7`, body: good(), ifMatch: [Buffer.alloc(0)] }).res;
      assert.equal(noStatus.code, Code.BadRequest);
      assert.match(diag(noStatus), /attack-status/);
    });

    it("overlap: the higher mid replaces the lower (ended 'replaced'); a lower new mid -> 4.09 cause 1 with conflict-scope", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=10`, body: good() }).res;
      assert.equal((await send(h, { method: Code.PUT, path: `${P}/mid=11`, body: good() }).res).code, Code.Created);
      assert.deepEqual(
        ended.map((e) => [e.mid, e.reason]),
        [[10, "replaced"]],
      );
      const c = await send(h, { method: Code.PUT, path: `${P}/mid=9`, body: good() }).res;
      assert.equal(c.code, Code.Conflict);
      const ci = json(c)[MS].scope[0]["conflict-information"];
      assert.equal(ci["conflict-cause"], "overlapping-targets");
      assert.deepEqual(ci["conflict-scope"], { "target-prefix": ["198.51.100.7/32"] });
    });

    const badCases: Array<[string, Record<string, unknown> | Buffer, RegExp]> = [
      ["trigger-mitigation false", good({ "trigger-mitigation": false }), /trigger-mitigation/],
      ["source outside home prefixes", good({ [SP]: ["192.0.2.1/32"] }), /source-prefix.*(outside|not inside) this home/],
      ["loopback source", good({ [SP]: ["127.0.0.1/32"] }), /loopback/],
      ["missing source-prefix", request({ "target-prefix": ["198.51.100.7/32"], lifetime: 3600 }), /source-prefix is mandatory/],
      ["missing target-prefix", request({ [SP]: ["203.0.113.5/32"], lifetime: 3600 }), /target-prefix is mandatory/],
      ["missing lifetime", request({ "target-prefix": ["198.51.100.7/32"], [SP]: ["203.0.113.5/32"] }), /lifetime is mandatory/],
      ["lifetime 0", good({ lifetime: 0 }), /lifetime 0/],
      ["two scopes", { [MS]: { scope: [good()[MS].scope[0], good()[MS].scope[0]] } }, /exactly one scope/],
      ["cuid in body", good({ cuid: "abc" }), /cuid.*Uri-Path/],
      ["unknown comprehension-required key", Buffer.from("a101a10281a1186301", "hex"), /99/],
      ["not CBOR", Buffer.from("ff", "hex"), /CBOR body/],
    ];
    for (const [name, body, re] of badCases) {
      it(`4.00 with a diagnostic naming the field: ${name}`, async () => {
        const r = await send(h, { method: Code.PUT, path: `${P}/mid=20`, body }).res;
        assert.equal(r.code, Code.BadRequest, diag(r));
        assert.equal(r.contentFormat, CONTENT_FORMAT_TEXT);
        assert.match(diag(r), re);
        assert.equal(store.get("abc", 20), undefined);
      });
    }

    it("4.00 naming target-prefix for multicast, broadcast, the home prefix's broadcast and unspecified targets; nothing stored", async () => {
      const cases: Array<[string, RegExp]> = [
        ["224.0.0.1/32", /multicast/],
        ["239.255.255.250/32", /multicast/],
        ["ff02::1/128", /multicast/],
        ["ff05::1:3/128", /multicast/],
        ["255.255.255.255/32", /broadcast/],
        ["203.0.113.255/32", /broadcast address of a home prefix/],
        ["0.0.0.0/32", /unspecified/],
        ["::/128", /unspecified/],
      ];
      for (const [target, why] of cases) {
        const r = await send(h, { method: Code.PUT, path: `${P}/mid=30`, body: good({ "target-prefix": [target] }) }).res;
        assert.equal(r.code, Code.BadRequest, `${target}: ${diag(r)}`);
        assert.match(diag(r), /^scope\[0\]\.target-prefix\[0\]: /, target);
        assert.match(diag(r), why, target);
        assert.equal(store.get("abc", 30), undefined, target);
      }
      // A unicast address whose last octet is 255 outside the home's prefixes is an ordinary target.
      const ok = await send(h, { method: Code.PUT, path: `${P}/mid=31`, body: good({ "target-prefix": ["198.51.100.255/32"] }) }).res;
      assert.equal(ok.code, Code.Created, diag(ok));
    });

    it("a request with many bad fields gets a 4.00 whose diagnostic still fits one datagram (R13, R17)", async () => {
      const targets = Array.from({ length: 60 }, (_, i) => `198.51.${i}.7/33`);
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=21`, body: good({ "target-prefix": targets }) }).res;
      assert.equal(r.code, Code.BadRequest);
      assert.ok(r.payload!.length <= 512, `diagnostic of ${r.payload!.length} bytes`);
      assert.match(diag(r), /^scope\[0\]\.target-prefix\[0\]: .*prefix length 33/);
      assert.match(diag(r), /\.\.\.$/, "marked as cut");
    });

    it("-1 when indefinite is not allowed: 2.01 granting the finite fallback, also on refresh; remaining lifetime is finite", async () => {
      const r = await send(h, { method: Code.PUT, path: `${P}/mid=22`, body: good({ lifetime: -1 }) }).res;
      assert.equal(r.code, Code.Created, diag(r));
      assert.equal(json(r)[MS].scope[0].lifetime, 3600, "granted lifetime in the answer");
      const again = await send(h, { method: Code.PUT, path: `${P}/mid=22`, body: good({ lifetime: -1 }) }).res;
      assert.equal(again.code, Code.Changed);
      assert.equal(json(again)[MS].scope[0].lifetime, 3600);
      const st = await send(h, { method: Code.GET, path: `${P}/mid=22` }).res;
      const left = json(st)[MS].scope[0].lifetime;
      assert.ok(left > 0 && left <= 3600, `remaining ${left}`);
    });

    it("4.00 for missing mid, empty cuid, mid out of uint32; 4.15 for a wrong Content-Format", async () => {
      assert.equal((await send(h, { method: Code.PUT, path: P, body: good() }).res).code, Code.BadRequest);
      assert.equal(
        (await send(h, { method: Code.PUT, path: "/.well-known/dots/mitigate/cuid=/mid=1", body: good() }).res).code,
        Code.BadRequest,
      );
      assert.equal((await send(h, { method: Code.PUT, path: `${P}/mid=4294967296`, body: good() }).res).code, Code.BadRequest);
      const cf = await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good(), cf: 50 }).res;
      assert.equal(cf.code, Code.UnsupportedContentFormat);
      assert.match(diag(cf), /271/);
      assert.equal(
        (await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good(), cf: null }).res).code,
        Code.UnsupportedContentFormat,
      );
    });

    it("-1 lifetime is granted when allowed; IPv6 sources inside the home prefix are accepted", async () => {
      make({ allowIndefiniteLifetime: true });
      const r = await send(h, {
        method: Code.PUT,
        path: `${P}/mid=1`,
        body: request({ "target-prefix": ["2001:db8:c000::/128"], [SP]: ["2001:db8:1::1/128"], lifetime: -1 }),
      }).res;
      assert.equal(r.code, Code.Created);
      assert.equal(json(r)[MS].scope[0].lifetime, -1);
    });

    it("a NON repeat of a PUT still waiting for its decision gets the same answer", async () => {
      make({ decisionWaitMs: 5000 });
      const a = send(h, { method: Code.PUT, path: `${P}/mid=30`, body: good() });
      const b = send(h, { method: Code.PUT, path: `${P}/mid=30`, body: good() });
      h.decide({ mid: 30, outcome: "enforced" });
      const [ra, rb] = await Promise.all([a.res, b.res]);
      assert.equal(ra.code, Code.Created);
      assert.equal(rb.code, Code.Created);
      assert.equal(json(rb)[MS].scope[0].status, "attack-successfully-mitigated");
      assert.equal(events.length, 1);
      const c = send(h, { method: Code.PUT, path: `${P}/mid=31`, body: good() });
      const changed = await send(h, { method: Code.PUT, path: `${P}/mid=31`, body: good({ "target-prefix": ["198.51.100.99/32"] }) }).res;
      assert.equal(changed.code, Code.BadRequest, "a repeat that changes the parameters is no repeat");
      h.decide({ mid: 31, outcome: "pending" });
      assert.equal((await c.res).code, Code.Created);
    });
  });

  describe("GET and DELETE /mitigate", () => {
    it("GET one / all -> 2.05 with status, remaining lifetime and mitigation-start; 4.04 when unknown", async () => {
      assert.equal((await send(h, { method: Code.GET, path: P }).res).code, Code.NotFound);
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
      await send(h, { method: Code.PUT, path: `${P}/mid=2`, body: good({ "target-prefix": ["198.51.100.9/32"] }) }).res;
      const all = await send(h, { method: Code.GET, path: P }).res;
      assert.equal(all.code, Code.Content);
      const scopes = json(all)[MS].scope;
      assert.deepEqual(
        scopes.map((s: any) => s.mid),
        [1, 2],
      );
      assert.equal(scopes[0].lifetime, 3600);
      assert.match(scopes[0]["mitigation-start"], /^\d+$/);
      assert.equal((await send(h, { method: Code.GET, path: `${P}/mid=3` }).res).code, Code.NotFound);
      assert.equal((await send(h, { method: Code.GET, path: "/.well-known/dots/mitigate/cuid=other" }).res).code, Code.NotFound);
    });

    it("DELETE -> 2.02 even for unknown mids; an enforced one reports status 5, then ends ('withdrawn')", async () => {
      assert.equal((await send(h, { method: Code.DELETE, path: `${P}/mid=77` }).res).code, Code.Deleted);
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
      h.decide({ mid: 1, outcome: "enforced" });
      const obs = send(h, { method: Code.GET, path: `${P}/mid=1`, observe: 0 });
      await obs.res;
      const del = await send(h, { method: Code.DELETE, path: `${P}/mid=1` }).res;
      assert.equal(del.code, Code.Deleted);
      assert.equal(del.payload, undefined);
      assert.equal(json(obs.observer!.notes[0])[MS].scope[0].status, "dots-client-withdrawn-mitigation");
      await new Promise<void>((res) => h.once("ended", () => res()));
      assert.deepEqual(
        ended.map((e) => [e.mid, e.reason]),
        [[1, "withdrawn"]],
      );
      assert.equal(json(obs.observer!.notes.at(-1)!)[MS].scope[0].status, "attack-mitigation-terminated");
      assert.equal((await send(h, { method: Code.GET, path: `${P}/mid=1` }).res).code, Code.NotFound);
      assert.equal((await send(h, { method: Code.DELETE, path: P }).res).code, Code.BadRequest);
    });

    it("GET with Observe=1 cancels the observation; other methods -> 4.05; unknown resources -> 4.04", async () => {
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
      const obs = send(h, { method: Code.GET, path: P, observe: 0 });
      await obs.res;
      assert.equal(h.observerCount(), 1);
      await send(h, { method: Code.GET, path: P, observe: 1 }).res;
      assert.equal(h.observerCount(), 0);
      assert.equal(obs.observer!.active, false);
      assert.equal((await send(h, { method: Code.POST, path: `${P}/mid=1`, body: good() }).res).code, Code.MethodNotAllowed);
      assert.equal((await send(h, { method: Code.GET, path: "/.well-known/dots/tm" }).res).code, Code.NotFound);
      assert.equal((await send(h, { method: Code.GET, path: "/other" }).res).code, Code.NotFound);
    });

    it("notifications to one observer are spaced by notifyMinIntervalMs, merging changes (latest state per mid)", async () => {
      make({ notifyMinIntervalMs: 40 });
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
      await send(h, { method: Code.PUT, path: `${P}/mid=2`, body: good({ "target-prefix": ["198.51.100.9/32"] }) }).res;
      const obs = send(h, { method: Code.GET, path: P, observe: 0 });
      await obs.res;
      h.decide({ mid: 1, outcome: "pending" });
      h.decide({ mid: 1, outcome: "enforced" });
      h.decide({ mid: 2, outcome: "failed" });
      assert.equal(obs.observer!.notes.length, 0, "too soon after the registration answer");
      while (obs.observer!.notes.length === 0) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 60));
      assert.equal(obs.observer!.notes.length, 1);
      assert.deepEqual(
        json(obs.observer!.notes[0])[MS].scope.map((x: any) => [x.mid, x.status]),
        [
          [1, "attack-successfully-mitigated"],
          [2, "attack-exceeded-capability"],
        ],
      );
    });

    it("observers also get the status periodically", async () => {
      make({ statusPeriodMs: 20 });
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
      const obs = send(h, { method: Code.GET, path: `${P}/mid=1`, observe: 0 });
      await obs.res;
      while (obs.observer!.notes.length < 2) await new Promise((r) => setTimeout(r, 5));
      assert.equal(json(obs.observer!.notes[1])[MS].scope[0].mid, 1);
      h.dropConnectionState();
      const n = obs.observer!.notes.length;
      await new Promise((r) => setTimeout(r, 60));
      assert.equal(obs.observer!.notes.length, n, "nothing after the connection state is dropped");
    });

    it("expiry ends the mitigation and notifies observers", async () => {
      store.clear();
      store = new MitigationStore({ msPerSecond: 5 });
      h = new HomeResources({ store, config, codec, homePrefixes: ["203.0.113.0/24"], decisionWaitMs: 0 });
      h.on("ended", (e) => ended.push(e));
      await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good({ lifetime: 2 }) }).res;
      await new Promise<void>((res) => h.once("ended", () => res()));
      assert.deepEqual(
        ended.map((e) => [e.mid, e.reason]),
        [[1, "expired"]],
      );
    });
  });

  describe("no base redirects (RFC 9066 section 5.2.2, R50)", () => {
    it("a full table answers 4.29 with a diagnostic, never 5.03 or a redirected-signal body, whatever is asked", async () => {
      store = new MitigationStore({ maxPerClient: 2, maxClients: 1 });
      h = new HomeResources({ store, config, codec, homePrefixes: ["203.0.113.0/24"], decisionWaitMs: 0 });
      const answers: ResourceResponse[] = [];
      const ask = async (r: Parameters<typeof send>[1]) => {
        const x = await send(h, r).res;
        answers.push(x);
        return x;
      };
      assert.equal((await ask({ method: Code.PUT, path: `${P}/mid=1`, body: good({ [SP]: ["203.0.113.1/32"] }) })).code, Code.Created);
      assert.equal(
        (
          await ask({
            method: Code.PUT,
            path: `${P}/mid=2`,
            body: good({ [SP]: ["203.0.113.2/32"], "target-prefix": ["198.51.100.8/32"] }),
          })
        ).code,
        Code.Created,
      );
      const full = await ask({
        method: Code.PUT,
        path: `${P}/mid=3`,
        body: good({ [SP]: ["203.0.113.3/32"], "target-prefix": ["198.51.100.9/32"] }),
      });
      assert.equal(full.code, Code.TooManyRequests);
      assert.match(diag(full), /too many mitigations/);
      const otherClient = await ask({
        method: Code.PUT,
        path: "/.well-known/dots/mitigate/cuid=other/mid=1",
        body: good({ [SP]: ["203.0.113.4/32"] }),
      });
      assert.equal(otherClient.code, Code.TooManyRequests);
      await ask({ method: Code.GET, path: P });
      await ask({ method: Code.GET, path: "/.well-known/dots/config" });
      await ask({
        method: Code.PUT,
        path: "/.well-known/dots/redirect",
        body: { "ietf-dots-signal-channel:redirected-signal": { "ietf-dots-call-home:alt-ch-client": "alt.example" } },
      });
      await ask({ method: Code.POST, path: P });
      await ask({ method: Code.GET, path: "/.well-known/dots/nothing" });
      for (const a of answers) {
        assert.notEqual(a.code, Code.ServiceUnavailable, `never 5.03 (got it for ${diag(a)})`);
        if (a.contentFormat === CONTENT_FORMAT_DOTS_CBOR && a.payload)
          assert.equal("ietf-dots-signal-channel:redirected-signal" in json(a), false);
      }
    });
  });

  describe("/config, /hb, /redirect", () => {
    it("GET /config -> 2.05 with Max-Age; PUT sid -> 2.01/2.04/4.22/4.00; DELETE -> 2.02 and defaults", async () => {
      const g = await send(h, { method: Code.GET, path: "/.well-known/dots/config" }).res;
      assert.equal(g.code, Code.Content);
      assert.equal(g.maxAge, 3600);
      assert.equal(json(g)[SIGNAL_CONFIG_KEY]["idle-config"]["heartbeat-interval"]["current-value"], 30);
      const put = (sid: string, hb: number) =>
        send(h, {
          method: Code.PUT,
          path: `/.well-known/dots/config/${sid}`,
          body: buildConfigPutJson({ idle: { heartbeatInterval: hb } }),
        }).res;
      assert.equal((await put("sid=4", 60)).code, Code.Created);
      assert.equal((await put("sid=4", 90)).code, Code.Changed);
      const r422 = await put("sid=5", 1);
      assert.equal(r422.code, Code.UnprocessableEntity);
      assert.match(diag(r422), /heartbeat-interval/);
      assert.equal((await put("cuid=x", 60)).code, Code.BadRequest);
      assert.equal(
        (
          await send(h, {
            method: Code.PUT,
            path: "/.well-known/dots/config",
            body: buildConfigPutJson({ idle: { heartbeatInterval: 60 } }),
          }).res
        ).code,
        Code.BadRequest,
      );
      assert.equal(config.active().heartbeatInterval, 90);
      assert.equal((await send(h, { method: Code.DELETE, path: "/.well-known/dots/config/sid=4" }).res).code, Code.Deleted);
      assert.equal(config.active().heartbeatInterval, 30);
    });

    it("config observers are notified when the configuration changes", async () => {
      const obs = send(h, { method: Code.GET, path: "/.well-known/dots/config", observe: 0 });
      await obs.res;
      await send(h, {
        method: Code.PUT,
        path: "/.well-known/dots/config/sid=1",
        body: buildConfigPutJson({ idle: { heartbeatInterval: 45 } }),
      }).res;
      assert.equal(json(obs.observer!.notes[0])[SIGNAL_CONFIG_KEY]["idle-config"]["heartbeat-interval"]["current-value"], 45);
    });

    it("PUT /hb -> 2.04 empty and a 'heartbeat' event; extra segments or missing peer-hb-status -> 4.00", async () => {
      const beats: boolean[] = [];
      h.on("heartbeat", (b) => beats.push(b.peerHbStatus));
      const r = await send(h, { method: Code.PUT, path: "/.well-known/dots/hb", body: buildHeartbeatJson(true) }).res;
      assert.equal(r.code, Code.Changed);
      assert.equal(r.payload, undefined);
      assert.deepEqual(beats, [true]);
      assert.equal(
        (await send(h, { method: Code.PUT, path: "/.well-known/dots/hb/cuid=a", body: buildHeartbeatJson(true) }).res).code,
        Code.BadRequest,
      );
      const bad = await send(h, { method: Code.PUT, path: "/.well-known/dots/hb", body: { "ietf-dots-signal-channel:heartbeat": {} } }).res;
      assert.equal(bad.code, Code.BadRequest);
      assert.match(diag(bad), /peer-hb-status/);
    });

    it("PUT /redirect: 2.01 then 'redirect' when it can be honoured; 4.00 when not, or when alt-ch-client is missing", async () => {
      const seen: RedirectTarget[] = [];
      let verdict: string | undefined = undefined; // set to a refusal further down
      make({ canRedirect: async () => verdict });
      h.on("redirect", (t) => seen.push(t));
      const body = {
        "ietf-dots-signal-channel:redirected-signal": {
          "ietf-dots-call-home:alt-ch-client": "alt.example",
          "ietf-dots-call-home:alt-ch-client-record": ["127.0.0.2"],
          "ietf-dots-call-home:ttl": 600,
        },
      };
      const ok = await send(h, { method: Code.PUT, path: "/.well-known/dots/redirect/cuid=abc/mid=3", body }).res;
      assert.equal(ok.code, Code.Created);
      assert.deepEqual(seen, [{ altClient: "alt.example", records: ["127.0.0.2"], ttl: 600 }]);
      verdict = "cannot resolve";
      const no = await send(h, { method: Code.PUT, path: "/.well-known/dots/redirect", body }).res;
      assert.equal(no.code, Code.BadRequest);
      assert.match(diag(no), /cannot resolve/);
      const missing = await send(h, {
        method: Code.PUT,
        path: "/.well-known/dots/redirect",
        body: { "ietf-dots-signal-channel:redirected-signal": { "ietf-dots-call-home:ttl": 5 } },
      }).res;
      assert.equal(missing.code, Code.BadRequest);
      assert.match(diag(missing), /alt-ch-client/);
      assert.equal(seen.length, 1);
    });
  });
});

describe("dots/home-resources durable answers (persist seam)", () => {
  let store: MitigationStore;
  let h: HomeResources;
  afterEach(() => {
    h.dropConnectionState();
    store.clear();
  });
  const make = (persist: () => Promise<void>) => {
    store = new MitigationStore({ terminatingPeriodMs: 0 });
    h = new HomeResources({ store, config: new SessionConfig(), codec, homePrefixes: ["203.0.113.0/24"], decisionWaitMs: 0, persist });
  };

  it("no answer and no hand-off leaves before the state that the answer acknowledges is durable", async () => {
    const gates: Array<() => void> = [];
    make(() => new Promise<void>((ok) => gates.push(ok)));
    const handed: number[] = [];
    h.on("mitigation", (e) => handed.push(e.mid));
    let answered = false;
    const s = send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() });
    void s.res.then(() => (answered = true));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual([answered, handed], [false, []], "nothing before the first write");
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(handed, [1], "handed on once the request itself is durable");
    assert.equal(answered, false, "the 2.01 waits for the write that holds its status");
    while (gates.length) gates.shift()!();
    assert.equal((await s.res).code, Code.Created);
    const d = send(h, { method: Code.DELETE, path: `${P}/mid=1` });
    await new Promise((r) => setImmediate(r));
    assert.equal(gates.length, 1, "a withdrawal is written before its 2.02");
    gates.shift()!();
    assert.equal((await d.res).code, Code.Deleted);
  });

  it("state that cannot be kept is not acknowledged: 5.03 with the reason, nothing enforced or held", async () => {
    make(() => Promise.reject(new Error("state file /x/h.state cannot be written: EROFS")));
    const errors: Error[] = [];
    const handed: number[] = [];
    h.on("error", (e) => errors.push(e));
    h.on("mitigation", (e) => handed.push(e.mid));
    const r = await send(h, { method: Code.PUT, path: `${P}/mid=1`, body: good() }).res;
    assert.equal(r.code, Code.ServiceUnavailable);
    assert.match(diag(r), /cannot be kept durably, not acknowledged: state file \/x\/h\.state cannot be written: EROFS/);
    assert.equal(store.get("abc", 1), undefined);
    assert.deepEqual(handed, []);
    assert.equal(errors.length, 1);
  });
});
