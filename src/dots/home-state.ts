// The home's durable mitigation state: one file per dialer in its state directory, replaced
// atomically (write a temp file, fsync, rename over the old one, fsync the directory) so a crash
// at any point leaves either the old or the new file, never a mix. The format is JSON lines (a
// header, one mitigation per line, an end line with the count): a truncated or damaged file still
// yields every intact line, and the end line tells truncation from a complete file.
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import type { DotsJson } from "./api";

export const STATE_FORMAT = "dots-call-home/home-state";
export const STATE_VERSION = 1;
/** Default bounds: the store's own limits (64 clients x 64 mitigations) fit well inside. */
export const DEFAULT_STATE_MAX_MITIGATIONS = 4096;
export const DEFAULT_STATE_MAX_BYTES = 8 * 1024 * 1024;

/** One mitigation as kept on disk. Times are absolute epoch ms so a restart can re-arm them. */
export interface StoredMitigation {
  cuid: string;
  mid: number;
  /** The scope entry as received (normalized: no per-message members). */
  scope: DotsJson;
  /** Granted lifetime, seconds; -1 indefinite. */
  lifetime: number;
  /** Epoch ms when it lapses; null = indefinite. */
  expiresAt: number | null;
  status: number;
  mitigationStart: number;
  attackStatus?: number;
  /** Epoch ms when the active-but-terminating period (status 5) ends. */
  terminatingUntil?: number;
  terminatingPeriodMs: number;
  /** The authenticated peer the cuid is bound to (cuid-collision survives a restart). */
  peer?: string;
  /** The decision's operator text. */
  detail?: string;
  /** What enforcement added (opaque to this layer; src/home writes and reads it). */
  enforcement?: DotsJson;
}

export type StateErrorCode = "STATE_CORRUPT" | "STATE_UNREADABLE" | "STATE_UNWRITABLE" | "STATE_TOO_BIG";

export class StateFileError extends Error {
  constructor(
    readonly code: StateErrorCode,
    readonly file: string,
    message: string,
  ) {
    super(message);
    this.name = "StateFileError";
  }
}

export interface LoadResult {
  entries: StoredMitigation[];
  /** Set when the file was damaged: what was wrong; `entries` holds what could be read. */
  error?: StateFileError;
  /** Where the damaged file was moved aside. */
  keptAs?: string;
}

export interface HomeStateFileOptions {
  maxMitigations?: number;
  maxBytes?: number;
  /** Test hook for a crash between write and rename (a fault the real file system gives on no demand). */
  beforeRename?: (tmpPath: string) => void | Promise<void>;
}

/** The state file's name for one dialer: readable, with a hash so two dialers never share one. */
export function stateFileName(identity: string): string {
  const slug = identity.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 48);
  const hash = createHash("sha256").update(identity).digest("hex").slice(0, 8);
  return `home-${slug}-${hash}.state`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);

/** Checks one decoded line; returns the mitigation or why it is not one. */
function parseEntry(v: unknown): StoredMitigation | string {
  if (!isRecord(v)) return "not an object";
  const { cuid, mid, scope, lifetime, expiresAt, status, mitigationStart, terminatingPeriodMs } = v;
  if (typeof cuid !== "string" || cuid.length === 0 || cuid.length > 256) return "bad cuid";
  if (!isInt(mid) || mid < 0 || mid > 0xffffffff) return "bad mid";
  if (!isRecord(scope)) return "bad scope";
  if (!isInt(lifetime) || lifetime < -1) return "bad lifetime";
  if (expiresAt !== null && !isInt(expiresAt)) return "bad expiresAt";
  if (!isInt(status) || status < 1 || status > 8) return "bad status";
  if (!isInt(mitigationStart)) return "bad mitigationStart";
  if (!isInt(terminatingPeriodMs) || terminatingPeriodMs < 0) return "bad terminatingPeriodMs";
  const out: StoredMitigation = {
    cuid,
    mid,
    scope,
    lifetime,
    expiresAt: expiresAt as number | null,
    status,
    mitigationStart,
    terminatingPeriodMs,
  };
  if (v.attackStatus !== undefined) {
    if (v.attackStatus !== 1 && v.attackStatus !== 2) return "bad attackStatus";
    out.attackStatus = v.attackStatus;
  }
  if (v.peer !== undefined) {
    if (typeof v.peer !== "string" || v.peer.length === 0 || v.peer.length > 1024) return "bad peer";
    out.peer = v.peer;
  }
  if (v.terminatingUntil !== undefined) {
    if (!isInt(v.terminatingUntil)) return "bad terminatingUntil";
    out.terminatingUntil = v.terminatingUntil;
  }
  if (v.detail !== undefined) {
    if (typeof v.detail !== "string") return "bad detail";
    out.detail = v.detail;
  }
  if (v.enforcement !== undefined) {
    if (!isRecord(v.enforcement)) return "bad enforcement";
    out.enforcement = v.enforcement;
  }
  return out;
}

