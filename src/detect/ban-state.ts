// What a FastNetMon ban turned into, kept on disk per banned address so the unban (a separate
// process, maybe after a reboot) withdraws exactly the mitigation the ban created. Each record is
// written with write + fsync + rename; a per-address lock file keeps the ban and attack_details
// calls FastNetMon runs in parallel threads from racing each other.
import * as fs from "node:fs";
import * as path from "node:path";

export interface BanRecord {
  address: string;
  home: string;
  /** The command id the request went out with (the MQTT contract answers by it). */
  id: string;
  /** The mid the listener gave the mitigation, once an answer named it. */
  mid?: number;
  /** The scope sent, or undefined while the ban waits for packet samples to name a target. */
  scope?: Record<string, unknown>;
  /** Whether the request named ports (a later attack_details call may add them). */
  withPorts: boolean;
  bannedAt: string;
  updatedAt: string;
}

export class BanStateError extends Error {
  override readonly name = "BanStateError";
}

function fileName(address: string): string {
  if (!/^[0-9a-fA-F.:]+$/.test(address)) throw new BanStateError(`not an address: ${JSON.stringify(address)}`);
  return `ban-${address.replace(/:/g, "_")}.json`;
}

export class BanState {
  constructor(readonly dir: string) {}

  private file(address: string): string {
    return path.join(this.dir, fileName(address));
  }

  read(address: string): BanRecord | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.file(address), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
    try {
      const r = JSON.parse(text) as BanRecord;
      return r && r.address === address ? r : undefined;
    } catch {
      throw new BanStateError(`${this.file(address)} is not valid JSON; move it away to start afresh for ${address}`);
    }
  }

  write(record: BanRecord): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const target = this.file(record.address);
    const tmp = `${target}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, "w", 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(record, null, 1) + "\n");
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
    this.syncDir();
  }

  remove(address: string): void {
    try {
      fs.unlinkSync(this.file(address));
      this.syncDir();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }

  private syncDir(): void {
    const fd = fs.openSync(this.dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Runs `fn` holding the address's lock file. A lock older than `staleMs` (a killed holder) is
   * taken over; waiting is bounded by `waitMs`.
   */
  async withLock<T>(address: string, fn: () => Promise<T>, waitMs = 30_000, staleMs = 60_000): Promise<T> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const lock = `${this.file(address)}.lock`;
    const end = Date.now() + waitMs;
    for (;;) {
      try {
        fs.closeSync(fs.openSync(lock, "wx", 0o600));
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        try {
          if (Date.now() - fs.statSync(lock).mtimeMs > staleMs) fs.unlinkSync(lock);
        } catch {
          // gone meanwhile
        }
        if (Date.now() > end) throw new BanStateError(`${lock} is still held after ${waitMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    try {
      return await fn();
    } finally {
      try {
        fs.unlinkSync(lock);
      } catch {
        // already gone
      }
    }
  }
}
