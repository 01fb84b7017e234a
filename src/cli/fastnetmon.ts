// `dots-call-home fastnetmon-notify`: FastNetMon's notify script. A ban of an outgoing attack from
// a home's public address becomes a call-home mitigation request (over the MQTT command contract
// or an ISP flow's HTTP endpoint); its unban withdraws that mitigation. One process per call, as
// FastNetMon runs it; what the unban needs is kept on disk (src/detect/ban-state).
import * as fs from "node:fs";
import { BanState, type BanRecord } from "../detect/ban-state";
import {
  FastNetMonArgsError,
  MAX_DETAILS_BYTES,
  attackScope,
  homeForAddress,
  parseFastNetMonArgs,
  parseFastNetMonDetails,
  scopeProblems,
  type FastNetMonCall,
} from "../detect/fastnetmon";
import { CliUsageError, parseFlags, type ParsedFlags } from "./args";
import { HttpDelivery, MqttDelivery, type Delivery, type DeliveryAnswer } from "./detector-delivery";
import type { EventWriter } from "./jsonl";

export const FASTNETMON_FLAGS = {
  config: "string",
  home: "string",
  "home-prefix": "list",
  mqtt: "string",
  "mqtt-prefix": "string",
  "mqtt-username": "string",
  "mqtt-password-file": "string",
  "mqtt-hold": "number",
  http: "string",
  "http-withdraw": "string",
  "state-dir": "string",
  lifetime: "number",
  "flow-share": "number",
  "wait-ms": "number",
  "stdin-timeout-ms": "number",
  log: "string",
  help: "boolean",
} as const;

export const DEFAULT_STATE_DIR = "/var/lib/dots-call-home/fastnetmon";

