// Child processes: typed errors for a missing tool, a refused permission, a time limit and an
// output cap, and line streaming that never buffers without bound.
import { strict as assert } from "node:assert";
import { CommandRunner } from "../../../src/home/runner";
import {
  CommandTimeoutError,
  OutputTooLargeError,
  PermissionDeniedError,
  ToolMissingError,
  CommandFailedError,
} from "../../../src/home/errors";
import { hasCommand, isRoot, requireOrSkip } from "../../support/env";
import { ConntrackEventSource, ConntrackListSource, ProcConntrackSource } from "../../../src/home/nat-source";
import { scopeToQuery } from "../../../src/home/scope";

const q = scopeToQuery({ "target-prefix": ["203.0.113.5/32"], "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"] });

describe("command runner", () => {
  const runner = new CommandRunner();

  it("names a missing tool, also behind a prefix", async () => {
    await assert.rejects(
      runner.run(["dots-no-such-tool-x"]),
      (e: unknown) => e instanceof ToolMissingError && e.tool === "dots-no-such-tool-x",
    );
    await assert.rejects(
      new CommandRunner({ prefix: ["dots-no-such-prefix"] }).run(["true"]),
      (e: unknown) => e instanceof ToolMissingError && e.tool === "dots-no-such-prefix",
    );
    await assert.rejects(new CommandRunner({ prefix: ["env"] }).run(["dots-no-such-tool-y"]), ToolMissingError);
  });

  it("a NAT source without conntrack reports the missing tool by name", async () => {
    const src = new ConntrackListSource(new CommandRunner({ prefix: ["env", "PATH=/nonexistent"] }));
    await assert.rejects(src.lookup(q), (e: unknown) => e instanceof ToolMissingError && e.tool === "conntrack");
    const events = new ConntrackEventSource(new CommandRunner({ prefix: ["env", "PATH=/nonexistent"] }), { subscribeDelayMs: 50 });
    await assert.rejects(events.lookup(q), (e: unknown) => e instanceof ToolMissingError && e.tool === "conntrack");
    assert.equal(events.inSync, false);
    await events.close();
    const proc = new ProcConntrackSource(runner, "/nonexistent/nf_conntrack");
    await assert.rejects(proc.lookup(q), (e: unknown) => e instanceof ToolMissingError && e.tool === "/nonexistent/nf_conntrack");
  });

  it("reports a refused permission as such (conntrack and nft as an unprivileged user)", async function () {
    requireOrSkip(this, "root and setpriv", isRoot() && hasCommand("setpriv") && hasCommand("nft") && hasCommand("conntrack"));
    const nobody = new CommandRunner({ prefix: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] });
    await assert.rejects(nobody.run(["conntrack", "-L"]), (e: unknown) => e instanceof PermissionDeniedError && e.tool === "conntrack");
    await assert.rejects(nobody.run(["nft", "list", "ruleset"]), PermissionDeniedError);
  });

  it("stops a command at its time limit", async () => {
    await assert.rejects(runner.run(["sleep", "5"], { timeoutMs: 50 }), CommandTimeoutError);
    await assert.rejects(runner.stream(["sleep", "5"], () => undefined, { timeoutMs: 50 }).done, CommandTimeoutError);
  });

  it("stops a command whose output exceeds the cap", async () => {
    await assert.rejects(runner.run(["yes"], { maxOutputBytes: 10_000 }), OutputTooLargeError);
    await assert.rejects(runner.stream(["yes"], () => undefined, { maxLines: 1000 }).done, OutputTooLargeError);
  });

  it("streams lines, drops over-long ones, passes stdin, reports exit failures with stderr", async () => {
    const lines: string[] = [];
    const h = runner.stream(["sh", "-c", "printf 'a\\nbbbbbbbbbbbbbbbbbbbb\\nc'"], (l) => lines.push(l), { maxLineLength: 10 });
    assert.deepEqual(await h.done, { exitCode: 0, droppedLines: 1 });
    assert.deepEqual(lines, ["a", "c"]);
    assert.equal((await runner.run(["cat"], { input: "hello" })).stdout, "hello");
    await assert.rejects(
      runner.run(["sh", "-c", "echo boom >&2; exit 3"]),
      (e: unknown) => e instanceof CommandFailedError && e.exitCode === 3 && /boom/.test(e.stderr),
    );
  });

  it("stop() ends a long-running stream cleanly", async () => {
    const h = runner.stream(["sleep", "30"], () => undefined);
    h.stop();
    const r = await h.done;
    assert.notEqual(r.exitCode, 0);
  });
});
