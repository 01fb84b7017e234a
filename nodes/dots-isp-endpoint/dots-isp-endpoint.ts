// Config node owning the ISP side's listener (port, bind address, transports, credentials, home
// prefixes, drop-list), as mqtt-broker owns the connection of mqtt in/out. Listener nodes use it;
// its engine and sessions survive deploys that leave these settings unchanged (see
// nodes/lib/endpoint-registry.ts).
import type { NodeAPI, NodeDef } from "node-red";
import { checkConfigVersion } from "../lib/common";
import type { EndpointNode } from "../lib/endpoint";
import { ispHub, type IspEndpointCredentials, type IspEndpointSettings } from "../lib/isp-endpoint";
import type { CallHomeListener } from "../../src/dots/isp-engine";

interface IspEndpointDef extends NodeDef, IspEndpointSettings {
  /** The state directory's name when not this node's id (an endpoint made from a v1 listener keeps that node's). */
  stateId?: string;
  version: number;
}

type IspEndpointNode = EndpointNode<CallHomeListener> & { credentials?: IspEndpointCredentials };

export = function (RED: NodeAPI): void {
  function DotsIspEndpoint(this: IspEndpointNode, config: IspEndpointDef): void {
    RED.nodes.createNode(this, config);
    checkConfigVersion(RED, this, config.version);
    const t = (key: string, args?: Record<string, unknown>): string => RED._(`dots-isp-endpoint.${key}`, args as never);
    this.hub = ispHub(RED, this, this.id, (config.stateId || "").trim() || this.id, config, t, this.credentials ?? {});
    this.on("close", (removed: boolean, done: () => void) => {
      this.hub.close(removed).then(done, done);
    });
  }
  RED.nodes.registerType(
    "dots-isp-endpoint",
    DotsIspEndpoint as never,
    {
      credentials: { ticketSecret: { type: "password" } },
    } as never,
  );
};
