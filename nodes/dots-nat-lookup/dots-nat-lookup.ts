// Maps the attack source named in a mitigation (public address/ports after NAT) to the device(s)
// inside the home, over src/home's NAT lookup (conntrack, /proc or a static table).
import type { Node, NodeAPI, NodeDef, NodeMessageInFlow } from "node-red";
import { NatLookup } from "../../src/home/nat-lookup";
import { sharedNatSource, type NatSpec } from "../../src/home/nat-source";
import { CommandRunner, netnsRunner } from "../../src/home/runner";
import { checkConfigVersion, ErrorReporter, finishClose, toError } from "../lib/common";

interface NatDef extends NodeDef {
  source: string; // auto | conntrack | proc | static
  table: string; // JSON array (static)
  netns: string; // optional network namespace (labs)
  version: number;
}

export = function (RED: NodeAPI): void {
  function DotsNatLookup(this: Node, config: NatDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    let lookup: Promise<NatLookup> | undefined;
    let configError: Error | undefined;
    // Errors outside a message reach Catch nodes through a synthetic msg, also early ones.
    const reporter = new ErrorReporter(RED, node);
    checkConfigVersion(RED, node, config.version);

    const netns = (config.netns || "").trim();
    const runner = netns ? netnsRunner(netns) : new CommandRunner();
    let spec: NatSpec;
    try {
      if (netns && !/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new Error(RED._("dots-nat-lookup.errors.netns"));
      if (config.source === "static") {
        let entries: unknown;
        try {
          entries = JSON.parse(config.table || "[]");
        } catch (e) {
          throw new Error(RED._("dots-nat-lookup.errors.table-json", { reason: toError(e).message }));
        }
        spec = { kind: "table", entries };
      } else if (config.source === "conntrack" || config.source === "proc" || config.source === "auto" || !config.source) {
        spec = (config.source || "auto") as NatSpec;
      } else {
        throw new Error(RED._("dots-nat-lookup.errors.source", { source: config.source }));
      }
      // one conntrack -E per router in this process, shared with every other lookup and enforcer
      lookup = sharedNatSource(spec, { runner, router: netns || "host" }).then(async (source) => {
        await source.start();
        return new NatLookup({
          source,
          runner: spec === undefined || (typeof spec === "object" && spec.kind === "table") ? undefined : runner,
        });
      });
      // A failing source is reported per message (and here once), never as an unhandled rejection.
      lookup.catch((e) => {
        node.status({ fill: "red", shape: "ring", text: RED._("dots-nat-lookup.status.error") });
        reporter.report(e);
      });
      node.status({ fill: "grey", shape: "dot", text: RED._("dots-nat-lookup.status.ready", { source: config.source || "auto" }) });
    } catch (e) {
      configError = toError(e);
      node.status({ fill: "red", shape: "ring", text: RED._("dots-nat-lookup.status.config") });
      reporter.report(configError);
    }

    node.on("input", (msg: NodeMessageInFlow, send, done) => {
      if (configError || !lookup) {
        done(configError ?? new Error("NAT lookup not configured"));
        return;
      }
      const m = msg as NodeMessageInFlow & { nat?: unknown; dots?: Record<string, unknown> };
      lookup
        .then((l) => l.lookup(m.payload))
        .then(
          (result) => {
            m.nat = { found: result.found, devices: result.devices, detail: result.detail };
            node.status(
              result.found
                ? {
                    fill: "green",
                    shape: "dot",
                    text: RED._("dots-nat-lookup.status.found", { count: result.devices.length, first: result.devices[0].address }),
                  }
                : { fill: "yellow", shape: "ring", text: RED._("dots-nat-lookup.status.none") },
            );
            send(m);
            done();
          },
          (e) => {
            node.status({ fill: "red", shape: "ring", text: RED._("dots-nat-lookup.status.error") });
            done(toError(e));
          },
        );
    });

    node.on("close", (_removed: boolean, done: () => void) => {
      const work = lookup
        ? lookup.then(
            (l) => l.close(),
            () => undefined,
          )
        : Promise.resolve();
      finishClose(node, reporter, work, done, 5000);
    });
  }
  RED.nodes.registerType("dots-nat-lookup", DotsNatLookup as never);
};
