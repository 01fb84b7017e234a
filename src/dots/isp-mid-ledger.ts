// Durable mid high-water marks of the ISP side (Call Home DOTS client). RFC 9132 section 4.4.1.1
// wants mids to increase monotonically per cuid; a listener that restarts with its counter at 0
// would reuse mids the home still holds or has seen. One small JSON file per home identity, under
// <stateDir>/listener/, replaced atomically (write temp, fsync, rename, fsync the directory).
//
// To avoid an fsync per request, mids are reserved in blocks: when a mid above the stored mark is
// handed out, the mark becomes mid + MID_BLOCK - 1 and is on disk before the request leaves. After
// a restart the allocator starts above the mark, so up to MID_BLOCK - 1 mids are skipped per
// restart and home: harmless (mids only need to increase).
import * as fs from "node:fs";
import * as path from "node:path";
import { SparseMap } from "../transport/sparse-map";
import { MID_MAX } from "./ids";

/** Mids reserved per durable write. */
export const MID_BLOCK = 64;

/** Largest state file we read (one home: a few cuids). */
const MAX_FILE_BYTES = 64 * 1024;
/** Most cuids remembered per home (a cuid only changes after a cuid-collision). */
const MAX_CUIDS_PER_HOME = 16;
/** Homes whose entries stay in memory; idle ones beyond this are re-read from disk when needed. */
const MAX_ENTRIES = 200_000;

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A state file or directory could not be read or written; `file` names it. */
export class StateFileError extends Error {
  readonly code = "STATE_FILE";
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(message);
    this.name = "StateFileError";
  }
}

/** What is kept per home identity. */
export interface HomeMidState {
  home: string;
  /** The cuid we use towards this home after a cuid-collision replaced the derived one (R19). */
  cuid?: string;
  /** Highest mid reserved per cuid: the next mid handed out is above it. */
  mids: Iterable<[string, number]> & { get(cuid: string): number | undefined; readonly size: number };
}