/** Serializes a snapshot; throws STATE_TOO_BIG past the bounds (nothing is written then). */
export function encodeState(
  file: string,
  entries: readonly StoredMitigation[],
  maxMitigations: number,
  maxBytes: number,
  now = Date.now(),
): Buffer {
  if (entries.length > maxMitigations) {
    throw new StateFileError(
      "STATE_TOO_BIG",
      file,
      `state file ${file}: ${entries.length} mitigations exceed the limit of ${maxMitigations}`,
    );
  }
  const lines = [JSON.stringify({ format: STATE_FORMAT, version: STATE_VERSION, savedAt: new Date(now).toISOString() })];
  for (const e of entries) lines.push(JSON.stringify(e));
  lines.push(JSON.stringify({ end: entries.length }));
  const buf = Buffer.from(lines.join("\n") + "\n", "utf8");
  if (buf.length > maxBytes)
    throw new StateFileError("STATE_TOO_BIG", file, `state file ${file}: ${buf.length} bytes exceed the limit of ${maxBytes}`);
  return buf;
}

/** Reads a state file's text; keeps every intact mitigation line and reports the first defect. */
export function decodeState(file: string, text: string, maxMitigations: number): { entries: StoredMitigation[]; problem?: string } {
  const lines = text.split("\n");
  const entries: StoredMitigation[] = [];
  const problems: string[] = [];
  let header = false;
  let end: number | undefined;
  const complete = text.endsWith("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0) continue;
    if (i === lines.length - 1 && !complete) {
      problems.push(`line ${i + 1} is cut off`);
      break;
    }
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      problems.push(`line ${i + 1} is not JSON`);
      continue;
    }
    if (!header) {
      if (!isRecord(v) || v.format !== STATE_FORMAT) return { entries, problem: `line 1 is not a ${STATE_FORMAT} header` };
      if (v.version !== STATE_VERSION)
        return { entries, problem: `version ${String(v.version)} is not supported (this build reads ${STATE_VERSION})` };
      header = true;
      continue;
    }
    if (isRecord(v) && "end" in v && Object.keys(v).length === 1) {
      end = typeof v.end === "number" ? v.end : -1;
      break;
    }
    if (entries.length >= maxMitigations) {
      problems.push(`more than ${maxMitigations} mitigations; the rest is ignored`);
      break;
    }
    const e = parseEntry(v);
    if (typeof e === "string") problems.push(`line ${i + 1}: ${e}`);
    else entries.push(e);
  }
  if (!header && problems.length === 0) problems.push(text.length === 0 ? "the file is empty" : "no header line");
  if (header && end === undefined && problems.length === 0) problems.push("the end line is missing (truncated)");
  if (end !== undefined && end !== entries.length && problems.length === 0)
    problems.push(`the end line counts ${end} mitigations, ${entries.length} were read`);
  return problems.length > 0 ? { entries, problem: problems.join("; ") } : { entries };
}

/** One dialer's state file. save() coalesces: a burst of changes costs at most two writes. */
export class HomeStateFile {
  readonly file: string;
  readonly dir: string;
  private readonly maxMitigations: number;
  private readonly maxBytes: number;
  private readonly beforeRename?: (tmp: string) => void | Promise<void>;
  private writing: Promise<void> | undefined;
  /** Callers waiting for the next write, which starts when the current one ends. */
  private next: { snapshot: () => StoredMitigation[]; waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> } | undefined;
  /** Writes that finished (for tests and figures). */
  writes = 0;

