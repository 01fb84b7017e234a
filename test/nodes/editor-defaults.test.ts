// The editor's defaults (literal numbers in the endpoint .html files, which cannot import TS) are
// the ones the runtime and the CLI use: src/dots/defaults.ts DEFAULTS.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { outRoot, repoRoot } from "./support";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DEFAULTS } = require(path.join(outRoot, "src", "dots", "defaults.js")) as { DEFAULTS: Record<string, number> };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { ispTuning } = require(path.join(outRoot, "nodes", "lib", "isp-endpoint.js")) as typeof import("../../nodes/lib/isp-endpoint");
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { MIN_TICKET_SECRET_LENGTH } = require(path.join(outRoot, "src", "transport", "dtls", "ticket.js")) as {
  MIN_TICKET_SECRET_LENGTH: number;
};

/** `name: { value: N` in a node's defaults block. */
function htmlDefault(type: string, name: string): number {
  const html = fs.readFileSync(path.join(repoRoot(), "nodes", type, `${type}.html`), "utf8");
  const m = new RegExp(`\\b${name}: \\{ value: (-?\\d+)`).exec(html);
  assert.ok(m, `${type}.html has no numeric default for ${name}`);
  return Number(m[1]);
}

describe("editor defaults equal DEFAULTS", () => {
  it("home endpoint: port, heartbeat interval, decision wait (ms), terminating period (s)", () => {
    assert.equal(htmlDefault("dots-home-endpoint", "port"), DEFAULTS.port);
    assert.equal(htmlDefault("dots-home-endpoint", "heartbeatInterval"), DEFAULTS.heartbeatIntervalS);
    assert.equal(htmlDefault("dots-home-endpoint", "decisionWait"), DEFAULTS.decisionWaitMs);
    assert.equal(htmlDefault("dots-home-endpoint", "terminatingPeriod") * 1000, DEFAULTS.terminatingPeriodMs);
  });

  it("ISP endpoint: port, drop-list failures, window (s), ban (s), DTLS handshakes per source", () => {
    assert.equal(htmlDefault("dots-isp-endpoint", "port"), DEFAULTS.port);
    assert.equal(htmlDefault("dots-isp-endpoint", "dropMaxFailures"), DEFAULTS.dropAfterFailures);
    assert.equal(htmlDefault("dots-isp-endpoint", "dropWindow") * 1000, DEFAULTS.dropWindowMs);
    assert.equal(htmlDefault("dots-isp-endpoint", "dropBan") * 1000, DEFAULTS.dropBanMs);
    assert.equal(htmlDefault("dots-isp-endpoint", "handshakesPerSource"), DEFAULTS.maxHandshakesPerSource);
  });

  it("ISP endpoint: the cookie round for tickets is off unless checked, as in `listen` (flows saved before the setting too); the ticket secret minimum is the transport's", () => {
    const html = fs.readFileSync(path.join(repoRoot(), "nodes", "dots-isp-endpoint", "dots-isp-endpoint.html"), "utf8");
    assert.match(html, /\bcookieAlways: \{ value: false \}/);
    // The ticket secret's minimum, which the editor checks before deploy, is the transport's.
    const min = /var MIN_TICKET_SECRET_LENGTH = (\d+);/.exec(html);
    assert.ok(min, "the editor names its ticket secret minimum");
    assert.equal(Number(min[1]), MIN_TICKET_SECRET_LENGTH);
    const settings = {
      port: 4647,
      host: "::",
      dtls: true,
      tls: false,
      psk: "p",
      extraPsks: [],
      tlsConfig: "",
      homePrefixes: "",
      allowUnscoped: false,
      dropMaxFailures: 5,
      dropWindow: 60,
      dropBan: 300,
    };
    assert.equal(ispTuning(settings).dtlsResumeWithoutCookie, undefined, "absent: the transport default (answered at once)");
    assert.equal(ispTuning({ ...settings, cookieAlways: false }).dtlsResumeWithoutCookie, undefined);
    assert.equal(ispTuning({ ...settings, cookieAlways: true }).dtlsResumeWithoutCookie, false);
    assert.equal(ispTuning(settings).maxDtlsHandshakesPerSource, DEFAULTS.maxHandshakesPerSource);
  });
});