export interface FastNetMonConfig {
  homePrefixes: Record<string, string[]>;
  delivery: {
    mqtt?: { url: string; prefix?: string; username?: string; password?: string; hold?: number };
    http?: { url: string; withdrawUrl?: string };
  };
  stateDir: string;
  lifetime: number;
  flowShare: number;
  waitMs: number;
  stdinTimeoutMs: number;
  log?: string;
  call: FastNetMonCall;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function numberIn(v: unknown, name: string, min: number, max: number, integer = true): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max)
    throw new CliUsageError(`${name} must be ${integer ? "an integer" : "a number"} in ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

/** Flags (and --config, the same JSON file `listen` reads: its homePrefixes and mqtt apply) plus FastNetMon's 4 arguments. */
export function parseFastNetMonArgsAndFlags(
  argv: readonly string[],
  read: (file: string) => string = (f) => fs.readFileSync(f, "utf8"),
): FastNetMonConfig | "help" {
  const parsed: ParsedFlags = parseFlags(argv, FASTNETMON_FLAGS);
  const f = parsed.values;
  if (f.help === true) return "help";
  let file: Record<string, unknown> = {};
  let base = ".";
  if (typeof f.config === "string") {
    let text: string;
    try {
      text = read(f.config);
    } catch (e) {
      throw new CliUsageError(`cannot read --config ${f.config}: ${(e as Error).message}`);
    }
    try {
      const j = JSON.parse(text) as unknown;
      if (!isRecord(j)) throw new Error("not a JSON object");
      file = j;
    } catch (e) {
      throw new CliUsageError(`--config ${f.config} is not a JSON object: ${(e as Error).message}`);
    }
    base = f.config.includes("/") ? f.config.slice(0, f.config.lastIndexOf("/")) : ".";
  }
  const fnm = isRecord(file.fastnetmon) ? file.fastnetmon : {};

  const homePrefixes: Record<string, string[]> = {};
  if (file.homePrefixes !== undefined) {
    if (!isRecord(file.homePrefixes)) throw new CliUsageError(`"homePrefixes" must map home names to prefix lists`);
    for (const [name, list] of Object.entries(file.homePrefixes)) {
      if (!Array.isArray(list) || list.some((p) => typeof p !== "string" || !p.includes("/")))
        throw new CliUsageError(`homePrefixes.${name} must be a list of CIDR prefixes`);
      homePrefixes[name] = [...(list as string[])];
    }
  }
  for (const raw of (f["home-prefix"] as string[] | undefined) ?? []) {
    const eq = raw.indexOf("=");
    const name = eq >= 0 ? raw.slice(0, eq) : (f.home as string | undefined);
    const prefix = eq >= 0 ? raw.slice(eq + 1) : raw;
    if (!name) throw new CliUsageError(`--home-prefix ${raw}: say which home it belongs to (NAME=PREFIX) or give --home`);
    if (!prefix.includes("/")) throw new CliUsageError(`--home-prefix ${raw}: expected a CIDR prefix such as 203.0.113.0/24`);
    (homePrefixes[name] ??= []).push(prefix);
  }
  if (Object.keys(homePrefixes).length === 0)
    throw new CliUsageError(
      "fastnetmon-notify needs the homes' prefixes: --home-prefix NAME=PREFIX (repeatable) or homePrefixes in --config",
    );

  const delivery: FastNetMonConfig["delivery"] = {};
  const fileMqtt = isRecord(file.mqtt) ? file.mqtt : {};
  const mqttUrl = f.mqtt ?? fnm.mqtt ?? fileMqtt.url;
  if (mqttUrl !== undefined) {
    if (typeof mqttUrl !== "string" || !/^mqtts?:\/\//.test(mqttUrl))
      throw new CliUsageError(`--mqtt must be an mqtt:// or mqtts:// URL, got ${JSON.stringify(mqttUrl)}`);
    const m: NonNullable<FastNetMonConfig["delivery"]["mqtt"]> = { url: mqttUrl };
    const prefix = f["mqtt-prefix"] ?? fileMqtt.prefix;
    if (prefix !== undefined) m.prefix = String(prefix);
    const user = f["mqtt-username"] ?? fileMqtt.username;
    if (user !== undefined) m.username = String(user);
    const pwFile =
      (f["mqtt-password-file"] as string | undefined) ??
      (typeof fileMqtt.passwordFile === "string"
        ? `${fileMqtt.passwordFile.startsWith("/") ? "" : base + "/"}${fileMqtt.passwordFile}`
        : undefined);
    if (pwFile !== undefined) {
      try {
        m.password = read(pwFile).trim();
      } catch (e) {
        throw new CliUsageError(`cannot read --mqtt-password-file ${pwFile}: ${(e as Error).message}`);
      }
    } else if (process.env.DOTS_MQTT_PASSWORD) m.password = process.env.DOTS_MQTT_PASSWORD;
    const hold = f["mqtt-hold"] ?? fnm.hold;
    if (hold !== undefined) m.hold = numberIn(hold, "--mqtt-hold", 0, 86_400);
    delivery.mqtt = m;
  }
  const httpUrl = f.http ?? fnm.http;
  if (httpUrl !== undefined) {
    if (typeof httpUrl !== "string" || !/^https?:\/\//.test(httpUrl))
      throw new CliUsageError(`--http must be an http:// or https:// URL, got ${JSON.stringify(httpUrl)}`);
    delivery.http = { url: httpUrl };
    const w = f["http-withdraw"] ?? fnm.httpWithdraw;
    if (w !== undefined) {
      if (typeof w !== "string" || !/^https?:\/\//.test(w)) throw new CliUsageError(`--http-withdraw must be an http(s) URL`);
      delivery.http.withdrawUrl = w;
    }
  }
  if (!delivery.mqtt && !delivery.http)
    throw new CliUsageError(
      "fastnetmon-notify needs a way to the listener: --mqtt URL (the MQTT command contract) and/or --http URL (an ISP flow's POST endpoint)",
    );

  let call: FastNetMonCall;
  try {
    call = parseFastNetMonArgs(parsed.positional);
  } catch (e) {
    if (e instanceof FastNetMonArgsError) throw new CliUsageError(e.message);
    throw e;
  }
  const cfg: FastNetMonConfig = {
    homePrefixes,
    delivery,
    stateDir: String(f["state-dir"] ?? fnm.stateDir ?? DEFAULT_STATE_DIR),
    lifetime: numberIn(f.lifetime ?? fnm.lifetime ?? 3600, "--lifetime", 1, 0xfffffffe),
    flowShare: numberIn(f["flow-share"] ?? fnm.flowShare ?? 0.2, "--flow-share", 0, 1, false),
    waitMs: numberIn(f["wait-ms"] ?? fnm.waitMs ?? 10_000, "--wait-ms", 1, 600_000),
    stdinTimeoutMs: numberIn(f["stdin-timeout-ms"] ?? 5000, "--stdin-timeout-ms", 1, 600_000),
    call,
  };
  const log = f.log ?? fnm.log;
  if (log !== undefined) cfg.log = String(log);
  return cfg;
}

/** Reads stdin up to MAX_DETAILS_BYTES, until EOF or the timeout (FastNetMon closes the pipe when done). */
export function readDetails(
  input: NodeJS.ReadableStream,
  timeoutMs: number,
): Promise<{ text: string; truncated: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    const finish = (timedOut: boolean): void => {
      clearTimeout(timer);
      input.removeListener("data", onData);
      input.removeListener("end", onEnd);
      input.removeListener("error", onEnd);
      (input as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      resolve({ text: Buffer.concat(chunks).toString("utf8"), truncated, timedOut });
    };
    const onData = (c: Buffer | string): void => {
      const b = typeof c === "string" ? Buffer.from(c) : c;
      if (size + b.length > MAX_DETAILS_BYTES) {
        chunks.push(b.subarray(0, MAX_DETAILS_BYTES - size));
        size = MAX_DETAILS_BYTES;
        truncated = true;
        finish(false);
        return;
      }
      chunks.push(b);
      size += b.length;
    };
    const onEnd = (): void => finish(false);
    const timer = setTimeout(() => finish(true), timeoutMs);
    input.on("data", onData);
    input.once("end", onEnd);
    input.once("error", onEnd);
  });
}

