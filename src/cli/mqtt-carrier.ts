// The command/event contract over MQTT (docs/mqtt.md): commands for a home arrive on P/cmd/<home>,
// its events leave on P/evt/<home>, retained presence says which process holds the home, and a
// command for a home nobody holds is parked (retained, with message expiry) until the home is back.
// Routing rule: every process decides on a command with its presence view at the moment the command
// arrives; one broker delivers presence and commands in the order it processed them, so exactly one
// process acts: the holder (direct copy) or the fleet member that got the shared copy (parks it).
import { randomUUID } from "node:crypto";
import * as os from "node:os";
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";
import type { MqttSettings } from "./args";
import { decodeCommand, MAX_COMMAND_BYTES, replacer as jsonReplacer, type EventWriter } from "./jsonl";
import type { ListenRunner } from "./listen";

type Fields = Record<string, unknown>;

/** Largest packet we ask the broker to send; payloads above MAX_COMMAND_BYTES get TOO_LARGE. */
export const MQTT_MAX_PACKET = 16 << 20;
export const MAX_HELD_PER_HOME = 100;
export const MAX_HELD_TOTAL = 10_000;
/** Events kept for MQTT while the broker is away (stdout gets them all). */
export const MAX_OFFLINE_EVENTS = 1000;
const DEDUP_MS = 10 * 60_000;
const MAX_UNRELEASED = 100_000;
const MAX_DEDUP = 10_000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const PROCESS_COMMANDS = new Set(["mitigate", "withdraw", "get", "efficacy", "redirect"]);

// Subscription identifiers tell which subscription a message came through.
const SUB_FLEET = 1;
const SUB_HOME = 2;
const SUB_HELD = 3;
const SUB_PRESENCE = 4;

/** One topic level from a name: %, /, +, #, control characters and a leading _ or $ as %XX. */
export function encodeTopicLevel(name: string): string {
  let out = "";
  const bytes = Buffer.from(name, "utf8");
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    const special =
      b < 0x20 || b === 0x7f || b === 0x25 || b === 0x2f || b === 0x2b || b === 0x23 || (i === 0 && (b === 0x5f || b === 0x24));
    if (special) out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    else if (b < 0x80) out += String.fromCharCode(b);
    else {
      // copy the whole UTF-8 sequence
      let j = i + 1;
      while (j < bytes.length && (bytes[j] & 0xc0) === 0x80) j++;
      out += bytes.subarray(i, j).toString("utf8");
      i = j - 1;
    }
  }
  return out;
}

export function decodeTopicLevel(level: string): string | undefined {
  try {
    return decodeURIComponent(level);
  } catch {
    return undefined;
  }
}

interface Presence {
  clientId: string;
  instance: string;
  /** When the holder's session of the home began (ms); undefined in records without it. */
  since?: number;
}
interface Proc {
  online: boolean;
  instance: string;
}
interface Parked {
  home: string;
  topic: string;
  command: Fields;
  receivedAt: number;
  until: number;
  by: string;
  byInstance: string;
}

export interface MqttCarrierDeps {
  settings: MqttSettings;
  runner: ListenRunner;
  /** Local log of every event (stdout). */
  print: EventWriter;
  /** Whether this fleet can know the home at all (PSK table, or certificates in use). */
  knownHome(home: string): boolean;
  /** mqtt.js options added by tests (e.g. a fixed reconnect for fault tests); not for users. */
  clientOptions?: Partial<IClientOptions>;
}

