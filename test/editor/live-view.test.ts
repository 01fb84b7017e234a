// The live DOTS view's admin routes on a real Node-RED (own process, our package installed as npm
// would): a loopback call home shows its session, the mitigations on both sides, the pending
// consent and then the block; Approve through the route reaches the ISP as status 2, Reject as
// conflict-cause 4. With admin auth on, a request without a token or without the permission is
// refused, and a read-only user may look but not decide.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../support/ports";
import { PSK_HEX } from "../nodes/flows";
import { startNodeRed, type NodeRedProcess } from "./nr-process";
import { liveFlow, type LiveRec } from "./live-flow";
import type { LiveSnapshot } from "../../nodes/lib/live-view";

const ROUTE = "dots-call-home/live";

async function until<T>(what: string, check: () => Promise<T | undefined>, log: () => string, ms = 20000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${String(last ?? "")})\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("live DOTS view: admin routes on a real Node-RED", function () {
  this.timeout(90000);
  let tmp = "";
  let nr: NodeRedProcess | undefined;
  const api = (p: string, init?: RequestInit): Promise<Response> => fetch(nr!.url + p, init);
  const snapshot = async (): Promise<LiveSnapshot> => {
    const res = await api(ROUTE);
    assert.equal(res.status, 200);
    return (await res.json()) as LiveSnapshot;
  };
  const answers = async (): Promise<LiveRec[]> => (await (await api("api/dots-test/state")).json()) as LiveRec[];
  const decide = (mid: number, decision: string, filter = "fil"): Promise<Response> =>
    api(`${ROUTE}/filters/${filter}/consent`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ mid, decision }),
    });

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dots-live-"));
    nr = await startNodeRed(tmp);
  });
  after(async () => {
    await nr?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("no endpoints: empty lists, not an error", async () => {
    const s = await snapshot();
    assert.deepEqual([s.isp, s.home, s.filters], [[], [], []]);
    assert.ok(Array.isArray(s.errors));
  });

  it("shows the session, both sides' mitigations, the pending consent; Approve gives status 2 at the ISP and a block; Reject gives conflict-cause 4", async () => {
    const log = (): string => nr!.log();
    const port = await freePort();
    const res = await api("flows", {
      method: "POST",
      headers: { "content-type": "application/json", "Node-RED-Deployment-Type": "full" },
      body: JSON.stringify(liveFlow(port)),
    });
    assert.equal(res.status, 204, await res.text());

    const session = await until("the session in the view", async () => (await snapshot()).isp[0]?.sessions.rows[0], log);
    assert.equal(session.home, "home-1");
    assert.equal(session.identity, "home-1");
    assert.equal(session.transport, "dtls");
    assert.match(session.remote, /^127\.0\.0\.1:\d+$/);
    assert.ok(session.cipher.length > 0, "the cipher is known");
    assert.ok(Date.parse(session.since) <= Date.now());
    let s = await snapshot();
    assert.equal(s.isp[0].name, "ISP");
    assert.match(s.isp[0].listening ?? "", new RegExp(`127\\.0\\.0\\.1:${port} dtls`));
    await until("the home connected", async () => ((await snapshot()).home[0]?.connected ? true : undefined), log);
    s = await snapshot();
    assert.equal(s.home[0].name, "home router");
    assert.match(s.home[0].connection?.remote ?? "", new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.equal(s.filters[0].name, "blocker");
    assert.deepEqual([s.filters[0].blocks.total, s.filters[0].pending.total], [0, 0]);
    const text = JSON.stringify(s);
    assert.ok(!text.includes(PSK_HEX) && !text.includes(PSK_HEX.toUpperCase()), "no key in the snapshot");

    // A mitigation: pending consent at the home, status 1 at the ISP.
    assert.equal((await api("inject/go1", { method: "POST" })).status, 200);
    const pending = await until("a pending consent", async () => (await snapshot()).filters[0]?.pending.rows[0], log);
    assert.deepEqual(pending.devices, ["192.168.1.20"]);
    const mid = pending.mid;
    s = await snapshot();
    const ispM = s.isp[0].mitigations.rows.find((m) => m.mid === mid);
    assert.ok(ispM, JSON.stringify(s.isp[0].mitigations));
    assert.deepEqual([ispM.home, ispM.status, ispM.lifetime, ispM.connected], ["home-1", "attack-mitigation-in-progress", 600, true]);
    assert.ok(ispM.remaining > 590 && ispM.remaining <= 600, String(ispM.remaining));
    const homeM = s.home[0].mitigations.rows.find((m) => m.mid === mid);
    assert.ok(homeM, JSON.stringify(s.home[0].mitigations));
    assert.ok(homeM.lifetime > 590 && homeM.lifetime <= 600, `the home's remaining lifetime ${homeM.lifetime}`);

    // Approve through the route: the block appears, status 2 reaches the ISP.
    const ok = await decide(mid, "approve");
    assert.equal(ok.status, 202, await ok.text());
    const block = await until("the block", async () => (await snapshot()).filters[0]?.blocks.rows.find((b) => b.mid === mid), log);
    assert.deepEqual([block.action, block.devices], ["block", ["192.168.1.20"]]);
    assert.ok(block.remaining > 0 && block.remaining <= 600);
    await until(
      "status 2 at the ISP",
      async () => (await answers()).find((a) => a.topic === "status" && a.mid === mid && a.statusCode === 2),
      log,
    );
    await until(
      "status 2 in the view",
      async () =>
        (await snapshot()).isp[0].mitigations.rows.find((m) => m.mid === mid)?.status === "attack-successfully-mitigated"
          ? true
          : undefined,
      log,
    );
    assert.equal((await snapshot()).filters[0].pending.total, 0);
    // Deciding again: nothing is pending any more.
    assert.equal((await decide(mid, "approve")).status, 409);

    // The second mitigation, rejected through the route: conflict-cause 4 at the ISP, nothing blocked.
    assert.equal((await api("inject/go2", { method: "POST" })).status, 200);
    const second = await until("the second pending consent", async () => (await snapshot()).filters[0]?.pending.rows[0], log);
    assert.notEqual(second.mid, mid);
    const no = await decide(second.mid, "reject");
    assert.equal(no.status, 202, await no.text());
    const note = await until(
      "conflict at the ISP",
      async () => (await answers()).find((a) => a.topic === "status" && a.mid === second.mid && a.conflictCauseCode !== undefined),
      log,
    );
    assert.equal(note.conflictCauseCode, 4);
    s = await snapshot();
    assert.deepEqual(
      s.filters[0].blocks.rows.map((b) => b.mid),
      [mid],
      "only the approved mitigation is blocked",
    );
    assert.equal(s.filters[0].pending.total, 0);
  });

  it("bad requests get a clear error: bad mid, bad decision, unknown node", async () => {
    const bad = await decide(-1, "approve");
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /mid/);
    const what = await decide(1, "maybe");
    assert.equal(what.status, 400);
    assert.match(((await what.json()) as { error: string }).error, /approve.*reject/);
    const none = await decide(1, "approve", "no-such-node");
    assert.equal(none.status, 404);
  });
});