function accepted(a: DeliveryAnswer): boolean {
  return a.kind === "response" && typeof a.code === "string" && a.code.startsWith("2.");
}

/** A second call naming the same scope within this time is the same attack (ban + attack_details). */
const SAME_ATTACK_MS = 60_000;

/**
 * Handles one FastNetMon call. Returns the exit code: 0 handled (including calls that need no
 * request), 1 the listener was not reached or refused.
 */
export async function runFastNetMonNotify(
  cfg: FastNetMonConfig,
  details: string | undefined,
  emit: EventWriter,
  deliveries?: Delivery[],
): Promise<number> {
  const { call } = cfg;
  emit("fastnetmon-call", { address: call.address, direction: call.direction, pps: call.pps, action: call.action });
  if (call.direction !== "outgoing") {
    emit("ignored", { address: call.address, reason: `a ${call.direction} attack: call home acts on attacks leaving a home (outgoing)` });
    return 0;
  }
  const owner = homeForAddress(call.address, cfg.homePrefixes);
  if (!owner) {
    emit("ignored", { address: call.address, reason: `${call.address} is inside no home's prefixes: no request` });
    return 0;
  }
  const home = owner.home;
  const state = new BanState(cfg.stateDir);
  const outs = deliveries ?? makeDeliveries(cfg);
  try {
    return await state.withLock(call.address, async () => {
      const rec = state.read(call.address);
      if (call.action === "unban") return await unban(cfg, state, rec, outs, emit);
      const parsed = parseFastNetMonDetails(details ?? "");
      const s = attackScope(call, parsed, { lifetime: cfg.lifetime, flowShare: cfg.flowShare });
      for (const note of s.notes) emit("note", { address: call.address, action: call.action, note });
      const now = new Date().toISOString();
      if (call.action === "attack_details" && rec?.scope && (rec.withPorts || s.sourcePorts.length === 0)) {
        emit("ignored", {
          address: call.address,
          reason: rec.withPorts ? "the ban's request already named the ports" : "the packet samples add no ports",
        });
        return 0;
      }
      if (!s.scope) {
        if (!rec)
          state.write({
            address: call.address,
            home,
            id: `fnm-${call.address}-${Date.now()}`,
            withPorts: false,
            bannedAt: now,
            updatedAt: now,
          });
        emit("waiting", {
          address: call.address,
          home,
          reason:
            call.action === "ban"
              ? "no target in the ban's details: the request goes out with the packet samples (attack_details)"
              : "no target in the packet samples either: no request (target-prefix is mandatory)",
        });
        return 0;
      }
      // FastNetMon runs ban and attack_details of one attack in parallel: whichever comes second
      // finds the very scope already accepted moments ago and sends nothing more. A later ban of
      // the address (a new attack, or after a failed withdrawal) still refreshes the mid.
      if (
        rec?.scope &&
        rec.mid !== undefined &&
        JSON.stringify(rec.scope) === JSON.stringify(s.scope) &&
        Date.now() - Date.parse(rec.updatedAt) < SAME_ATTACK_MS
      ) {
        emit("ignored", {
          address: call.address,
          reason: `mid ${rec.mid} went out with this very scope moments ago (${call.action} of the same attack)`,
        });
        return 0;
      }
      const problems = scopeProblems(s.scope, cfg.homePrefixes[home]);
      if (problems.length > 0) {
        emit("error", { code: "INVALID_REQUEST", address: call.address, home, message: problems.join("; ") });
        return 0;
      }
      const record: BanRecord = rec
        ? { ...rec, home, scope: s.scope, withPorts: s.sourcePorts.length > 0, updatedAt: now }
        : {
            address: call.address,
            home,
            id: `fnm-${call.address}-${Date.now()}`,
            scope: s.scope,
            withPorts: s.sourcePorts.length > 0,
            bannedAt: now,
            updatedAt: now,
          };
      state.write(record); // the intent first: an unban finds it even if this process dies mid-request
      const id = rec?.scope ? `${record.id}-${Date.now()}` : record.id;
      emit("request", { address: call.address, home, id, mid: record.mid, scope: s.scope, withPorts: record.withPorts });
      let ok = false;
      for (const d of outs) {
        let a: DeliveryAnswer;
        try {
          a = await d.mitigate(home, id, s.scope, record.mid);
        } catch (e) {
          emit("error", { code: "DELIVERY", via: d.describe, home, id, message: (e as Error).message });
          continue;
        }
        emit("answer", { via: d.describe, home, id, ...a });
        if (a.mid !== undefined && accepted(a)) record.mid = a.mid;
        ok ||= accepted(a) || a.kind === "held";
      }
      record.updatedAt = new Date().toISOString();
      state.write(record);
      return ok ? 0 : 1;
    });
  } finally {
    if (!deliveries) await Promise.all(outs.map((d) => d.close().catch(() => undefined)));
  }
}

