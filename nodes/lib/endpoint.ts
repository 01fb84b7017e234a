// What an endpoint config node (dots-isp-endpoint, dots-home-endpoint) shares with the listener
// and dialer nodes that use it: the engine lease from the process-wide registry, the users that
// receive its events, and its status. A v1 listener/dialer without an endpoint reference builds
// the same hub from its inline settings (an implicit endpoint keyed by its own id).
import * as fs from "node:fs";
import * as path from "node:path";
import type { Node, NodeAPI } from "node-red";
import { engines, type Engine, type Lease, type RuntimeEvents } from "./endpoint-registry";
import { toError } from "./common";
import { liveView } from "./live-view";
import type { DotsPskNode } from "./types";
import type { PskCredential } from "../../src/dots/api";

/** A status in words the user node translates with its own catalog ("<type>.status.<key>"). */
export interface EndpointStatus {
  fill: "red" | "green" | "yellow" | "grey";
  shape: "dot" | "ring";
  key: string;
  args?: Record<string, unknown>;
}

/** An endpoint config node: its hub is what listener/dialer nodes use. */
export interface EndpointNode<E extends Engine> extends Node {
  hub: EndpointHub<E>;
}

/** A listener or dialer node using an endpoint. */
export interface EndpointUser {
  onEvent(name: string, args: unknown[]): void;
  onStatus(status: EndpointStatus): void;
  onError(err: Error): void;
}

/** The kind-specific part: how events change the status shown on the users. */
export interface HubKind<E extends Engine> {
  kind: "isp" | "home";
  events: readonly string[];
  /** The status after `event` (memo persists across adoptions), or undefined for no change. */
  statusAfter(event: string, args: unknown[], engine: E, memo: Record<string, unknown>): EndpointStatus | undefined;
  /** The status of an engine taken over from the previous deploy. */
  statusNow(engine: E, memo: Record<string, unknown>): EndpointStatus;
}

/** Runs callbacks each time flows have started (one runtime listener, not one per hub). */
const startWaiters = new WeakMap<RuntimeEvents, Set<() => void>>();
function onFlowsStarted(events: RuntimeEvents, fn: () => void): () => void {
  let set = startWaiters.get(events);
  if (!set) {
    const callbacks = new Set<() => void>();
    set = callbacks;
    startWaiters.set(events, callbacks);
    events.on("flows:started", () => {
      for (const cb of [...callbacks]) cb();
    });
  }
  set.add(fn);
  return () => void startWaiters.get(events)?.delete(fn);
}

/** Events held until a user can receive them (between deploys, before the flows have started). */
const MAX_HELD = 500;

export class EndpointHub<E extends Engine> {
  private readonly users = new Set<EndpointUser>();
  private lease: Lease<E> | undefined;
  private held: Array<[string, unknown[]]> = [];
  /** Users can take messages (the flows have started since they registered). */
  private ready = false;
  private readonly unhookStart: () => void;
  private unview: () => void = () => undefined;
  private current: EndpointStatus;
  /** Why the endpoint does not run (bad settings), worded for people. */
  readonly problem: Error | undefined;

  constructor(
    RED: NodeAPI,
    private readonly owner: Node,
    private readonly kind: HubKind<E>,
    spec: { key: string; settings: () => { fingerprint: unknown; port?: number; create: () => E } },
  ) {
    engines.hook(RED.events as unknown as RuntimeEvents);
    this.unhookStart = onFlowsStarted(RED.events as unknown as RuntimeEvents, () => this.flowsStarted());
    this.current = { fill: "yellow", shape: "ring", key: "starting" };
    try {
      const s = spec.settings();
      this.lease = engines.acquire<E>(
        {
          key: spec.key,
          kind: kind.kind,
          fingerprint: engines.fingerprint({ kind: kind.kind, ...(s.fingerprint as object) }),
          port: s.port,
          events: kind.events,
          create: s.create,
        },
        (name, args) => this.deliver(name, args),
      );
      if (this.lease.adopted) this.current = kind.statusNow(this.lease.engine, this.lease.memo);
      this.unview = liveView.addEndpoint(owner, kind.kind, this.lease.engine);
      this.lease.started.catch((err) => {
        liveView.error(owner, err);
        this.setStatus({ fill: "red", shape: "ring", key: "bind-failed", args: { reason: toError(err).message } });
        this.deliver("error", [toError(err)]);
      });
    } catch (e) {
      this.problem = toError(e);
      liveView.error(owner, this.problem);
      this.current = { fill: "red", shape: "ring", key: "problem", args: { reason: this.problem.message } };
    }
  }

