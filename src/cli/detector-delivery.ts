// How a detector's request reaches the ISP-side listener: the MQTT command contract
// (`<prefix>/cmd/<home>`, answers on `<prefix>/evt/<home>` matched by the command id, see
// docs/mqtt.md) or an HTTP POST to an ISP flow (the "ISP - FastNetMon detection" example).
import mqtt from "mqtt";
import { encodeTopicLevel } from "./mqtt-carrier";

/** What the ISP side answered, as far as it answered within the wait. */
export interface DeliveryAnswer {
  /** "response" (the home's CoAP answer), "held" (parked until the home is back), "error", or "none" (no answer in time). */
  kind: "response" | "held" | "error" | "none";
  /** CoAP code of the home's answer ("2.01", "2.02", "4.00"...). */
  code?: string;
  mid?: number;
  /** Error code or text when kind is "error". */
  error?: string;
}

export interface Delivery {
  readonly describe: string;
  mitigate(home: string, id: string, scope: Record<string, unknown>, mid?: number): Promise<DeliveryAnswer>;
  withdraw(home: string, id: string, mid: number): Promise<DeliveryAnswer>;
  close(): Promise<void>;
}

export interface MqttDeliveryOptions {
  url: string;
  prefix?: string;
  clientId?: string;
  username?: string;
  password?: string;
  /** How long to wait for the answer to a command, ms. */
  waitMs?: number;
  /** How long the fleet may park a command for a home nobody holds, seconds (the contract's `hold`). */
  holdSeconds?: number;
}

export class MqttDelivery implements Delivery {
  readonly describe: string;
  private client?: mqtt.MqttClient;
  private readonly prefix: string;

  constructor(private readonly opts: MqttDeliveryOptions) {
    this.prefix = opts.prefix ?? "dots";
    this.describe = `mqtt ${opts.url} ${this.prefix}/cmd/<home>`;
  }

  private async connect(): Promise<mqtt.MqttClient> {
    if (this.client) return this.client;
    this.client = await mqtt.connectAsync(this.opts.url, {
      protocolVersion: 5,
      clientId: this.opts.clientId ?? `dots-fastnetmon-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: Math.min(this.opts.waitMs ?? 10_000, 10_000),
      username: this.opts.username,
      password: this.opts.password,
    });
    // small command/answer packets: no Nagle delay behind an unacknowledged one (as the listener)
    (this.client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
    return this.client;
  }

  private async send(home: string, cmd: Record<string, unknown>): Promise<DeliveryAnswer> {
    const client = await this.connect();
    const level = encodeTopicLevel(home);
    const evt = `${this.prefix}/evt/${level}`;
    const id = cmd.id;
    const answer = new Promise<DeliveryAnswer>((resolve) => {
      const timer = setTimeout(() => {
        client.off("message", onMessage);
        resolve({ kind: "none" });
      }, this.opts.waitMs ?? 10_000);
      const onMessage = (topic: string, payload: Buffer): void => {
        if (topic !== evt) return;
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
        } catch {
          return;
        }
        if (e.id !== id || !["response", "held", "error"].includes(String(e.event))) return;
        clearTimeout(timer);
        client.off("message", onMessage);
        const outcome = (e.outcome ?? {}) as { code?: unknown; mid?: unknown };
        const a: DeliveryAnswer = { kind: e.event as DeliveryAnswer["kind"] };
        if (typeof outcome.code === "string") a.code = outcome.code;
        if (typeof outcome.mid === "number") a.mid = outcome.mid;
        if (a.kind === "error") a.error = `${String(e.code ?? "")} ${String(e.message ?? "")}`.trim();
        resolve(a);
      };
      client.on("message", onMessage);
    });
    await client.subscribeAsync(evt, { qos: 1 });
    await client.publishAsync(`${this.prefix}/cmd/${level}`, JSON.stringify(cmd), { qos: 1 });
    return answer;
  }

  mitigate(home: string, id: string, scope: Record<string, unknown>, mid?: number): Promise<DeliveryAnswer> {
    return this.send(home, {
      cmd: "mitigate",
      id,
      session: home,
      request: scope,
      ...(mid !== undefined ? { mid } : {}),
      ...(this.opts.holdSeconds !== undefined ? { hold: this.opts.holdSeconds } : {}),
    });
  }

  withdraw(home: string, id: string, mid: number): Promise<DeliveryAnswer> {
    return this.send(home, {
      cmd: "withdraw",
      id,
      session: home,
      mid,
      ...(this.opts.holdSeconds !== undefined ? { hold: this.opts.holdSeconds } : {}),
    });
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }
}

export interface HttpDeliveryOptions {
  /** POST target of mitigations, e.g. http://127.0.0.1:1880/dots/mitigate. */
  url: string;
  /** POST target of withdrawals (default: the mitigate URL with its last path segment "withdraw"). */
  withdrawUrl?: string;
  waitMs?: number;
  /** Extra headers (e.g. Authorization). */
  headers?: Record<string, string>;
}

/** The flat JSON the ISP flow's HTTP endpoint takes (the mitigation request node's fields). */
export function httpBody(home: string, scope: Record<string, unknown>, mid?: number): Record<string, unknown> {
  const ranges = (v: unknown): string[] => (Array.isArray(v) ? v.map((r) => String((r as { "lower-port": number })["lower-port"])) : []);
  const body: Record<string, unknown> = {
    home,
    target: scope["target-prefix"],
    source: scope["ietf-dots-call-home:source-prefix"],
    lifetime: scope.lifetime,
  };
  const sp = ranges(scope["ietf-dots-call-home:source-port-range"]);
  const tp = ranges(scope["target-port-range"]);
  if (sp.length) body.sourcePort = sp;
  if (tp.length) body.targetPort = tp;
  if (Array.isArray(scope["target-protocol"])) body.protocol = (scope["target-protocol"] as number[]).map(String);
  if (mid !== undefined) body.mid = mid;
  return body;
}

export class HttpDelivery implements Delivery {
  readonly describe: string;
  constructor(private readonly opts: HttpDeliveryOptions) {
    this.describe = `http ${opts.url}`;
  }

  private get withdrawUrl(): string {
    if (this.opts.withdrawUrl) return this.opts.withdrawUrl;
    const u = new URL(this.opts.url);
    u.pathname = u.pathname.replace(/[^/]*$/, "withdraw");
    return u.toString();
  }

  private async post(url: string, body: unknown): Promise<DeliveryAnswer> {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...(this.opts.headers ?? {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(this.opts.waitMs ?? 10_000),
    });
    const text = (await res.text()).slice(0, 64 * 1024);
    let json: { code?: unknown; mid?: unknown; error?: unknown } = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // not JSON: the status says enough
    }
    if (!res.ok)
      return {
        kind: "error",
        error: `HTTP ${res.status}${typeof json.error === "string" ? `: ${json.error}` : text ? `: ${text.slice(0, 200)}` : ""}`,
        ...(typeof json.code === "string" ? { code: json.code } : {}),
      };
    const a: DeliveryAnswer = { kind: "response" };
    if (typeof json.code === "string") a.code = json.code;
    if (typeof json.mid === "number") a.mid = json.mid;
    return a;
  }

  mitigate(home: string, _id: string, scope: Record<string, unknown>, mid?: number): Promise<DeliveryAnswer> {
    return this.post(this.opts.url, httpBody(home, scope, mid));
  }

  withdraw(home: string, _id: string, mid: number): Promise<DeliveryAnswer> {
    return this.post(this.withdrawUrl, { home, mid });
  }

  async close(): Promise<void> {
    // nothing held open
  }
}