async function unban(
  cfg: FastNetMonConfig,
  state: BanState,
  rec: BanRecord | undefined,
  outs: Delivery[],
  emit: EventWriter,
): Promise<number> {
  const address = cfg.call.address;
  if (!rec) {
    emit("ignored", { address, reason: "no mitigation recorded for this address (none was sent, or it was withdrawn already)" });
    return 0;
  }
  if (rec.mid === undefined) {
    state.remove(address);
    emit("ignored", {
      address,
      home: rec.home,
      id: rec.id,
      reason: rec.scope
        ? `the listener never named the mid of request ${rec.id}: it ends with its lifetime (${String(rec.scope.lifetime)} s)`
        : "the ban never sent a request (no target was known)",
    });
    return 0;
  }
  const id = `${rec.id}-unban`;
  emit("withdraw", { address, home: rec.home, id, mid: rec.mid });
  let done = false;
  for (const d of outs) {
    let a: DeliveryAnswer;
    try {
      a = await d.withdraw(rec.home, id, rec.mid);
    } catch (e) {
      emit("error", { code: "DELIVERY", via: d.describe, home: rec.home, id, message: (e as Error).message });
      continue;
    }
    emit("answer", { via: d.describe, home: rec.home, id, ...a });
    // 2.02 withdrawn; 4.04 the home no longer has it (expired, or withdrawn by someone else)
    done ||= accepted(a) || a.code === "4.04" || a.kind === "held" || (a.kind === "error" && /^UNKNOWN_MITIGATION\b/.test(a.error ?? ""));
  }
  if (done) state.remove(address);
  else
    emit("error", {
      code: "NOT_WITHDRAWN",
      address,
      home: rec.home,
      mid: rec.mid,
      message: `kept in ${cfg.stateDir}: the next ban of ${address} refreshes mid ${rec.mid}; otherwise it ends with its lifetime`,
    });
  return done ? 0 : 1;
}

function makeDeliveries(cfg: FastNetMonConfig): Delivery[] {
  const out: Delivery[] = [];
  const m = cfg.delivery.mqtt;
  if (m)
    out.push(
      new MqttDelivery({
        url: m.url,
        prefix: m.prefix,
        username: m.username,
        password: m.password,
        waitMs: cfg.waitMs,
        holdSeconds: m.hold,
      }),
    );
  const h = cfg.delivery.http;
  if (h) out.push(new HttpDelivery({ url: h.url, withdrawUrl: h.withdrawUrl, waitMs: cfg.waitMs }));
  return out;
}
