// What a detector sees of an ISP fleet over MQTT (docs/mqtt.md): which process holds each home
// (retained presence), which processes are alive (their _proc records), and every event.
import type { MqttClient } from "mqtt";

type Json = Record<string, unknown>;

/** The detector's view of the fleet over MQTT: presence per home and every event. */
export class FleetView {
  readonly presence = new Map<string, string>();
  readonly procs = new Map<string, boolean>();
  readonly events: Array<{ home: string; json: Json; at: number }> = [];
  /** First answer (response or error event) per home and command id: a lookup, not a scan. */
  private readonly answers = new Map<string, Json>();
  private waiters: Array<() => boolean> = [];
  constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      const levels = topic.split("/");
      let json: Json | undefined;
      try {
        json = payload.length ? (JSON.parse(payload.toString()) as Json) : undefined;
      } catch {
        json = undefined;
      }
      if (levels[1] === "presence" && levels[2] === "_proc") this.procs.set(levels[3], json?.online === true);
      else if (levels[1] === "presence") {
        if (json && typeof json.clientId === "string") this.presence.set(levels[2], json.clientId);
        else this.presence.delete(levels[2]);
      } else if (levels[1] === "evt" && json) {
        this.events.push({ home: levels[2], json, at: Date.now() });
        if ((json.event === "response" || json.event === "error") && json.id !== undefined) {
          const key = answerKey(levels[2], json.id);
          if (!this.answers.has(key)) this.answers.set(key, json);
        }
      }
      this.waiters = this.waiters.filter((w) => !w());
    });
  }

  until(what: string, pred: () => boolean, ms: number): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      const check = (): boolean => {
        if (!pred()) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      this.waiters.push(check);
    });
  }

  answer(home: string, id: string): Json | undefined {
    return this.answers.get(answerKey(home, id));
  }
}

const answerKey = (home: string, id: unknown): string => `${home}\u0000${JSON.stringify(id)}`;
