// The live DOTS view (routes under /dots-call-home/live), runtime half: a Node-RED plugin whose admin routes give the editor's sidebar
// a snapshot of the live-view registry (sessions, mitigations, blocks, pending consents, recent
// errors) and pass Approve / Reject to a filter-action node. Node-RED's admin auth applies: reading
// needs "dots-call-home.read" (any user with read), deciding "dots-call-home.write".
import type { NodeAPI } from "node-red";
import { liveView } from "../lib/live-view";

const LIVE_ROUTE = "/dots-call-home/live";

interface Req {
  params: Record<string, string>;
  body?: unknown;
}
interface Res {
  status(code: number): Res;
  json(body: unknown): void;
  set(name: string, value: string): Res;
}
type Handler = (req: Req, res: Res) => void;
interface AdminApp {
  get(path: string, ...handlers: unknown[]): void;
  post(path: string, ...handlers: unknown[]): void;
}
interface PluginApi {
  plugins: { registerPlugin(id: string, def: Record<string, unknown>): void };
  httpAdmin: AdminApp;
  auth: { needsPermission(permission: string): unknown };
}

export = function (RED: NodeAPI): void {
  const api = RED as unknown as PluginApi;
  api.plugins.registerPlugin("dots-live-view", { type: "dots-call-home-live-view" });

  // However many editors poll, a snapshot is built at most once per second.
  let cached: { at: number; body: unknown } | undefined;
  const read: Handler = (_req, res) => {
    const now = Date.now();
    if (!cached || now - cached.at >= 1000 || now < cached.at) cached = { at: now, body: liveView.snapshot(now) };
    res.set("Cache-Control", "no-store").json(cached.body);
  };
  // POST .../filters/<node id>/consent {mid, cuid?, decision: "approve"|"reject"}
  const decide: Handler = (req, res) => {
    const body = (req.body && typeof req.body === "object" ? req.body : {}) as Record<string, unknown>;
    const mid = Number(body.mid);
    const decision = body.decision;
    const cuid = body.cuid === undefined || body.cuid === "" ? undefined : body.cuid;
    if (!Number.isInteger(mid) || mid < 0 || mid > 0xffffffff)
      return void res.status(400).json({ error: "mid must be a whole number 0..4294967295" });
    if (decision !== "approve" && decision !== "reject")
      return void res.status(400).json({ error: 'decision must be "approve" or "reject"' });
    if (cuid !== undefined && (typeof cuid !== "string" || cuid.length > 64))
      return void res.status(400).json({ error: "cuid must be a string of at most 64 characters" });
    const outcome = liveView.decide(String(req.params.id), mid, cuid, decision === "approve");
    cached = undefined;
    if (outcome === "unknown-node") return void res.status(404).json({ error: "no running dots-filter-action node with that id" });
    if (outcome === "not-pending") return void res.status(409).json({ error: `mid ${mid} is not waiting for consent` });
    res.status(202).json({ mid, decision });
  };
  api.httpAdmin.get(LIVE_ROUTE, api.auth.needsPermission("dots-call-home.read"), read);
  api.httpAdmin.post(`${LIVE_ROUTE}/filters/:id/consent`, api.auth.needsPermission("dots-call-home.write"), decide);
};
