// JSON Lines I/O for the headless command: one event object per stdout line, one command object
// per stdin line. Bad input becomes an error event; nothing here throws at the caller.
import type { Readable, Writable } from "node:stream";

/** Longest stdin line accepted; longer lines are discarded with an error event. */
export const MAX_COMMAND_BYTES = 1 << 20;

export type EventWriter = (event: string, fields?: Record<string, unknown>) => void;

/** Buffers are shown as hex and Errors as their message, so every event is plain JSON. */
export function replacer(_key: string, value: unknown): unknown {
  if (
    value &&
    typeof value === "object" &&
    (value as { type?: string }).type === "Buffer" &&
    Array.isArray((value as { data?: unknown }).data)
  ) {
    return Buffer.from((value as { data: number[] }).data).toString("hex");
  }
  if (value instanceof Error)
    return { name: value.name, message: value.message, ...("code" in value ? { code: (value as { code: unknown }).code } : {}) };
  if (typeof value === "bigint") return value.toString();
  return value;
}

export function makeEventWriter(out: Writable, clock: () => Date = () => new Date()): EventWriter {
  return (event, fields = {}) => {
    let line: string;
    try {
      line = JSON.stringify({ event, time: clock().toISOString(), ...fields }, replacer);
    } catch (e) {
      line = JSON.stringify({
        event: "error",
        time: clock().toISOString(),
        code: "OUTPUT",
        message: `could not serialise ${event}: ${(e as Error).message}`,
      });
    }
    out.write(line + "\n");
  };
}

/** One command object from text, whatever carried it (stdin line, MQTT payload). */
export function decodeCommand(text: string): { cmd: Record<string, unknown> } | { code: "BAD_JSON" | "BAD_COMMAND"; message: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return { code: "BAD_JSON", message: `not JSON: ${(e as Error).message}` };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    return { code: "BAD_COMMAND", message: 'a command must be a JSON object with a "cmd" member' };
  return { cmd: parsed as Record<string, unknown> };
}

export interface CommandReaderHandlers {
  command(cmd: Record<string, unknown>): void;
  error(code: string, message: string, line?: string): void;
  end(): void;
}

/** Splits stdin into lines (bounded), parses each as a JSON object, hands it on. */
export function readCommands(input: Readable, h: CommandReaderHandlers): () => void {
  let buf = "";
  let discarding = false;
  const onData = (chunk: Buffer | string): void => {
    buf += typeof chunk === "string" ? chunk : chunk.toString("utf8");
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl < 0) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (discarding) {
        discarding = false;
        continue;
      }
      handleLine(line);
    }
    if (buf.length > MAX_COMMAND_BYTES) {
      h.error("LINE_TOO_LONG", `command line longer than ${MAX_COMMAND_BYTES} bytes discarded`);
      buf = "";
      discarding = true;
    }
  };
  const handleLine = (raw: string): void => {
    const line = raw.trim();
    if (line.length === 0) return;
    const decoded = decodeCommand(line);
    if ("code" in decoded) {
      h.error(decoded.code, decoded.message, line.slice(0, 200));
      return;
    }
    try {
      h.command(decoded.cmd);
    } catch (e) {
      h.error("COMMAND_FAILED", (e as Error).message);
    }
  };
  const onEnd = (): void => {
    if (buf.trim().length > 0 && !discarding) handleLine(buf);
    buf = "";
    h.end();
  };
  input.on("data", onData);
  input.on("end", onEnd);
  return () => {
    input.off("data", onData);
    input.off("end", onEnd);
  };
}
