import { strict as assert } from "node:assert";
import { Code } from "../../../src/coap/message";
import {
  SessionConfig,
  SIGNAL_CONFIG_KEY,
  buildConfigPutJson,
  negotiatedSetsFromJson,
  parseConfigJson,
  toTransmissionParameters,
  ConfigParseError,
  DEFAULT_CONFIG_SET,
} from "../../../src/dots/session-config";

type Json = Record<string, any>;

describe("dots/session-config", () => {
  it("GET view carries RFC 9132 defaults with min/max, decimals as strings, for both sets", () => {
    const cfg = new SessionConfig();
    const view = cfg.toJson() as Json;
    const sc = view[SIGNAL_CONFIG_KEY];
    for (const set of ["mitigating-config", "idle-config"]) {
      assert.deepEqual(sc[set]["heartbeat-interval"], { "max-value": 240, "min-value": 15, "current-value": 30 });
      assert.deepEqual(sc[set]["missing-hb-allowed"], { "max-value": 20, "min-value": 3, "current-value": 15 });
      assert.deepEqual(sc[set]["max-retransmit"], { "max-value": 15, "min-value": 2, "current-value": 3 });
      assert.deepEqual(sc[set]["probing-rate"], { "max-value": 20, "min-value": 5, "current-value": 5 });
      assert.deepEqual(sc[set]["ack-timeout"], {
        "max-value-decimal": "30.00",
        "min-value-decimal": "1.00",
        "current-value-decimal": "2.00",
      });
      assert.deepEqual(sc[set]["ack-random-factor"], {
        "max-value-decimal": "4.00",
        "min-value-decimal": "1.10",
        "current-value-decimal": "1.50",
      });
    }
    assert.equal(cfg.maxAgeSeconds, 3600);
  });

  it("a home heartbeat interval below the default range widens the advertised minimum", () => {
    const cfg = new SessionConfig({ heartbeatInterval: 1 });
    const hb = (cfg.toJson() as Json)[SIGNAL_CONFIG_KEY]["idle-config"]["heartbeat-interval"];
    assert.deepEqual(hb, { "max-value": 240, "min-value": 1, "current-value": 1 });
    assert.equal(cfg.active().heartbeatInterval, 1);
  });

  it("heartbeat interval 0 is refused unless allowed", () => {
    assert.throws(() => new SessionConfig({ heartbeatInterval: 0 }), RangeError);
    const cfg = new SessionConfig({ heartbeatInterval: 0, allowHeartbeatDisable: true });
    assert.equal(cfg.active().heartbeatInterval, 0);
  });

  it("PUT new sid -> 2.01, same sid -> 2.04, values in force, change event emitted", () => {
    const cfg = new SessionConfig();
    const changes: number[] = [];
    cfg.on("change", (s) => changes.push(s.heartbeatInterval));
    const body = buildConfigPutJson({ idle: { heartbeatInterval: 60, ackTimeout: 3 } });
    assert.equal(cfg.put(7, body).code, Code.Created);
    assert.equal(cfg.sid, 7);
    assert.equal(cfg.active().heartbeatInterval, 60);
    assert.equal(cfg.active().ackTimeout, 3);
    assert.equal(cfg.set("mitigating").heartbeatInterval, 30);
    assert.equal(cfg.put(7, buildConfigPutJson({ idle: { heartbeatInterval: 90 } })).code, Code.Changed);
    // A PUT replaces the whole previous negotiation: ack-timeout is back to default.
    assert.equal(cfg.active().ackTimeout, 2);
    assert.deepEqual(changes, [60, 90]);
    assert.equal(cfg.put(8, buildConfigPutJson({ idle: { heartbeatInterval: 45 } })).code, Code.Created, "higher sid overrides");
    assert.equal(cfg.active().heartbeatInterval, 45);
  });

  it("PUT out of range -> 4.22 naming the field and range; nothing changes", () => {
    const cfg = new SessionConfig();
    const r = cfg.put(1, buildConfigPutJson({ mitigating: { heartbeatInterval: 5 } }));
    assert.equal(r.code, Code.UnprocessableEntity);
    assert.match(r.diagnostic!, /mitigating-config\/heartbeat-interval: 5 is outside 15\.\.240/);
    const r2 = cfg.put(1, buildConfigPutJson({ idle: { ackRandomFactor: 9 } }));
    assert.equal(r2.code, Code.UnprocessableEntity);
    assert.match(r2.diagnostic!, /ack-random-factor: 9\.00 is outside 1\.10\.\.4\.00/);
    const r3 = cfg.put(1, buildConfigPutJson({ idle: { heartbeatInterval: 0 } }));
    assert.equal(r3.code, Code.UnprocessableEntity);
    assert.equal(cfg.sid, undefined);
    assert.deepEqual(cfg.active(), { ...DEFAULT_CONFIG_SET });
  });

  it("PUT malformed -> 4.00 (unknown parameter, wrong value type, empty, lower sid)", () => {
    const cfg = new SessionConfig();
    const unknown = { [SIGNAL_CONFIG_KEY]: { "idle-config": { "nat-timer": { "current-value": 3 } } } };
    assert.equal(cfg.put(1, unknown).code, Code.BadRequest);
    assert.match(cfg.put(1, unknown).diagnostic!, /nat-timer/);
    const wrongType = { [SIGNAL_CONFIG_KEY]: { "idle-config": { "heartbeat-interval": { "current-value": "often" } } } };
    assert.equal(cfg.put(1, wrongType).code, Code.BadRequest);
    const decimalAsInt = { [SIGNAL_CONFIG_KEY]: { "idle-config": { "ack-timeout": { "current-value": 3 } } } };
    assert.match(cfg.put(1, decimalAsInt).diagnostic!, /current-value-decimal/);
    assert.equal(cfg.put(1, { [SIGNAL_CONFIG_KEY]: {} }).code, Code.BadRequest);
    assert.equal(cfg.put(1, "junk").code, Code.BadRequest);
    assert.equal(cfg.put(5, buildConfigPutJson({ idle: { heartbeatInterval: 20 } })).code, Code.Created);
    const stale = cfg.put(4, buildConfigPutJson({ idle: { heartbeatInterval: 25 } }));
    assert.equal(stale.code, Code.BadRequest);
    assert.match(stale.diagnostic!, /lower than the current sid 5/);
    assert.equal(cfg.put(-1, buildConfigPutJson({ idle: { heartbeatInterval: 25 } })).code, Code.BadRequest);
  });

  it("DELETE resets to the configured defaults and forgets the sid", () => {
    const cfg = new SessionConfig({ heartbeatInterval: 20 });
    cfg.put(3, buildConfigPutJson({ idle: { heartbeatInterval: 100 } }));
    cfg.reset();
    assert.equal(cfg.sid, undefined);
    assert.equal(cfg.active().heartbeatInterval, 20);
    assert.equal(cfg.put(1, buildConfigPutJson({ idle: { heartbeatInterval: 100 } })).code, Code.Created);
  });

  it("switches between idle-config and mitigating-config with mitigation activity", () => {
    const cfg = new SessionConfig({ idle: { heartbeatInterval: 60 }, mitigating: { heartbeatInterval: 20 } });
    const seen: number[] = [];
    cfg.on("change", (s) => seen.push(s.heartbeatInterval));
    assert.equal(cfg.active().heartbeatInterval, 60);
    cfg.setMitigating(true);
    assert.equal(cfg.active().heartbeatInterval, 20);
    cfg.setMitigating(true);
    cfg.setMitigating(false);
    assert.deepEqual(seen, [20, 60]);
  });

  it("ISP side reads the GET answer, falling back to defaults for absent parameters", () => {
    const home = new SessionConfig({ heartbeatInterval: 17 });
    const sets = negotiatedSetsFromJson(home.toJson());
    assert.equal(sets.idle.heartbeatInterval, 17);
    assert.equal(sets.mitigating.ackTimeout, 2);
    const partial = negotiatedSetsFromJson({ [SIGNAL_CONFIG_KEY]: { "idle-config": { "heartbeat-interval": { "current-value": 45 } } } });
    assert.equal(partial.idle.heartbeatInterval, 45);
    assert.deepEqual(partial.mitigating, { ...DEFAULT_CONFIG_SET });
    const parsed = parseConfigJson(home.toJson());
    assert.deepEqual(parsed.idle!.limits.ackTimeout, { min: 1, max: 30 });
    assert.throws(() => parseConfigJson({ other: 1 }), ConfigParseError);
  });

  it("converts a set to CoAP transmission parameters", () => {
    assert.deepEqual(toTransmissionParameters({ ...DEFAULT_CONFIG_SET }), { ackTimeoutMs: 2000, ackRandomFactor: 1.5, maxRetransmit: 3 });
  });
});