  get engine(): E | undefined {
    return this.lease?.engine;
  }
  get started(): Promise<void> | undefined {
    return this.lease?.started;
  }
  get adopted(): boolean {
    return this.lease?.adopted === true;
  }
  get status(): EndpointStatus {
    return this.current;
  }
  get userCount(): number {
    return this.users.size;
  }

  attach(user: EndpointUser): void {
    this.users.add(user);
    user.onStatus(this.current);
  }

  detach(user: EndpointUser): void {
    this.users.delete(user);
    // A replacement user registers during the next start: hold events until those flows run.
    if (this.users.size === 0) this.ready = false;
  }

  /** The node closed: removed=false keeps the engine for adoption by the next deploy. */
  close(removed: boolean): Promise<void> {
    this.unhookStart();
    this.unview();
    this.users.clear();
    const unsent = this.held.splice(0);
    const lease = this.lease;
    this.lease = undefined;
    return lease ? lease.release(removed, unsent) : Promise.resolve();
  }

  /** Re-evaluates the status from the engine (after a command changed what it holds). */
  refresh(): void {
    const engine = this.lease?.engine;
    if (engine) this.setStatus(this.kind.statusNow(engine, this.lease!.memo));
  }

  private flowsStarted(): void {
    if (this.users.size === 0) return;
    this.ready = true;
    for (const [name, args] of this.held.splice(0)) this.dispatch(name, args);
  }

  private deliver(name: string, args: unknown[]): void {
    const engine = this.lease?.engine;
    if (engine) {
      const s = this.kind.statusAfter(name, args, engine, this.lease!.memo);
      if (s) this.setStatus(s);
    }
    if (this.ready && this.users.size > 0) {
      this.dispatch(name, args);
      return;
    }
    if (this.held.length >= MAX_HELD) this.held.shift();
    this.held.push([name, args]);
  }

  private dispatch(name: string, args: unknown[]): void {
    if (name === "error" || name === "queue-overflow") {
      const err =
        name === "error" ? toError(args[0]) : new Error(`${String(args[0])} endpoint events were dropped while no node used the endpoint`);
      if (this.users.size === 0) this.owner.error(err);
      for (const u of this.users) u.onError(err);
      return;
    }
    for (const u of this.users) u.onEvent(name, args);
  }

  private setStatus(s: EndpointStatus): void {
    this.current = s;
    for (const u of this.users) u.onStatus(s);
  }
}

/**
 * `<userDir>/dots-call-home/<id>/`, created 0700 (the home's mitigation state and the listener's
 * mids live there); undefined when Node-RED has no user directory (state then stays in memory).
 */
export function stateDirFor(RED: NodeAPI, id: string): string | undefined {
  const userDir = (RED.settings as unknown as { userDir?: string }).userDir;
  if (!userDir) return undefined;
  const safe = id.replace(/[^A-Za-z0-9._-]/g, "_");
  const base = path.join(userDir, "dots-call-home");
  const dir = path.join(base, safe);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(base, 0o700);
  fs.chmodSync(dir, 0o700);
  return dir;
}

/** Translates "errors.<key>" in the catalog of the node type that builds the settings. */
export type Words = (key: string, args?: Record<string, unknown>) => string;

/** The PSK of a dots-psk node, or an error that says what is missing ("PSK key missing"). */
export function pskOf(RED: NodeAPI, id: string, t: Words): PskCredential & { home: string } {
  const p = RED.nodes.getNode(id) as DotsPskNode | null;
  if (!p || typeof p.credential !== "function") throw new Error(t("errors.psk-missing", { id }));
  const name = p.name || p.home || id;
  if (!p.credentials?.key) throw new Error(t("errors.psk-no-key", { name }));
  if (!p.credentials?.identity) throw new Error(t("errors.psk-no-identity", { name }));
  return { ...p.credential(), home: p.home };
}
