// Shapes shared between nodes (a user node reads its config node through these).
import type { Node } from "node-red";
import type { PskCredential } from "../../src/dots/api";

export interface PskCreds {
  identity?: string;
  key?: string;
}

export interface DotsPskNode extends Node<PskCreds> {
  /** Home name used by the ISP listener to route requests (defaults to the identity). */
  home: string;
  /** Returns the credential or throws a readable error (never including the key). */
  credential(): PskCredential;
}
