// Builds a DOTS Call Home mitigation request (JSON view, RFC 9132 + RFC 9066 names) from the
// form or from msg, checks it with the library's validator, and hands it on for the listener.
import type { Node, NodeAPI, NodeMessageInFlow } from "node-red";
import { FieldError, checkConfigVersion, evaluate, listOf, toError, tryRequire } from "../lib/common";
import { CH, MITIGATION_SCOPE, attributeOf, buildScope, requestFields } from "../lib/request";
import type { FieldName, RequestDef, ValidationModule } from "../lib/request";
import type { DotsJson } from "../../src/dots/api";

export = function (RED: NodeAPI): void {
  const validation = tryRequire<ValidationModule>("../../src/dots/validation");

  function DotsMitigationRequest(this: Node, config: RequestDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    checkConfigVersion(RED, node, config.version);
    const allowIndefinite = config.allowIndefinite === true;
    node.status({});

    node.on("input", (msg: NodeMessageInFlow, send, done) => {
      void (async () => {
        const values: Partial<Record<FieldName, unknown>> = {};
        for (const f of requestFields) {
          const value = config[f] ?? "";
          const type = config[`${f}Type`] || "str";
          try {
            values[f] = type === "str" && value === "" ? undefined : await evaluate(RED, node, value, type, msg);
          } catch (e) {
            throw new FieldError(attributeOf[f], toError(e).message);
          }
        }
        const json = buildScope(values, allowIndefinite);
        if (validation) {
          const verdict = validation.validateMitigationRequest(json, { side: "isp", allowIndefiniteLifetime: allowIndefinite });
          if (!verdict.ok) {
            const first = verdict.errors[0];
            const err = new FieldError(
              first ? first.field : "request",
              verdict.errors.map((x) => `${x.field}: ${x.message}`).join("; "),
              false,
            );
            (err as FieldError & { errors?: unknown }).errors = verdict.errors;
            throw err;
          }
        }
        const homes = listOf(values.home);
        const m = msg as NodeMessageInFlow & { dots?: Record<string, unknown> };
        m.payload = json;
        m.dots = { ...(m.dots ?? {}), side: "isp", action: "mitigate" };
        if (homes.length) m.dots.session = homes[0];
        const scope = (json[MITIGATION_SCOPE] as { scope: DotsJson[] }).scope[0];
        node.status({
          fill: "green",
          shape: "dot",
          text: RED._("dots-mitigation-request.status.built", { source: (scope[`${CH}source-prefix`] as string[])[0] }),
        });
        send(m);
      })().then(
        () => done(),
        (e) => {
          const err = toError(e);
          node.status({
            fill: "red",
            shape: "ring",
            text: RED._("dots-mitigation-request.status.invalid", { field: err instanceof FieldError ? err.field : "request" }),
          });
          done(err);
        },
      );
    });
  }
  RED.nodes.registerType("dots-mitigation-request", DotsMitigationRequest as never);
};