export class MqttCarrier {
  private readonly s: MqttSettings;
  private readonly instance = randomUUID();
  private client?: MqttClient;
  private stopping = false;
  private connected = false;
  private backoff = BACKOFF_MIN_MS;
  private reconnectTimer?: NodeJS.Timeout;
  private readonly offline: Array<{ topic: string; payload: string }> = [];
  private offlineDropped = 0;
  /** Homes whose session is up here, with how many sessions (a replacement overlaps briefly). */
  private readonly mine = new Map<string, number>();
  /** The newest session per home held here: its id and when it began (ms). */
  private readonly newest = new Map<string, { sessionId: string; since: number }>();
  /** Homes whose presence we published and have not yet seen come back from the broker. */
  private readonly presenceInFlight = new Set<string>();
  private readonly homeOfSession = new Map<string, string>();
  /** Homes whose session ended while the broker was away (their presence was not cleared). */
  private readonly unreleased = new Set<string>();
  private readonly presence = new Map<string, Presence>();
  private readonly procs = new Map<string, Proc>();
  private readonly parked = new Map<string, Parked>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Set<string>();
  /** (home, id) of executed commands -> the answer, for re-sent ids. */
  private readonly answered = new Map<string, { at: number; event?: string; fields?: Fields }>();

  constructor(private readonly deps: MqttCarrierDeps) {
    this.s = deps.settings;
  }

  private t(...levels: string[]): string {
    return [this.s.prefix, ...levels].join("/");
  }

  private get procTopic(): string {
    return this.t("presence", "_proc", this.s.clientId);
  }

