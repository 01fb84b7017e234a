// Which credential owns which home name on the ISP side. The name is how the detector, the CLI and
// MQTT address a home, so one name maps to exactly one credential: a PSK identity, or "certificate"
// (any certificate our trusted CA issued with that common name, so a renewed key keeps its home).
// A session whose name is owned by another credential is refused with an identity-conflict event.
// With a state directory the ownership is written once, durably (<stateDir>/listener/names/), so a
// restart does not let the other credential take the name; the operator releases a name by
// deleting its file.
import * as fs from "node:fs";
import * as path from "node:path";
import type { PeerIdentity } from "../transport/connection";
import { hash16Base64Url } from "./ids";
import { StateFileError } from "./isp-mid-ledger";

/** Event name on CallHomeListener (and the CLI's "event" field). */
export const LISTENER_IDENTITY_CONFLICT_EVENT = "identity-conflict";

/** A credential as the name registry knows it: "psk:<identity>" or "certificate". Never a key. */
export type HomeCredential = string;

/** Where the current owner of a name comes from. */
export type OwnerSource = "configuration" | "state" | "session";

export interface IdentityConflictEvent {
  home: string;
  transport: "dtls" | "tls";
  remoteAddress: string;
  remotePort: number;
  /** The session that was refused: its credential and what it presented. */
  refused: { sessionId: string; credential: HomeCredential; identity: string };
  /** Who holds the name. `sessionId` and `remoteAddress` when it is a live session. */
  owner: { credential: HomeCredential; source: OwnerSource; since?: string; sessionId?: string; remoteAddress?: string; file?: string };
  /** Refusals of this credential for this name since the last event (they are reported once a minute). */
  repeats: number;
  message: string;
}

export function credentialOf(peer: PeerIdentity): HomeCredential {
  return peer.method === "psk" ? `psk:${peer.pskIdentity ?? ""}` : "certificate";
}

/** "PSK identity "x"" / "a certificate (subject ...)": for messages, never the key. */
export function describeCredential(credential: HomeCredential, subject?: string): string {
  if (credential.startsWith("psk:")) return `PSK identity ${JSON.stringify(credential.slice(4))}`;
  return subject ? `a certificate (subject ${JSON.stringify(subject)})` : "a certificate";
}

interface Owner {
  credential: HomeCredential;
  source: OwnerSource;
  since?: string;
  /** On disk already (or no state directory to write to). */
  stored: boolean;
}

/** Largest name file we read. */
const MAX_FILE_BYTES = 4096;
/** Owners read from disk kept in memory; older ones are re-read when needed. */
const MAX_CACHED = 200_000;

export type ClaimResult = { ok: true } | { ok: false; owner: Omit<Owner, "stored"> & { file?: string } };

export class HomeNameRegistry {
  private readonly configured = new Map<string, HomeCredential>();
  private readonly owners = new Map<string, Owner>();
  readonly dir: string | undefined;
  private usable = true;

  /**
   * psk: the configured entries (their names are theirs from the start). stateDir: where owners
   * are stored; undefined keeps them in memory (a restart forgets them).
   */
  constructor(
    psk: ReadonlyArray<{ identity: string; home?: string }>,
    stateDir: string | undefined,
    private readonly onError: (e: StateFileError) => void,
  ) {
    for (const p of psk) {
      const home = p.home ?? p.identity;
      const credential = `psk:${p.identity}`;
      const other = this.configured.get(home);
      if (other !== undefined && other !== credential)
        throw new TypeError(
          `home "${home}" is configured for two PSK identities (${describeCredential(other)} and ${describeCredential(credential)}): a home name must name one credential`,
        );
      this.configured.set(home, credential);
    }
    this.dir = stateDir === undefined ? undefined : path.join(path.resolve(stateDir), "listener", "names");
  }

