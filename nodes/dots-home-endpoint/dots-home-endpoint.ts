// Config node owning the home side's dialer (ISP addresses or discovery, port, transport,
// credentials, home prefixes, timers). Dialer nodes use it; its engine and session survive
// deploys that leave these settings unchanged (see nodes/lib/endpoint-registry.ts).
import type { NodeAPI, NodeDef } from "node-red";
import { checkConfigVersion } from "../lib/common";
import type { EndpointNode } from "../lib/endpoint";
import { homeHub, type HomeEndpointSettings } from "../lib/home-endpoint";
import type { CallHomeDialer } from "../../src/dots/home-engine";

interface HomeEndpointDef extends NodeDef, HomeEndpointSettings {
  /** The state directory's name when not this node's id (an endpoint made from a v1 dialer keeps that node's). */
  stateId?: string;
  version: number;
}

type HomeEndpointNode = EndpointNode<CallHomeDialer>;

export = function (RED: NodeAPI): void {
  function DotsHomeEndpoint(this: HomeEndpointNode, config: HomeEndpointDef): void {
    RED.nodes.createNode(this, config);
    checkConfigVersion(RED, this, config.version);
    const t = (key: string, args?: Record<string, unknown>): string => RED._(`dots-home-endpoint.${key}`, args as never);
    this.hub = homeHub(RED, this, this.id, (config.stateId || "").trim() || this.id, config, t);
    this.on("close", (removed: boolean, done: () => void) => {
      this.hub.close(removed).then(done, done);
    });
  }
  RED.nodes.registerType("dots-home-endpoint", DotsHomeEndpoint as never);
};
