// Applies nft scripts: the real kernel through `nft -f -` (one atomic transaction per change), or
// a dry run that only records the exact script it would have applied.
import { CommandFailedError, NftError } from "./errors";
import { parseTableJson, checkTableName, DEFAULT_TABLE, type TableElement } from "./nft-script";
import { CommandRunner } from "./runner";

export interface FilterBackend {
  readonly kind: "nftables" | "dry-run";
  readonly table: string;
  /** Applies the script as one transaction: all of it or nothing (NftError). */
  apply(script: string): Promise<void>;
  /** Elements the kernel holds in our sets; undefined when there is no kernel to ask (dry run). */
  listElements(): Promise<TableElement[] | undefined>;
}

export class NftablesBackend implements FilterBackend {
  readonly kind = "nftables";
  readonly table: string;
  constructor(
    private readonly runner: CommandRunner = new CommandRunner(),
    table = DEFAULT_TABLE,
  ) {
    this.table = checkTableName(table);
  }

  async apply(script: string): Promise<void> {
    try {
      await this.runner.run(["nft", "-f", "-"], { input: script, timeoutMs: 15_000, maxOutputBytes: 1024 * 1024 });
    } catch (err) {
      if (err instanceof CommandFailedError) throw new NftError(err.stderr || err.message, script);
      throw err;
    }
  }

  async listElements(): Promise<TableElement[]> {
    let stdout: string;
    try {
      ({ stdout } = await this.runner.run(["nft", "-j", "list", "table", "inet", this.table], { timeoutMs: 15_000 }));
    } catch (err) {
      if (err instanceof CommandFailedError && /No such file or directory/.test(err.stderr)) return [];
      if (err instanceof CommandFailedError) throw new NftError(err.stderr || err.message, `list table inet ${this.table}`);
      throw err;
    }
    return parseTableJson(stdout);
  }
}

export class DryRunBackend implements FilterBackend {
  readonly kind = "dry-run";
  readonly table: string;
  /** Every script "applied", oldest first (bounded). */
  readonly scripts: string[] = [];
  constructor(table = DEFAULT_TABLE, private readonly keep = 1000) {
    this.table = checkTableName(table);
  }
  async apply(script: string): Promise<void> {
    this.scripts.push(script);
    if (this.scripts.length > this.keep) this.scripts.shift();
  }
  async listElements(): Promise<undefined> {
    return undefined;
  }
}
