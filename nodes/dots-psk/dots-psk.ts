// Config node holding one DTLS/TLS pre-shared key. The key is a `password` credential: it is
// stored encrypted in flows_cred.json, never sent back to the editor and never exported.
import type { NodeAPI, NodeDef } from "node-red";
import { checkConfigVersion, pskBytes, toError } from "../lib/common";
import type { PskCredential } from "../../src/dots/api";
import { pskKeyProblem } from "../../src/dots/defaults";
import type { DotsPskNode } from "../lib/types";

interface PskDef extends NodeDef {
  home: string;
  keyFormat: string;
  version: number;
}

export = function (RED: NodeAPI): void {
  function DotsPsk(this: DotsPskNode, config: PskDef): void {
    RED.nodes.createNode(this, config);
    checkConfigVersion(RED, this, config.version);
    const keyFormat = config.keyFormat === "text" ? "text" : "hex";
    this.home = (config.home || "").trim() || (this.credentials?.identity ?? "");
    this.credential = (): PskCredential => {
      const identity = this.credentials?.identity ?? "";
      const key = this.credentials?.key ?? "";
      if (!identity) throw new Error(RED._("dots-psk.errors.no-identity"));
      if (!key) throw new Error(RED._("dots-psk.errors.no-key"));
      let bytes: Buffer;
      try {
        bytes = pskBytes(key, keyFormat);
      } catch (e) {
        throw new Error(RED._("dots-psk.errors.bad-key", { reason: toError(e).message }));
      }
      // The editor and the CLI refuse keys under 128 bits; so does the runtime (imported flows).
      const problem = pskKeyProblem(bytes);
      if (problem) throw new Error(RED._("dots-psk.errors.bad-key", { reason: problem }));
      return { identity, key: bytes };
    };
  }
  RED.nodes.registerType(
    "dots-psk",
    DotsPsk as never,
    {
      credentials: { identity: { type: "text" }, key: { type: "password" } },
    } as never,
  );
};
