// Where blocks live. The enforcer speaks in set elements (setup / add / delete / list); a backend
// turns them into its own commands. nftables: `nft -f -` (one atomic transaction per change) and
// `nft -j` to read the kernel's elements back; dry run: records the text it would have applied.
// An iptables/ipset backend is one more class implementing FilterBackend.
import { CommandFailedError, NftError } from "./errors";
import {
  adoptOwnedScript,
  addElementsScript,
  checkTableName,
  deleteElementsScript,
  migrateSetsScript,
  parseTableJson,
  setsWithoutCounter,
  setupScript,
  DEFAULT_TABLE,
  type ElementRef,
  type TableElement,
} from "./nft-script";
import { CommandRunner } from "./runner";

/** One element to add, with the mitigation's lifetime as its timeout and its tag as comment. */
export interface ElementAdd {
  element: ElementRef;
  /** Seconds; undefined or -1 = no timeout. */
  timeoutSec?: number;
  comment?: string;
}

/** A step of a change: add these, or delete those (in order, in one transaction). */
export type ElementOp = { add: ElementAdd[] } | { delete: ElementRef[] };

export interface FilterBackend {
  /** "nftables", "dry-run", ... (shown to operators). */
  readonly kind: string;
  /** Name of our own table (or set prefix) in the kernel. */
  readonly table: string;
  /** Creates the table, sets and rules when absent; existing elements survive. */
  setup(): Promise<string>;
  /** Adds elements (an existing one gets the new timeout where the kernel allows). Resolves with the applied text. */
  add(items: ElementAdd[]): Promise<string>;
  /** Deletes elements; each must exist. Resolves with the applied text. */
  delete(elements: ElementRef[]): Promise<string>;
  /** Several steps as one transaction: all of them or none. Resolves with the applied text. */
  change(ops: ElementOp[]): Promise<string>;
  /** The text change(ops) would apply (consent requests, logs), applying nothing. */
  render(ops: ElementOp[]): string;
  /** Elements the kernel holds in our sets; undefined when there is no kernel to ask (dry run). */
  list(): Promise<TableElement[] | undefined>;
  /** True when `err` says an element to delete was not there (expired meanwhile). */
  isMissingElement(err: unknown): boolean;
}

/** nft text for a change: the same for the real kernel and the dry run. */
function nftText(table: string, ops: ElementOp[], owner?: string): string {
  let out = "";
  for (const op of ops) {
    if ("add" in op) {
      if (op.add.length > 0)
        out += addElementsScript(
          table,
          op.add.map((i) => ({ element: i.element, opts: { timeoutSec: i.timeoutSec, comment: i.comment } })),
          owner,
        );
    } else if (op.delete.length > 0) {
      out += deleteElementsScript(table, op.delete, owner);
    }
  }
  return out;
}

/** 4096 mitigations x 4096 elements would not fit anyway; a table listing above this is refused. */
const MAX_LIST_BYTES = 64 * 1024 * 1024;

export class NftablesBackend implements FilterBackend {
  readonly kind = "nftables";
  readonly table: string;
  /**
   * @param owner the upstream ISP this dialer serves when several share the table: its own sets
   *   and chain (kernelSetName); undefined = the owner-less sets.
   */
  constructor(
    private readonly runner: CommandRunner = new CommandRunner(),
    table = DEFAULT_TABLE,
    private readonly owner?: string,
  ) {
    this.table = checkTableName(table);
  }

  async setup(): Promise<string> {
    try {
      return await this.setupOnce();
    } catch (err) {
      // an element being moved expired between the listing and the transaction: list again
      if (this.owner !== undefined && this.isMissingElement(err)) return this.setupOnce();
      throw err;
    }
  }

  private async setupOnce(): Promise<string> {
    // sets from a version without per-element counters are recreated with them, elements kept
    const json = await this.listJson();
    const legacy = json === undefined ? [] : setsWithoutCounter(json, this.owner);
    let script =
      legacy.length > 0
        ? migrateSetsScript(this.table, legacy, parseTableJson(json!, this.owner), this.owner)
        : setupScript(this.table, this.owner);
    // an owner's elements a version before per-owner sets left in the shared sets move to its own
    if (json !== undefined && this.owner !== undefined) script += adoptOwnedScript(this.table, parseTableJson(json), this.owner);
    await this.apply(script);
    return script;
  }

  add(items: ElementAdd[]): Promise<string> {
    return this.change([{ add: items }]);
  }

  delete(elements: ElementRef[]): Promise<string> {
    return this.change([{ delete: elements }]);
  }

  async change(ops: ElementOp[]): Promise<string> {
    const script = this.render(ops);
    if (script) await this.apply(script);
    return script;
  }

  render(ops: ElementOp[]): string {
    return nftText(this.table, ops, this.owner);
  }

  /** Applies an nft script as one transaction: all of it or nothing (NftError). */
  async apply(script: string): Promise<void> {
    try {
      await this.runner.run(["nft", "-f", "-"], { input: script, timeoutMs: 15_000, maxOutputBytes: 1024 * 1024 });
    } catch (err) {
      if (err instanceof CommandFailedError) throw new NftError(err.stderr || err.message, script);
      throw err;
    }
  }

  async list(): Promise<TableElement[]> {
    const json = await this.listJson();
    return json === undefined ? [] : parseTableJson(json, this.owner);
  }

  /** `nft -j list table` output (argv, no shell; output bounded by the runner); undefined when there is no table. */
  private async listJson(): Promise<string | undefined> {
    try {
      const { stdout } = await this.runner.run(["nft", "-j", "list", "table", "inet", this.table], {
        timeoutMs: 15_000,
        maxOutputBytes: MAX_LIST_BYTES,
      });
      return stdout;
    } catch (err) {
      if (err instanceof CommandFailedError && /No such file or directory/.test(err.stderr)) return undefined;
      if (err instanceof CommandFailedError) throw new NftError(err.stderr || err.message, `list table inet ${this.table}`);
      throw err;
    }
  }

  isMissingElement(err: unknown): boolean {
    return err instanceof NftError && /No such file or directory/.test(err.nftMessage);
  }
}

export class DryRunBackend implements FilterBackend {
  readonly kind: string = "dry-run";
  readonly table: string;
  /** Every script "applied", oldest first (bounded). */
  readonly scripts: string[] = [];
  constructor(
    table = DEFAULT_TABLE,
    private readonly keep = 1000,
    private readonly owner?: string,
  ) {
    this.table = checkTableName(table);
  }
  private record(script: string): string {
    if (!script) return script;
    this.scripts.push(script);
    if (this.scripts.length > this.keep) this.scripts.shift();
    return script;
  }
  async setup(): Promise<string> {
    return this.record(setupScript(this.table, this.owner));
  }
  async add(items: ElementAdd[]): Promise<string> {
    return this.change([{ add: items }]);
  }
  async delete(elements: ElementRef[]): Promise<string> {
    return this.change([{ delete: elements }]);
  }
  async change(ops: ElementOp[]): Promise<string> {
    return this.record(this.render(ops));
  }
  render(ops: ElementOp[]): string {
    return nftText(this.table, ops, this.owner);
  }
  async list(): Promise<TableElement[] | undefined> {
    return undefined;
  }
  isMissingElement(): boolean {
    return false;
  }
}