describe("live DOTS view: Node-RED admin auth applies", function () {
  this.timeout(60000);
  let tmp = "";
  let nr: NodeRedProcess | undefined;
  const users = [
    { username: "admin", password: "admin-pass-1", permissions: "*" },
    { username: "viewer", password: "viewer-pass-1", permissions: "read" },
  ];
  async function token(username: string, password: string, scope: string): Promise<string> {
    const res = await fetch(nr!.url + "auth/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ client_id: "node-red-admin", grant_type: "password", scope, username, password }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    return (JSON.parse(body) as { access_token: string }).access_token;
  }
  const get = (t?: string): Promise<Response> => fetch(nr!.url + ROUTE, { headers: t ? { authorization: `Bearer ${t}` } : {} });
  const post = (t?: string): Promise<Response> =>
    fetch(nr!.url + `${ROUTE}/filters/none/consent`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(t ? { authorization: `Bearer ${t}` } : {}) },
      body: JSON.stringify({ mid: 1, decision: "approve" }),
    });

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dots-live-auth-"));
    nr = await startNodeRed(tmp, { NR_TEST_USERS: JSON.stringify(users) });
  });
  after(async () => {
    await nr?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("no token: both routes refused", async () => {
    assert.equal((await get()).status, 401);
    assert.equal((await post()).status, 401);
    assert.equal((await get("not-a-token")).status, 401);
  });

  it("a read-only user sees the view but may not approve or reject", async () => {
    const t = await token("viewer", "viewer-pass-1", "read");
    assert.equal((await get(t)).status, 200);
    const refused = await post(t);
    assert.ok(refused.status === 401 || refused.status === 403, `refused, got ${refused.status}`);
  });

  it("an admin may decide (here: no such filter node, 404 past the permission check)", async () => {
    const t = await token("admin", "admin-pass-1", "*");
    assert.equal((await get(t)).status, 200);
    assert.equal((await post(t)).status, 404);
  });
});