interface Entry extends HomeMidState {
  sessionId: string;
  mids: SparseMap<string, number>;
  /** Reserved on disk (or being written), per cuid. */
  planned: SparseMap<string, number>;
  /** Written successfully, per cuid. */
  durable: SparseMap<string, number>;
  chain: Promise<void>;
  writing: number;
  failing: boolean;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads and validates one state file's text; throws with the reason. */
export function parseMidStateFile(text: string): HomeMidState {
  if (text.trim().length === 0) throw new Error("the file is empty");
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON (${(e as Error).message})`);
  }
  if (!isRecord(raw) || raw.version !== 1) throw new Error(`expected {"version":1,...}`);
  if (typeof raw.home !== "string") throw new Error(`"home" must be a string`);
  if (raw.cuid !== undefined && (typeof raw.cuid !== "string" || raw.cuid.length === 0 || raw.cuid.length > 64))
    throw new Error(`"cuid" must be a short string`);
  if (!isRecord(raw.mids)) throw new Error(`"mids" must map cuids to mids`);
  const mids = new Map<string, number>();
  for (const [cuid, mid] of Object.entries(raw.mids)) {
    if (cuid.length === 0 || cuid.length > 64) throw new Error(`cuid "${cuid.slice(0, 70)}" has a bad length`);
    if (typeof mid !== "number" || !Number.isInteger(mid) || mid < 0 || mid > MID_MAX)
      throw new Error(`mid for cuid ${cuid} is not a uint32`);
    mids.set(cuid, mid);
  }
  const out: HomeMidState = { home: raw.home, mids };
  if (typeof raw.cuid === "string") out.cuid = raw.cuid;
  return out;
}

export class MidLedger {
  readonly dir: string;
  private readonly entries = new Map<string, Entry>();
  private usable = true;

  constructor(
    stateDir: string,
    private readonly onError: (e: StateFileError) => void,
  ) {
    this.dir = path.join(path.resolve(stateDir), "listener");
  }

  /** Creates the state directories (0700). False, with an error event, when they are unusable. */
  async open(): Promise<boolean> {
    try {
      await fs.promises.mkdir(path.dirname(this.dir), { recursive: true, mode: 0o700 });
      await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
      const st = await fs.promises.stat(this.dir);
      if (!st.isDirectory()) throw new Error("not a directory");
      await fs.promises.access(this.dir, fs.constants.W_OK | fs.constants.X_OK);
      this.usable = true;
      await this.removeStaleTemps();
    } catch (e) {
      this.usable = false;
      this.onError(
        new StateFileError(
          this.dir,
          `state directory ${this.dir} is unusable (${(e as Error).message}): mids are kept in memory only, so they may repeat after a restart`,
        ),
      );
    }
    return this.usable;
  }

  /** Temp files a killed writer left (an hour old: a live writer renames its own within ms). */
  private async removeStaleTemps(): Promise<void> {
    const cutoff = Date.now() - 3_600_000;
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch {
      return;
    }
    for (const n of names) {
      if (!/\.json\.tmp-\d+$/.test(n)) continue;
      const f = path.join(this.dir, n);
      try {
        if ((await fs.promises.stat(f)).mtimeMs < cutoff) await fs.promises.unlink(f);
      } catch {
        // gone already, or not ours to remove
      }
    }
  }

  fileFor(sessionId: string): string {
    if (!SESSION_ID.test(sessionId)) throw new StateFileError(this.dir, `session id "${sessionId}" cannot name a state file`);
    return path.join(this.dir, `${sessionId}.json`);
  }

  /**
   * What is stored for this home, merged into what this process holds (the higher mark wins). The
   * file is read at every call (each session-up), so listeners sharing a directory continue above
   * each other's marks when a home moves between them. A missing file is no error; an unreadable
   * or corrupt one gives an error event naming it, is moved aside (<file>.corrupt-<epoch ms>) for
   * the operator, and counts as nothing stored.
   */
  load(sessionId: string, home: string): HomeMidState {
    const known = this.entries.get(sessionId);
    const e = this.entryFor(sessionId, home);
    if (known) this.readInto(e);
    return e;
  }

  private entryFor(sessionId: string, home: string): Entry {
    const known = this.entries.get(sessionId);
    if (known) {
      known.home = home;
      // Refreshes the eviction order: most recently used last.
      this.entries.delete(sessionId);
      this.entries.set(sessionId, known);
      return known;
    }
    const entry: Entry = {
      sessionId,
      home,
      mids: new SparseMap(),
      planned: new SparseMap(),
      durable: new SparseMap(),
      chain: Promise.resolve(),
      writing: 0,
      failing: false,
    };
    this.readInto(entry);
    this.entries.set(sessionId, entry);
    this.evict();
    return entry;
  }

  private readInto(entry: Entry): void {
    if (!this.usable) return;
    let file: string | undefined;
    try {
      file = this.fileFor(entry.sessionId);
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st) return;
      if (!st.isFile()) throw new Error("not a regular file");
      if (st.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      const saved = parseMidStateFile(fs.readFileSync(file, "utf8"));
      if (saved.cuid !== undefined && entry.cuid === undefined) entry.cuid = saved.cuid;
      for (const [c, m] of saved.mids) {
        if (m > (entry.mids.get(c) ?? -1)) entry.mids.set(c, m);
        if (m > (entry.planned.get(c) ?? -1)) entry.planned.set(c, m);
        if (m > (entry.durable.get(c) ?? -1)) entry.durable.set(c, m);
      }
    } catch (e) {
      const f = file ?? this.dir;
      let aside = "";
      if (file && fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
        const to = `${file}.corrupt-${Date.now()}`;
        try {
          fs.renameSync(file, to);
          aside = `; moved aside to ${to}`;
        } catch {
          // left where it is; the next write replaces it
        }
      }
      this.onError(
        new StateFileError(
          f,
          `state file ${f} is unusable (${(e as Error).message})${aside}: the mids of home "${entry.home}" continue above what the home reports`,
        ),
      );
    }
  }

  /**
   * Makes `mid` durable before it is used: resolves once the stored mark for (home, cuid) is at
   * least `mid` (or, after a rollover to a lower mid, once the lower mark is stored). Writes only
   * when the mid leaves the reserved block. A failed write gives an error event (once until a
   * write succeeds again) and still resolves: the request goes out, mids stay monotonic within
   * this process.
   */
  reserve(sessionId: string, home: string, cuid: string, mid: number, rolledOver = false): Promise<void> {
    const e = this.entryFor(sessionId, home);
    const planned = e.planned.get(cuid);
    if (!rolledOver && planned !== undefined && mid <= planned) return e.chain;
    const mark = Math.min(MID_MAX, mid + MID_BLOCK - 1);
    e.planned.set(cuid, mark);
    e.mids.set(cuid, mark);
    return this.write(e);
  }

  /** Stores the cuid that replaced the derived one after a cuid-collision. */
  setCuid(sessionId: string, home: string, cuid: string): Promise<void> {
    const e = this.entryFor(sessionId, home);
    e.cuid = cuid;
    return this.write(e);
  }

  /** Resolves when every write started so far has finished (tests, orderly stop). */
  async flush(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.chain));
  }

  private write(e: Entry): Promise<void> {
    if (!this.usable) return Promise.resolve();
    e.writing++;
    e.chain = e.chain.then(async () => {
      // The newest state at the time this write runs: later reservations ride along.
      const snapshot = new Map(e.planned);
      let file = this.dir;
      try {
        file = this.fileFor(e.sessionId);
        if (snapshot.size > MAX_CUIDS_PER_HOME) {
          // Keep the current cuid and the highest marks; old cuids only matter while the home holds them.
          const keep = [...snapshot.entries()]
            .sort((a, b) => (a[0] === e.cuid ? -1 : b[0] === e.cuid ? 1 : b[1] - a[1]))
            .slice(0, MAX_CUIDS_PER_HOME);
          snapshot.clear();
          for (const [c, m] of keep) snapshot.set(c, m);
        }
        const body: Record<string, unknown> = { version: 1, sessionId: e.sessionId, home: e.home };
        if (e.cuid !== undefined) body.cuid = e.cuid;
        body.mids = Object.fromEntries(snapshot);
        body.updated = new Date().toISOString();
        await writeAtomically(file, JSON.stringify(body) + "\n");
        for (const [c, m] of snapshot) e.durable.set(c, m);
        e.failing = false;
      } catch (err) {
        // Not stored: the next mid outside the durable block tries again.
        for (const [c, m] of snapshot) if (e.planned.get(c) === m) e.planned.set(c, e.durable.get(c) ?? -1);
        if (!e.failing) {
          e.failing = true;
          this.onError(
            new StateFileError(
              file,
              `cannot write state file ${file} (${(err as Error).message}): mids of home "${e.home}" may repeat after a restart; requests still go out`,
            ),
          );
        }
      } finally {
        e.writing--;
      }
    });
    return e.chain;
  }

  private evict(): void {
    if (this.entries.size <= MAX_ENTRIES) return;
    for (const [id, e] of this.entries) {
      if (this.entries.size <= MAX_ENTRIES) break;
      if (e.writing === 0) this.entries.delete(id);
    }
  }
}

/** Write temp, fsync, rename over the file, fsync the directory: the file is old or new, never torn. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await fs.promises.open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw e;
  }
  const dir = await fs.promises.open(path.dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