  constructor(dir: string, name: string, opts: HomeStateFileOptions = {}) {
    this.dir = path.resolve(dir);
    this.file = path.join(this.dir, name);
    this.maxMitigations = opts.maxMitigations ?? DEFAULT_STATE_MAX_MITIGATIONS;
    this.maxBytes = opts.maxBytes ?? DEFAULT_STATE_MAX_BYTES;
    this.beforeRename = opts.beforeRename;
  }

  /** Creates the directory (0700) if absent and checks that a file can be written there. */
  async prepare(): Promise<void> {
    try {
      await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
      const probe = path.join(this.dir, `.probe-${process.pid}`);
      await fsp.writeFile(probe, "");
      await fsp.unlink(probe);
    } catch (e) {
      throw new StateFileError("STATE_UNWRITABLE", this.file, `state directory ${this.dir} is not writable: ${(e as Error).message}`);
    }
  }

  /**
   * Reads the file. Missing: no entries, no error (first start). Damaged: what could be read, an
   * error naming the file, and the damaged file moved aside (`<file>.corrupt-<time>`).
   */
  async load(): Promise<LoadResult> {
    let buf: Buffer;
    try {
      const fh = await fsp.open(this.file, "r");
      try {
        const size = (await fh.stat()).size;
        const want = Math.min(size, this.maxBytes);
        buf = Buffer.alloc(want);
        let off = 0;
        while (off < want) {
          const { bytesRead } = await fh.read(buf, off, want - off, off);
          if (bytesRead === 0) break;
          off += bytesRead;
        }
        buf = buf.subarray(0, off);
        if (size > this.maxBytes) {
          const { entries } = decodeState(this.file, buf.toString("utf8"), this.maxMitigations);
          return this.damaged(entries, `the file has ${size} bytes, over the limit of ${this.maxBytes}; read the first ${this.maxBytes}`);
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { entries: [] };
      return {
        entries: [],
        error: new StateFileError("STATE_UNREADABLE", this.file, `state file ${this.file} cannot be read: ${(e as Error).message}`),
      };
    }
    const { entries, problem } = decodeState(this.file, buf.toString("utf8"), this.maxMitigations);
    if (problem) return this.damaged(entries, problem);
    return { entries };
  }

  private async damaged(entries: StoredMitigation[], problem: string): Promise<LoadResult> {
    const aside = `${this.file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    let keptAs: string | undefined;
    try {
      await fsp.rename(this.file, aside);
      keptAs = aside;
    } catch {
      // left in place; the next save replaces it
    }
    const where = keptAs ? `; the damaged file is kept as ${keptAs}` : "";
    return {
      entries,
      keptAs,
      error: new StateFileError(
        "STATE_CORRUPT",
        this.file,
        `state file ${this.file} is damaged (${problem}); started with the ${entries.length} mitigation(s) that could be read${where}`,
      ),
    };
  }

  /**
   * Makes the snapshot durable. Resolves once a write that started after this call has reached the
   * disk; while one write runs, further calls share the next one (the snapshot is taken when it starts).
   */
  save(snapshot: () => StoredMitigation[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (!this.next) this.next = { snapshot, waiters: [] };
      this.next.snapshot = snapshot;
      this.next.waiters.push({ resolve, reject });
      if (!this.writing) this.pump();
    });
  }

  private pump(): void {
    const batch = this.next;
    if (!batch) return;
    this.next = undefined;
    this.writing = (async () => {
      try {
        await this.writeNow(batch.snapshot());
        this.writes++;
        for (const w of batch.waiters) w.resolve();
      } catch (e) {
        for (const w of batch.waiters) w.reject(e as Error);
      }
    })().finally(() => {
      this.writing = undefined;
      this.pump();
    });
  }

  /** Resolves when no write is running or queued. */
  async idle(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async writeNow(entries: StoredMitigation[]): Promise<void> {
    const data = encodeState(this.file, entries, this.maxMitigations, this.maxBytes);
    const tmp = `${this.file}.tmp`;
    try {
      const fh = await fsp.open(tmp, "w", 0o600);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (this.beforeRename) await this.beforeRename(tmp);
      await fsp.rename(tmp, this.file);
      const dh = await fsp.open(this.dir, "r");
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (e) {
      if (e instanceof StateFileError) throw e;
      throw new StateFileError("STATE_UNWRITABLE", this.file, `state file ${this.file} cannot be written: ${(e as Error).message}`);
    }
  }
}