  start(): void {
    const will = { online: false, instance: this.instance, clientId: this.s.clientId };
    const opts: IClientOptions = {
      protocolVersion: 5,
      clientId: this.s.clientId,
      clean: true,
      keepalive: this.s.keepaliveSeconds,
      reconnectPeriod: 0,
      resubscribe: false,
      connectTimeout: 10_000,
      queueQoSZero: false,
      will: { topic: this.procTopic, payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true },
      properties: { maximumPacketSize: MQTT_MAX_PACKET, sessionExpiryInterval: 0 },
      ...(this.s.username !== undefined ? { username: this.s.username } : {}),
      ...(this.s.password !== undefined ? { password: this.s.password } : {}),
      ...(this.s.ca ? { ca: this.s.ca } : {}),
      ...(this.s.cert && this.s.key ? { cert: this.s.cert, key: this.s.key } : {}),
      rejectUnauthorized: true,
      ...this.deps.clientOptions,
    };
    const client = mqtt.connect(this.s.url, opts);
    this.client = client;
    client.on("connect", () => {
      // Commands and answers are small packets: without this, Nagle holds one back behind an
      // unacknowledged one (a QoS 1 PUBACK), which showed as the MQTT path's p99 (bench/cluster.ts).
      (client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
      this.backoff = BACKOFF_MIN_MS;
      this.connected = true;
      this.deps.print("mqtt-connected", { url: redactUrl(this.s.url), clientId: this.s.clientId, instance: this.instance });
      this.onConnect().catch((e: Error) => this.mqttError("RESYNC", `after connecting: ${e.message}`));
    });
    client.on("close", () => {
      const was = this.connected;
      this.connected = false;
      if (was) this.deps.print("mqtt-disconnected", { url: redactUrl(this.s.url) });
      if (this.stopping) return;
      this.scheduleReconnect();
    });
    client.on("error", (e: Error) => this.deps.print("mqtt-error", { code: (e as { code?: unknown }).code ?? "MQTT", message: e.message }));
    client.on("message", (topic, payload, packet) => {
      try {
        this.onMessage(topic, payload, packet);
      } catch (e) {
        this.mqttError("INTERNAL", `handling a message on ${topic}: ${(e as Error).message}`);
      }
    });
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.stopping) return;
    const delay = Math.round(this.backoff * (0.75 + Math.random() * 0.5));
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopping || !this.client) return;
      // Keep the stores: QoS 1 publishes not yet acknowledged go again after the reconnect.
      this.client.reconnect({ incomingStore: this.client.incomingStore, outgoingStore: this.client.outgoingStore });
    }, delay);
  }

  private mqttError(code: string, message: string, fields: Fields = {}): void {
    const f = { code, message, ...fields };
    this.deps.print("mqtt-error", f);
    this.publishEvent(undefined, "mqtt-error", f);
  }

  /** Every (re)connect: liveness record, views, fleet watch, then our homes (subscribe, then presence). */
  private async onConnect(): Promise<void> {
    const c = this.client as MqttClient;
    await c.publishAsync(
      this.procTopic,
      JSON.stringify({
        online: true,
        instance: this.instance,
        clientId: this.s.clientId,
        pid: process.pid,
        host: os.hostname(),
        since: new Date().toISOString(),
      }),
      { qos: 1, retain: true },
    );
    // Views first: their retained messages reach us before any command of the fleet watch.
    await c.subscribeAsync(this.t("presence", "#"), { qos: 1, properties: { subscriptionIdentifier: SUB_PRESENCE } });
    await c.subscribeAsync(this.t("held", "#"), { qos: 1, properties: { subscriptionIdentifier: SUB_HELD } });
    await c.subscribeAsync(`$share/${encodeTopicLevel(this.s.prefix.replace(/\//g, "-"))}-fleet/${this.t("cmd", "+")}`, {
      qos: 1,
      properties: { subscriptionIdentifier: SUB_FLEET },
    });
    for (const home of this.mine.keys()) await this.takeHome(home);
    const queued = this.offline.splice(0);
    for (const m of queued) c.publish(m.topic, m.payload, { qos: 1 });
    if (this.offlineDropped > 0) {
      this.mqttError("EVENTS_DROPPED", `${this.offlineDropped} events were not published while the broker was away (stdout has them)`);
      this.offlineDropped = 0;
    }
  }

  private async takeHome(home: string): Promise<void> {
    const c = this.client;
    if (!c || !this.connected) return;
    const level = encodeTopicLevel(home);
    await c.subscribeAsync(this.t("cmd", level), { qos: 1, properties: { subscriptionIdentifier: SUB_HOME } });
    if (!this.mine.has(home) || !this.connected) return;
    if (this.yieldIfNewerElsewhere(home)) return;
    const since = this.newest.get(home)?.since ?? Date.now();
    this.presenceInFlight.add(home);
    await c.publishAsync(
      this.t("presence", level),
      JSON.stringify({ clientId: this.s.clientId, instance: this.instance, home, since: new Date(since).toISOString() }),
      { qos: 1, retain: true },
    );
  }

  /**
   * One home, one session across the fleet: when another live process holds a session of this
   * home that began after ours, the home has moved on (it redialled, its NAT rebound, or it gave
   * up on a handshake that completed only here) and ours is closed. True when it was.
   */
  private yieldIfNewerElsewhere(home: string): boolean {
    const ours = this.newest.get(home);
    const h = this.holder(home);
    if (!ours || !h || h.instance === this.instance || h.since === undefined || h.since <= ours.since) return false;
    this.deps.runner.closeSession(ours.sessionId, `the home has a newer session at ${h.clientId}`);
    return true;
  }

  /** Whether clearing this home's presence could only remove our own record. */
  private presenceIsOurs(home: string): boolean {
    const p = this.presence.get(home);
    return p === undefined || p.instance === this.instance || this.presenceInFlight.has(home);
  }

  private async releaseHome(home: string): Promise<void> {
    const c = this.client;
    if (!c || !this.connected) {
      // a persistent broker may still hold our presence for it: cleared when we see it again
      this.unreleased.add(home);
      if (this.unreleased.size > MAX_UNRELEASED) this.unreleased.delete(this.unreleased.values().next().value as string);
      return;
    }
    const level = encodeTopicLevel(home);
    // Another process's record (the home moved there) stays: clearing it would unroute the home.
    if (this.presenceIsOurs(home)) await c.publishAsync(this.t("presence", level), "", { qos: 1, retain: true });
    if (this.mine.has(home)) return; // back meanwhile
    await c.unsubscribeAsync(this.t("cmd", level));
  }

  // ------------------------------------------------------------------------------- events out

  /** Every event of the runner: printed by the caller already; here routed to MQTT. */
  event(event: string, fields: Fields): void {
    let home: string | undefined;
    const session = fields.session as { id?: string; home?: string; since?: unknown } | undefined;
    if ((event === "session-up" || event === "session-down") && session && typeof session.home === "string") {
      home = session.home;
      if (typeof session.id === "string") this.homeOfSession.set(session.id, home);
      if (event === "session-up") this.sessionUp(home, session.id, session.since);
      else this.sessionDown(home);
    } else if (event === "identity-conflict" && typeof fields.home === "string") {
      // The refused session's name: readers of that home see who was turned away and why.
      home = fields.home;
    } else if (typeof fields.sessionId === "string") {
      home = this.homeOfSession.get(fields.sessionId);
    } else if (event === "response" && fields.outcome && typeof (fields.outcome as Fields).sessionId === "string") {
      home = this.homeOfSession.get((fields.outcome as Fields).sessionId as string);
    }
    if (event === "heartbeat" && !this.s.heartbeats) return;
    this.publishEvent(home, event, fields);
  }

  private publishEvent(home: string | undefined, event: string, fields: Fields): void {
    const topic = this.t("evt", home === undefined ? "_" : encodeTopicLevel(home));
    let payload: string;
    try {
      payload = JSON.stringify(
        { event, time: new Date().toISOString(), ...fields, ...(home !== undefined ? { home } : {}), clientId: this.s.clientId },
        jsonReplacer,
      );
    } catch (e) {
      payload = JSON.stringify({
        event: "error",
        time: new Date().toISOString(),
        code: "OUTPUT",
        message: `could not serialise ${event}: ${(e as Error).message}`,
        clientId: this.s.clientId,
      });
    }
    if (this.client && this.connected) {
      this.client.publish(topic, payload, { qos: 1 });
      return;
    }
    if (this.stopping) return;
    this.offline.push({ topic, payload });
    if (this.offline.length > MAX_OFFLINE_EVENTS) {
      this.offline.shift();
      this.offlineDropped++;
    }
  }

  private sessionUp(home: string, sessionId: unknown, since: unknown): void {
    this.unreleased.delete(home);
    this.mine.set(home, (this.mine.get(home) ?? 0) + 1);
    if (typeof sessionId === "string")
      this.newest.set(home, { sessionId, since: typeof since === "number" && Number.isFinite(since) ? since : Date.now() });
    if (this.mine.get(home) === 1)
      this.takeHome(home).catch((e: Error) => this.mqttError("PRESENCE", `taking ${home}: ${e.message}`, { home }));
  }

  private sessionDown(home: string): void {
    const n = (this.mine.get(home) ?? 1) - 1;
    if (n > 0) {
      this.mine.set(home, n);
      return;
    }
    this.mine.delete(home);
    this.newest.delete(home);
    this.releaseHome(home).catch((e: Error) => this.mqttError("PRESENCE", `releasing ${home}: ${e.message}`, { home }));
  }

  // ------------------------------------------------------------------------------- messages in

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const prefixLevels = this.s.prefix.split("/").length;
    const levels = topic.split("/").slice(prefixLevels);
    const raw = packet.properties?.subscriptionIdentifier;
    const subs = new Set(Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]);
    if (levels[0] === "presence") return this.onPresence(levels.slice(1), payload);
    if (levels[0] === "held" && levels.length === 3) return this.onHeld(topic, levels[1], payload);
    if (levels[0] === "cmd" && levels.length === 2) {
      const home = decodeTopicLevel(levels[1]);
      if (home === undefined || home === "_") {
        if (subs.has(SUB_FLEET))
          this.commandError(
            undefined,
            undefined,
            "BAD_TOPIC",
            `command topic ${JSON.stringify(topic)} does not name a home (levels are %XX-encoded, docs/mqtt.md)`,
          );
        return;
      }
      if (subs.has(SUB_HOME)) this.onDirect(home, payload);
      if (subs.has(SUB_FLEET)) this.onFleet(home, payload);
    }
  }

  private onPresence(rest: string[], payload: Buffer): void {
    if (rest[0] === "_proc" && rest.length === 2) {
      const id = decodeTopicLevel(rest[1]);
      if (id === undefined) return;
      const p = parseJson(payload) as Partial<Proc> | undefined;
      if (payload.length > 0 && (!p || typeof p.instance !== "string")) this.badView("BAD_PRESENCE", this.t("presence", ...rest), payload);
      if (!p || typeof p.instance !== "string") this.procs.delete(id);
      else this.procs.set(id, { online: p.online === true, instance: p.instance });
      return;
    }
    if (rest.length !== 1) return;
    const home = decodeTopicLevel(rest[0]);
    if (home === undefined) return;
    const p = parseJson(payload) as (Omit<Partial<Presence>, "since"> & { since?: unknown }) | undefined;
    if (!p || typeof p.clientId !== "string" || typeof p.instance !== "string") {
      if (payload.length > 0) this.badView("BAD_PRESENCE", this.t("presence", ...rest), payload);
      this.presence.delete(home);
      this.presenceInFlight.delete(home);
      // Cleared while we hold the home (a late clear by a process it left): say again that we do.
      if (payload.length === 0 && this.mine.has(home) && this.connected)
        this.takeHome(home).catch((e: Error) => this.mqttError("PRESENCE", `taking ${home}: ${e.message}`, { home }));
      return;
    }
    const since = typeof p.since === "string" ? Date.parse(p.since) : NaN;
    this.presence.set(home, { clientId: p.clientId, instance: p.instance, ...(Number.isFinite(since) ? { since } : {}) });
    if (p.instance === this.instance) this.presenceInFlight.delete(home);
    else if (this.mine.has(home)) this.yieldIfNewerElsewhere(home);
    // A presence naming us for a home we do not hold: our earlier run left it (crash), or the
    // session ended while the broker was away (a persistent broker kept it). Nobody else clears it.
    // Not the echo of a presence we released ourselves: clearing again could erase the next holder's.
    const leftover = p.instance !== this.instance || this.unreleased.delete(home);
    if (p.clientId === this.s.clientId && !this.mine.has(home) && leftover && this.client && this.connected) {
      this.client.publish(this.t("presence", rest[0]), "", { qos: 1, retain: true });
    }
    if (this.heldByMe(home)) this.runParked(home);
  }

  /** A record on the fleet's own topics that is not what docs/mqtt.md says: ignored, and said so. */
  private badView(code: string, topic: string, payload: Buffer): void {
    this.mqttError(code, `ignoring ${topic}: not a record as docs/mqtt.md describes (treated as absent)`, {
      topic,
      payload: payload.toString("utf8", 0, Math.min(payload.length, 200)),
    });
  }

  /** The live holder of a home by our view, or undefined (none, or a dead process's leftover). */
  private holder(home: string): Presence | undefined {
    const p = this.presence.get(home);
    if (!p) return undefined;
    const proc = this.procs.get(p.clientId);
    return proc && proc.online && proc.instance === p.instance ? p : undefined;
  }

  private heldByMe(home: string): boolean {
    const h = this.holder(home);
    return h !== undefined && h.clientId === this.s.clientId && h.instance === this.instance;
  }

  private onDirect(home: string, payload: Buffer): void {
    if (!this.heldByMe(home)) return; // the fleet watch handled it by the same view
    if (this.mine.has(home)) this.execute(home, payload);
    else this.park(home, payload); // our session has just gone
  }

  private onFleet(home: string, payload: Buffer): void {
    if (this.holder(home)) return; // its holder runs it
    this.park(home, payload);
  }

  /** Decoded and checked command, or undefined after answering with an error. */
  private decode(home: string, payload: Buffer): Fields | undefined {
    if (payload.length > MAX_COMMAND_BYTES) {
      this.commandError(home, undefined, "TOO_LARGE", `command of ${payload.length} bytes is over the ${MAX_COMMAND_BYTES}-byte limit`);
      return undefined;
    }
    const d = decodeCommand(payload.toString("utf8"));
    if ("code" in d) {
      this.commandError(home, undefined, d.code, d.message, { payload: payload.toString("utf8", 0, Math.min(payload.length, 200)) });
      return undefined;
    }
    const cmd = d.cmd;
    const id = cmd.id;
    if (typeof cmd.cmd !== "string" || !PROCESS_COMMANDS.has(cmd.cmd)) {
      const why =
        cmd.cmd === "sessions"
          ? "sessions is a process command and is not taken over MQTT: read P/presence/# instead"
          : `unknown command ${JSON.stringify(cmd.cmd)}; over MQTT: ${[...PROCESS_COMMANDS].join(", ")}`;
      this.commandError(home, id, "BAD_COMMAND", why, { cmd: cmd.cmd });
      return undefined;
    }
    if (cmd.session !== undefined && cmd.session !== home) {
      this.commandError(
        home,
        id,
        "WRONG_HOME",
        `"session" ${JSON.stringify(cmd.session)} does not match the topic's home ${JSON.stringify(home)}; leave it out`,
        { cmd: cmd.cmd },
      );
      return undefined;
    }
    if (cmd.hold !== undefined && (typeof cmd.hold !== "number" || !Number.isInteger(cmd.hold) || cmd.hold < 0 || cmd.hold > 86_400)) {
      this.commandError(home, id, "BAD_COMMAND", `"hold" must be whole seconds in 0..86400`, { cmd: cmd.cmd });
      return undefined;
    }
    if (!this.deps.knownHome(home)) {
      this.commandError(home, id, "UNKNOWN_HOME", `no home ${JSON.stringify(home)} is configured in this fleet`, { cmd: cmd.cmd });
      return undefined;
    }
    return cmd;
  }

  /** An error about a command: on the home's event topic (if any) and a copy on P/evt/_. */
  private commandError(home: string | undefined, id: unknown, code: string, message: string, extra: Fields = {}): void {
    const f: Fields = { ...extra, ...(id !== undefined ? { id } : {}), code, message, via: "mqtt" };
    this.deps.print("error", { ...f, ...(home !== undefined ? { home } : {}) });
    if (home !== undefined) this.publishEvent(home, "error", f);
    this.publishEvent(undefined, "error", { ...f, ...(home !== undefined ? { home } : {}) });
  }

  private reply(home: string): EventWriter {
    return (event, fields = {}) => {
      this.deps.print(event, { ...fields, home, via: "mqtt" });
      this.publishEvent(home, event, { ...fields, via: "mqtt" });
    };
  }

  private execute(home: string, payload: Buffer): void {
    const cmd = this.decode(home, payload);
    if (cmd) this.run(home, cmd);
  }

  /** Runs a checked command; done() once its answer is out. */
  private run(home: string, cmd: Fields, done?: () => void): void {
    const reply = this.reply(home);
    const key = cmd.id !== undefined ? `${home}\u0000${JSON.stringify(cmd.id)}` : undefined;
    this.sweepAnswered();
    if (key !== undefined) {
      const prior = this.answered.get(key);
      if (prior) {
        if (prior.event) reply(prior.event, { ...prior.fields, repeated: true });
        done?.();
        return; // still running: its answer comes
      }
      this.answered.set(key, { at: Date.now() });
    }
    const answer: EventWriter = (event, fields = {}) => {
      if (key !== undefined) this.answered.set(key, { at: Date.now(), event, fields });
      reply(event, fields);
      done?.();
    };
    try {
      this.deps.runner.command({ ...cmd, session: home }, answer);
    } catch (e) {
      if (key !== undefined)
        this.answered.set(key, {
          at: Date.now(),
          event: "error",
          fields: { id: cmd.id, cmd: cmd.cmd, code: "BAD_COMMAND", message: (e as Error).message },
        });
      this.commandError(home, cmd.id, "BAD_COMMAND", (e as Error).message, { cmd: cmd.cmd });
      done?.();
    }
  }

  private sweepAnswered(): void {
    if (this.answered.size < MAX_DEDUP) return;
    const cutoff = Date.now() - DEDUP_MS;
    for (const [k, v] of this.answered) if (v.at < cutoff || this.answered.size >= MAX_DEDUP) this.answered.delete(k);
  }

  // ------------------------------------------------------------------------------- parking

  private park(home: string, payload: Buffer): void {
    const cmd = this.decode(home, payload);
    if (!cmd) return;
    const id = cmd.id;
    const hold = typeof cmd.hold === "number" ? cmd.hold : this.s.holdSeconds;
    if (hold === 0) {
      this.commandError(home, id, "UNHELD", `no process holds home ${JSON.stringify(home)} and the command may not wait ("hold": 0)`, {
        cmd: cmd.cmd,
      });
      return;
    }
    const key = id !== undefined ? encodeTopicLevel(typeof id === "string" ? id : JSON.stringify(id)).slice(0, 200) : randomUUID();
    const topic = this.t("held", encodeTopicLevel(home), key);
    const existing = this.parked.get(topic);
    if (existing) {
      this.reply(home)("held", {
        ...(id !== undefined ? { id } : {}),
        cmd: cmd.cmd,
        until: new Date(existing.until).toISOString(),
        repeated: true,
      });
      return;
    }
    this.pruneParked();
    let perHome = 0;
    for (const p of this.parked.values()) if (p.home === home) perHome++;
    if (perHome >= MAX_HELD_PER_HOME || this.parked.size >= MAX_HELD_TOTAL) {
      this.commandError(
        home,
        id,
        "QUEUE_FULL",
        `no process holds home ${JSON.stringify(home)} and ${perHome >= MAX_HELD_PER_HOME ? `${MAX_HELD_PER_HOME} commands already wait for it` : `${MAX_HELD_TOTAL} commands already wait in the fleet`}`,
        { cmd: cmd.cmd },
      );
      return;
    }
    if (!this.client || !this.connected) {
      this.commandError(home, id, "UNHELD", "the broker connection broke while parking the command; send it again", { cmd: cmd.cmd });
      return;
    }
    const now = Date.now();
    const entry: Parked = {
      home,
      topic,
      command: cmd,
      receivedAt: now,
      until: now + hold * 1000,
      by: this.s.clientId,
      byInstance: this.instance,
    };
    this.parked.set(topic, entry);
    this.armExpiry(entry);
    const body = {
      command: cmd,
      receivedAt: new Date(now).toISOString(),
      until: new Date(entry.until).toISOString(),
      by: this.s.clientId,
      byInstance: this.instance,
    };
    this.client.publish(topic, JSON.stringify(body), { qos: 1, retain: true, properties: { messageExpiryInterval: hold } }, (err) => {
      if (err) {
        this.parked.delete(topic);
        this.commandError(home, id, "UNHELD", `could not park the command: ${err.message}`, { cmd: cmd.cmd });
        return;
      }
      this.reply(home)("held", { ...(id !== undefined ? { id } : {}), cmd: cmd.cmd, until: body.until });
    });
  }

  /** Parked commands past their expiry: the broker has dropped them (a dead parker answers no EXPIRED). */
  private pruneParked(): void {
    const now = Date.now();
    for (const [topic, p] of this.parked)
      if (p.until <= now && !this.running.has(topic) && !this.expiryTimers.has(topic)) this.parked.delete(topic);
  }

  private armExpiry(p: Parked): void {
    if (p.by !== this.s.clientId || p.byInstance !== this.instance) return;
    const old = this.expiryTimers.get(p.topic);
    if (old) clearTimeout(old);
    const timer = setTimeout(
      () => {
        this.expiryTimers.delete(p.topic);
        const now = this.parked.get(p.topic);
        if (!now || now.receivedAt !== p.receivedAt || this.running.has(p.topic)) return;
        this.parked.delete(p.topic);
        this.client?.publish(p.topic, "", { qos: 1, retain: true });
        const id = p.command.id;
        this.commandError(
          p.home,
          id,
          "EXPIRED",
          `home ${JSON.stringify(p.home)} did not come back before ${new Date(p.until).toISOString()}`,
          { cmd: p.command.cmd },
        );
      },
      Math.max(0, p.until - Date.now()),
    );
    timer.unref();
    this.expiryTimers.set(p.topic, timer);
  }

  private onHeld(topic: string, homeLevel: string, payload: Buffer): void {
    const home = decodeTopicLevel(homeLevel);
    if (home === undefined) return;
    const body = parseJson(payload) as
      { command?: Fields; receivedAt?: string; until?: string; by?: string; byInstance?: string } | undefined;
    if (!body || typeof body.command !== "object" || body.command === null) {
      if (payload.length > 0) this.badView("BAD_HELD", topic, payload);
      this.parked.delete(topic);
      const t = this.expiryTimers.get(topic);
      if (t) clearTimeout(t);
      this.expiryTimers.delete(topic);
      return;
    }
    const entry: Parked = {
      home,
      topic,
      command: body.command,
      receivedAt: Date.parse(body.receivedAt ?? "") || Date.now(),
      until: Date.parse(body.until ?? "") || Date.now(),
      by: String(body.by ?? ""),
      byInstance: String(body.byInstance ?? ""),
    };
    if (entry.until <= Date.now()) return;
    if (!this.parked.has(topic) && this.parked.size >= 2 * MAX_HELD_TOTAL) {
      this.pruneParked();
      if (this.parked.size >= 2 * MAX_HELD_TOTAL) {
        this.mqttError(
          "HELD_VIEW_FULL",
          `more than ${2 * MAX_HELD_TOTAL} parked commands under ${this.t("held", "#")}; ${topic} is not tracked here`,
        );
        return;
      }
    }
    this.parked.set(topic, entry);
    if (this.heldByMe(home)) this.runParked(home);
  }

  /** Runs a home's parked commands in arrival order, clearing each once its answer is out. */
  private runParked(home: string): void {
    if (!this.mine.has(home)) return;
    const now = Date.now();
    const list = [...this.parked.values()]
      .filter((p) => p.home === home && p.until > now && !this.running.has(p.topic))
      .sort((a, b) => a.receivedAt - b.receivedAt);
    for (const p of list) {
      this.running.add(p.topic);
      this.run(home, p.command, () => {
        this.running.delete(p.topic);
        if (this.parked.get(p.topic) === p) this.parked.delete(p.topic);
        const t = this.expiryTimers.get(p.topic);
        if (t) clearTimeout(t);
        this.expiryTimers.delete(p.topic);
        this.client?.publish(p.topic, "", { qos: 1, retain: true });
      });
    }
  }

  // ------------------------------------------------------------------------------- stop

  /** After the runner stopped (sessions closed, presences cleared): say offline, disconnect. */
  async stop(): Promise<void> {
    const c = this.client;
    if (!c) return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    this.expiryTimers.clear();
    if (this.connected) {
      try {
        // Forgotten first: the echo of a clear must not read as someone else clearing a home we hold.
        const homes = [...this.mine.keys()];
        this.mine.clear();
        this.newest.clear();
        for (const home of homes)
          if (this.presenceIsOurs(home)) await c.publishAsync(this.t("presence", encodeTopicLevel(home)), "", { qos: 1, retain: true });
        await c.publishAsync(
          this.procTopic,
          JSON.stringify({ online: false, instance: this.instance, clientId: this.s.clientId, stoppedAt: new Date().toISOString() }),
          { qos: 1, retain: true },
        );
      } catch (e) {
        this.deps.print("mqtt-error", { code: "STOP", message: (e as Error).message });
      }
    }
    this.stopping = true;
    await c.endAsync(!this.connected);
  }
}

function parseJson(payload: Buffer): unknown {
  if (payload.length === 0 || payload.length > MAX_COMMAND_BYTES) return undefined;
  try {
    return JSON.parse(payload.toString("utf8"));
  } catch {
    return undefined;
  }
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = "";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}