  /** Creates the directory (0700). False, with an error event, when it is unusable. */
  open(): boolean {
    if (this.dir === undefined) return false;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      fs.accessSync(this.dir, fs.constants.W_OK | fs.constants.X_OK);
      this.usable = true;
    } catch (e) {
      this.usable = false;
      this.onError(
        new StateFileError(
          this.dir,
          `name directory ${this.dir} is unusable (${(e as Error).message}): which credential owns which home name is kept in memory only`,
        ),
      );
    }
    return this.usable;
  }

  fileFor(home: string): string | undefined {
    return this.dir === undefined ? undefined : path.join(this.dir, `${hash16Base64Url(home)}.json`);
  }

  /**
   * The name for this credential: ok when the credential owns it or nobody does (it then becomes
   * the owner, stored before this returns); otherwise the owner. Synchronous so a connection is
   * refused before any of its messages is read.
   */
  claim(home: string, credential: HomeCredential): ClaimResult {
    let owner = this.owners.get(home) ?? this.read(home);
    if (!owner) {
      const configured = this.configured.get(home);
      owner =
        configured !== undefined
          ? { credential: configured, source: "configuration", stored: false }
          : { credential, source: "session", since: new Date().toISOString(), stored: false };
      this.remember(home, owner);
    }
    // Storing may find that another listener sharing the directory stored a different owner first.
    if (owner.credential === credential && !owner.stored) this.store(home, owner);
    if (owner.credential === credential) return { ok: true };
    const file = owner.source === "state" ? this.fileFor(home) : undefined;
    return {
      ok: false,
      owner: {
        credential: owner.credential,
        source: owner.source,
        ...(owner.since ? { since: owner.since } : {}),
        ...(file ? { file } : {}),
      },
    };
  }

  private remember(home: string, owner: Owner): void {
    this.owners.delete(home);
    this.owners.set(home, owner);
    if (this.owners.size > MAX_CACHED && this.dir !== undefined && this.usable) {
      for (const [h, o] of this.owners) {
        if (this.owners.size <= MAX_CACHED) break;
        if (o.stored) this.owners.delete(h);
      }
    }
  }

  /** The stored owner, or undefined. A corrupt file is moved aside with an error event. */
  private read(home: string): Owner | undefined {
    const file = this.fileFor(home);
    if (file === undefined || !this.usable) return undefined;
    try {
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st) return undefined;
      if (!st.isFile() || st.size > MAX_FILE_BYTES) throw new Error(`not a regular file of at most ${MAX_FILE_BYTES} bytes`);
      const raw = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
      if (raw?.version !== 1 || raw.home !== home || typeof raw.credential !== "string" || raw.credential.length === 0)
        throw new Error(`expected {"version":1,"home":${JSON.stringify(home)},"credential":...}`);
      const owner: Owner = { credential: raw.credential, source: "state", stored: true };
      if (typeof raw.since === "string") owner.since = raw.since;
      this.remember(home, owner);
      return owner;
    } catch (e) {
      const to = `${file}.corrupt-${Date.now()}`;
      let aside = "";
      try {
        fs.renameSync(file, to);
        aside = `; moved aside to ${to}`;
      } catch {
        // left where it is
      }
      this.onError(
        new StateFileError(file, `name file ${file} is unusable (${(e as Error).message})${aside}: home "${home}" is bound anew`),
      );
      return undefined;
    }
  }

  /**
   * Write temp, fsync, link (fails if another listener sharing the directory stored an owner
   * first: then that one is the owner), fsync the directory. A failed write gives an error event;
   * the owner then holds the name in memory only.
   */
  private store(home: string, owner: Owner): void {
    const file = this.fileFor(home);
    if (file === undefined || !this.usable) {
      owner.stored = true;
      return;
    }
    const since = owner.since ?? new Date().toISOString();
    const text = JSON.stringify({ version: 1, home, credential: owner.credential, since }) + "\n";
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      const fd = fs.openSync(tmp, "w", 0o600);
      try {
        fs.writeSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      try {
        fs.linkSync(tmp, file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        this.owners.delete(home);
        const other = this.read(home);
        if (other) {
          Object.assign(owner, other);
          return;
        }
        fs.renameSync(tmp, file);
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      const dirFd = fs.openSync(path.dirname(file), "r");
      try {
        fs.fsyncSync(dirFd);
      } finally {
        fs.closeSync(dirFd);
      }
      owner.since = since;
      owner.stored = true;
    } catch (e) {
      this.onError(
        new StateFileError(
          file,
          `cannot write name file ${file} (${(e as Error).message}): home "${home}" is bound to ${describeCredential(owner.credential)} in memory only`,
        ),
      );
    }
  }
}
