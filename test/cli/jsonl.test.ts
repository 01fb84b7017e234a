import { strict as assert } from "node:assert";
import { PassThrough } from "node:stream";
import { MAX_COMMAND_BYTES, makeEventWriter, readCommands } from "../../src/cli/jsonl";

function collect(): { out: PassThrough; lines: () => Array<Record<string, unknown>> } {
  const out = new PassThrough();
  let text = "";
  out.on("data", (c: Buffer) => (text += c.toString()));
  return {
    out,
    lines: () =>
      text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("cli/jsonl", () => {
  it("writes one JSON object per line with event and ISO time; Buffers as hex, Errors as messages", () => {
    const { out, lines } = collect();
    const emit = makeEventWriter(out, () => new Date(0));
    emit("listening", { port: 4647 });
    emit("x", { key: Buffer.from([1, 2]), err: new Error("boom") });
    assert.deepEqual(lines(), [
      { event: "listening", time: "1970-01-01T00:00:00.000Z", port: 4647 },
      { event: "x", time: "1970-01-01T00:00:00.000Z", key: "0102", err: { name: "Error", message: "boom" } },
    ]);
  });

  it("hands on each JSON object line and reports bad lines as errors without stopping", async () => {
    const input = new PassThrough();
    const cmds: unknown[] = [];
    const errors: string[] = [];
    const ended = new Promise<void>((resolve) =>
      readCommands(input, { command: (c) => cmds.push(c), error: (code) => errors.push(code), end: resolve }),
    );
    input.write('{"cmd":"sessions"}\n{not json}\n[1,2]\n\n  {"cmd":"get",');
    input.write('"session":"a"}\n');
    input.end('{"cmd":"last"}');
    await ended;
    assert.deepEqual(cmds, [{ cmd: "sessions" }, { cmd: "get", session: "a" }, { cmd: "last" }]);
    assert.deepEqual(errors, ["BAD_JSON", "BAD_COMMAND"]);
  });

  it("discards an over-long line with an error and carries on with the next", () => {
    const input = new PassThrough();
    const cmds: unknown[] = [];
    const errors: string[] = [];
    readCommands(input, { command: (c) => cmds.push(c), error: (code) => errors.push(code), end: () => undefined });
    input.write("x".repeat(MAX_COMMAND_BYTES + 10));
    input.write('tail of the long line\n{"cmd":"ok"}\n');
    assert.deepEqual(errors, ["LINE_TOO_LONG"]);
    assert.deepEqual(cmds, [{ cmd: "ok" }]);
  });

  it("turns a throwing command handler into an error event", () => {
    const input = new PassThrough();
    const errors: string[] = [];
    readCommands(input, {
      command: () => {
        throw new Error("nope");
      },
      error: (code, msg) => errors.push(`${code}:${msg}`),
      end: () => undefined,
    });
    input.write('{"cmd":"x"}\n');
    assert.deepEqual(errors, ["COMMAND_FAILED:nope"]);
  });
});
