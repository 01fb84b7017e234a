// Command-line and JSON-file configuration of `dots-call-home listen|dial`. Pure parsing: no
// sockets, so every rule is testable and a bad flag fails before anything starts.
import * as fs from "node:fs";
import * as os from "node:os";
import { DECISION_OUTCOMES } from "../dots/vocabulary";
import type { CertificateCredential, DecisionOutcome, DialerOptions, ListenerOptions, PskCredential, TransportChoice } from "../dots/api";
import { discoveryDomainProblem, dnsServerProblem } from "../dots/dialer-connect";
import { parseNatSpec } from "../home/nat-source";
import { checkTableName } from "../home/nft-script";
import type { EnforcementFlags } from "../home/wiring";
import { DEFAULTS, LIMITS, parseDuration, pskIdentityProblem, pskKeyProblem } from "../dots/defaults";
import { parsePrefix } from "../dots/prefixes";
import { isDtlsCertificateKey } from "../transport/dtls/certificate";
import { MIN_TICKET_SECRET_LENGTH } from "../transport/dtls/ticket";

export class CliUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliUsageError";
  }
}

export const DEFAULT_PORT = DEFAULTS.port;

/** Where a daemon run as root keeps its durable state unless told otherwise. */
export const DEFAULT_STATE_DIR = "/var/lib/dots-call-home";

/**
 * The state directory when none is configured: systemd's $STATE_DIRECTORY (StateDirectory=),
 * else /var/lib/dots-call-home for root, else $XDG_STATE_HOME (or ~/.local/state)/dots-call-home.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, uid: number | undefined = process.getuid?.()): string {
  const systemd = env.STATE_DIRECTORY?.split(":")[0];
  if (systemd) return systemd;
  if (uid === 0 || uid === undefined) return DEFAULT_STATE_DIR;
  const base = env.XDG_STATE_HOME || `${env.HOME || "."}/.local/state`;
  return `${base}/dots-call-home`;
}

/** --state-dir (or stateDir in --config, relative to the file): a path, "none" (memory only), or the default. */
function stateDirFrom(flag: unknown, fromFile: unknown, fileBase: string | undefined): string | undefined {
  const configured = flag ?? fromFile;
  if (configured === undefined) return defaultStateDir();
  if (typeof configured !== "string" || configured.length === 0) throw new CliUsageError(`state-dir must be a directory path or "none"`);
  if (configured === "none") return undefined;
  return flag !== undefined ? configured : resolveFrom(fileBase, configured);
}

export const HELP = `dots-call-home: DOTS Signal Channel Call Home (RFC 9066 over RFC 9132) without Node-RED

Usage:
  dots-call-home listen [options]     ISP side: Call Home DOTS client, (D)TLS server
  dots-call-home dial [options] HOST  home side: Call Home DOTS server, (D)TLS client
  dots-call-home dial [options] --discover-domain DOMAIN   the same, ISP found by DNS SRV
  dots-call-home fastnetmon-notify [options] IP DIRECTION PPS ACTION   FastNetMon's notify script
  dots-call-home --help
  dots-call-home --version             the installed package version

Both commands print one JSON object per line on stdout for every event
({"event":"...","time":"<ISO 8601>",...}) and read one JSON command per line on stdin.
A malformed command line gives {"event":"error",...}; the process keeps running.
SIGINT / SIGTERM stop cleanly (sessions closed, sockets freed), then the process exits 0.
Durations (MS below) take a number of milliseconds or a unit: 1500, 1500ms, 1.5s, 5m, 1h;
--heartbeat-interval takes seconds the same way (30, 30s, 1m). Defaults are shared with the
Node-RED nodes (src/dots/defaults.ts).

Common options:
  --config FILE            JSON file with the same settings (see below); flags override it
  --port N                 UDP/TCP port (default 4647; no IANA port exists for Call Home)
  --host ADDR              listen: bind address (default "::"); dial: same as a HOST argument
  --psk-identity ID        PSK identity
  --psk-key KEY            PSK key: "hex:..." or "text:...", else an even-length hex string
                           is read as hex and anything else as UTF-8 text; at least 128 bits
                           (16 bytes), as in the editor. Prefer --psk-file.
  --psk-file FILE          read the PSK key from FILE (same rules, surrounding whitespace ignored)
  --cert FILE --key FILE   PEM certificate and private key (TLS, and DTLS when the key is EC P-256
                           or RSA >= 2048 bits; listen: our server certificate)
  --ca FILE                PEM CA bundle used to verify the peer's certificate
  --passphrase TEXT        passphrase of --key
  --home-prefix PREFIX     home domain prefix; repeatable. listen: NAME=PREFIX binds it to one
                           home (by home name), a bare PREFIX applies to the --home name.
                           Checked as the runtime checks requests: address/length, no host bits
  --help                   this text
  --version                the installed package version

listen options:
  --dtls                   accept DTLS over UDP (PSK, and certificates with EC P-256 or RSA keys)
  --tls                    accept TLS over TCP (certificates and/or PSK)
                           (neither flag: both, as far as the credentials allow)
  --home NAME              home name for the --psk-identity entry (default: the identity)
  --cuid-identity ID       derive our cuid (RFC 9132 4.4.1.1) from this identity. Default: the
                           SPKI of our certificate; under PSK, where the (D)TLS server presents
                           no identity, the PSK identity the home authenticated with
  --drop-after N           drop-list (ban) a source address after N failed handshakes (default 5)
  --drop-window-ms MS      ... within this window (default 60000)
  --drop-ban-ms MS         ... for this long (default 300000)
  --request-repeat-ms MS   NON repeat interval for mitigation requests (default 3000, RFC 9132)
  --request-timeout-ms MS  give up on an unanswered request after MS (default 60000)
  --state-dir DIR          durable listener state, created 0700; "none": memory only. Default:
                           $STATE_DIRECTORY (systemd StateDirectory=), else
                           /var/lib/dots-call-home as root, else ~/.local/state/dots-call-home.
                           Holds the highest mid reserved per home and cuid, in
                           DIR/listener/<session id>.json, so mids keep increasing across
                           restarts (RFC 9132 4.4.1.1). Written (temp, fsync, rename) before a
                           request leaves, in blocks of 64 mids, so a restart skips up to 63
                           mids per home. An unreadable, empty or corrupt file is moved aside
                           with an error event naming it; the listener carries on

  Commands and events over MQTT as well (docs/mqtt.md; MQTT 5, QoS 1):
  --mqtt URL               broker, mqtt://HOST:PORT or mqtts://HOST:PORT. Commands for a home arrive
                           on P/cmd/<home> (the stdin objects; "session" is the topic's home),
                           its events leave on P/evt/<home>, process-wide ones on P/evt/_;
                           retained P/presence/<home> names the process holding the home, and a
                           command for a home nobody holds is parked until it is back ("held")
  --mqtt-prefix P          topic prefix (default dots)
  --mqtt-client-id ID      MQTT client id, stable across restarts (default
                           dots-listen-<hostname>-<port>); unique per process
  --mqtt-username NAME     broker user name
  --mqtt-password-file FILE   broker password from FILE (or the environment variable
                           DOTS_MQTT_PASSWORD); never in the URL or on the command line
  --mqtt-ca FILE           mqtts: CA bundle that verifies the broker (default: system CAs)
  --mqtt-cert FILE --mqtt-key FILE   mqtts: client certificate and key
  --mqtt-keepalive S       MQTT keep-alive (default 30): a silent death shows after 1.5 x S
  --mqtt-hold S            how long a command for a home nobody holds may wait (default 600;
                           a command's "hold":S overrides, 0 answers UNHELD at once)
  --mqtt-heartbeats        publish heartbeat events on MQTT too (stdout always has them)

  --max-handshakes-per-source N
                           DTLS handshakes in progress from one address (IPv6: one /64) at once
                           (default ${DEFAULTS.maxHandshakesPerSource}); raise it when many homes share a CGN address
  --dtls-cookie-always     a DTLS ClientHello with a valid session ticket gets the cookie round too
                           (default: a ticket is answered at once, one round trip less per
                           reconnect, while under a quarter of the handshake caps are in use)
  --max-tcp-per-address N  TCP connections accepted from one source address (default 256;
                           raise it when many homes share one address behind CGN)
  --ticket-secret-file FILE
                           DTLS session ticket secret (at least ${MIN_TICKET_SECRET_LENGTH} bytes, e.g. from
                           \`openssl rand -base64 48\`), the same file for every listener process of
                           the ISP: homes resume their sessions after a restart or a move to another
                           process instead of full handshakes. Keep it 0600 and rotate it like a key:
                           whoever holds it can open captured tickets. Default: per-process keys

  stdin commands (listen):
    {"cmd":"mitigate","session":"<id or home>","request":{...JSON view or bare scope...},"mid":N?}
    {"cmd":"withdraw","session":"...","mid":N}
    {"cmd":"get","session":"...","mid":N?}
    {"cmd":"efficacy","session":"...","mid":N,"attackStatus":"under-attack"|"attack-successfully-mitigated"}
    {"cmd":"redirect","session":"...","altClient":"fqdn","records":["ip",...]?,"ttl":S?}
    {"cmd":"sessions"}
  Add "id":<anything> to a command to get it echoed in its response or error line.
  Events: listening, session-up (with the negotiated /config), session-down (with the reason),
  session-moved (a DTLS home's NAT gave it a new public address or port: {sessionId, home, from, to}),
  heartbeat (direction in/out, peer-hb-status), status (every Observe notification), response,
  sessions, discarded (base 5.03 redirects, RFC 9066 section 5.2.2), cuid-changed (the home
  answered cuid-collision; the request went again under a fresh cuid), auth-failure, drop, drop-end,
  error, stopped. Requests to a session that is down fail with an error line (code SESSION_DOWN).
  auth-failure: a handshake failed; "reason" is PSK_MISMATCH, PSK_UNKNOWN_IDENTITY, CERT_UNTRUSTED,
  CERT_EXPIRED, CERT_NOT_YET_VALID, CERT_NAME_MISMATCH, CERT_MISSING, CERT_REFUSED, ALPN_MISMATCH,
  NO_SHARED_CIPHER, HANDSHAKE_TIMEOUT or HANDSHAKE_FAILED; "message" says it in words naming the
  identity and home; "detail" keeps the TLS library's text.
  drop: a source address is banned after --drop-after failures (remoteAddress, failures,
  windowSeconds, banSeconds, since and until as ISO 8601, lastReason, identity, home, message);
  its handshakes are ignored until then. drop-end: the ban is over (remoteAddress, since, until).
  identity-conflict: a session was refused because its home name belongs to another credential
  (a PSK identity, or certificates with that CN): home, refused {sessionId, credential, identity},
  owner {credential, source configuration|state|session, since, sessionId, file}, repeats, message.
  The first credential keeps the name (stored under --state-dir: delete its file to release it).
  resynced: after every session-up (restart, reconnect, failover or redirect to this process)
  the listener asks the home for every mitigation of its cuid (GET /mitigate) and prints
  {"event":"resynced","sessionId","home","mitigations":[{cuid,mid,status,lifetime,scope}],
  "complete"}; each one is observed again (a status line per mid follows), can be withdrawn,
  and new requests use mids above them. State file problems are error lines with code
  STATE_FILE and the file's path in "file".
  With --mqtt also: mqtt-connected, mqtt-disconnected, mqtt-error, held (an MQTT command parked
  for a home nobody holds, with "until"); MQTT commands may carry "hold":S (see --mqtt-hold).

dial options:
  HOST (positional, repeatable): the ISP's Call Home DOTS client
  --connect HOST           the same as a HOST argument (repeatable)
  --discover-domain DOMAIN find the ISP's Call Home DOTS client by DNS (RFC 8973): SRV records
                           _dots-call-home._udp.DOMAIN and _dots-call-home._tcp.DOMAIN name
                           the hosts and ports; the ISP certificate must name DOMAIN (RFC 6125),
                           not the SRV target. HOST may then be left out; if given, it (with
                           --port) is the fallback when discovery finds nothing. Prints a
                           "discovered" event per lookup
  --dns-server ADDR[:PORT] DNS server for --discover-domain (repeatable; IPv6 as [ADDR]:PORT;
                           default: the system's resolvers)
  --discover-dnssec        the DNS answers for --discover-domain are DNSSEC-validated (a
                           validating resolver you trust, on a path you trust): the certificate
                           may then name the SRV target instead of DOMAIN
  --transport auto|udp|tcp happy eyeballs (auto, default), DTLS only, or TLS only
  --servername NAME        name the ISP certificate must carry (default: HOST)
  --heartbeat-interval S   heartbeat-interval offered in /config, seconds (default 30); the home
                           sets it to suit its NAT (RFC 9066 section 5.2.1); the ISP follows it
  --decision-wait MS       how long a PUT waits for a decision before 2.01 status 1 (default 1000)
  --auto-decide OUTCOME    answer every request with enforced|pending|legitimate|failed (demos)
  --reconnect-min MS       reconnect back-off floor (default 60000, RFC 9132; lower it for labs)
  --reconnect-max MS       reconnect back-off ceiling (default 300000)
  --allow-indefinite-lifetime   grant lifetime -1 as indefinite (otherwise 3600 s is granted)
  --max-lifetime S         longest lifetime granted, seconds: min(requested, S) is granted and
                           returned in the 2.01 (default 86400, at most 31536000)
  --terminating-period MS  after a withdrawal, keep mitigating this long with status 5 before the
                           mitigation ends (default 120000, RFC 9132 section 4.4.4; labs lower it)
  --status-period MS       periodic status notifications to an observing ISP, with what each
                           mitigation dropped (default 60000, 0 = only on change; RFC 9132 4.4.2.1)
  --state-dir DIR          where the home keeps its mitigations durably (one file per dialer,
                           written before each answer; created 0700). A restart serves them
                           again and keeps the devices blocked; "none": memory only (labs).
                           Default as for listen: $STATE_DIRECTORY, else /var/lib/dots-call-home
                           (root), else ~/.local/state/dots-call-home

  Enforcement (a headless router blocks by itself; needs root, nft and conntrack):
  --enforce nftables|dry-run   each accepted mitigation goes through NAT lookup and the filter
                           action; the outcome is the decision: enforced -> status 2, consent
                           pending -> status 1, rejected -> conflict-cause 4 (legitimate
                           traffic), no device / nft error -> status 4. Withdrawal and expiry
                           remove exactly what that mitigation added. nftables: own table
                           "inet dots_call_home" (created if absent, no other table touched),
                           set elements with a kernel timeout equal to the lifetime, so blocks
                           lapse by themselves if this process dies. dry-run: print the nft
                           script only. At start, elements an earlier run left are removed
                           (no withdrawal could reach them). Without --enforce, decisions come
                           from stdin or --auto-decide (which --enforce excludes).
  --nat SOURCE             where the NAT lookup reads flows: auto (default: conntrack if the
                           tool works, else /proc/net/nf_conntrack), conntrack (listing + live
                           conntrack -E index), conntrack-list (list per lookup), proc,
                           proc:PATH, static:FILE (JSON table, for labs)
  --action block|quarantine   block the device's traffic to the target (address, protocol,
                           ports; default) or quarantine all it forwards (address and MAC)
  --consent auto|manual    manual: hold each block until {"cmd":"approve"} or {"cmd":"reject"}
                           arrives on stdin (default auto)
  --consent-timeout MS     manual consent: how long to wait for an answer (default 300000)
  --consent-on-timeout reject|approve   what an unanswered consent counts as (default reject)
  --nft-table NAME         nft table (family inet) for the blocks (default dots_call_home);
                           one dialer per table, as the start-up clean-up owns all of it,
                           unless each dialer has its own --nft-owner
  --nft-owner NAME         one name per upstream ISP when several dialers share one nft table
                           (RFC 9066: one session per upstream domain); elements are tagged
                           with it and the start-up clean-up removes only this owner's

  stdin commands (dial):
    {"cmd":"decide","mid":N,"cuid":"..."?,"outcome":"enforced"|"pending"|"legitimate"|"failed","detail":"..."?}
                           (not with --enforce: the enforcer decides)
    {"cmd":"approve","mid":N,"cuid":"..."?}   --consent manual: enforce the pending block
    {"cmd":"reject","mid":N,"cuid":"..."?}    --consent manual: legitimate traffic, no block
    {"cmd":"mitigations"}  the engine's mitigations (with --enforce also what is blocked and
                           what waits for consent)
  Events: discovered (with --discover-domain: the domain and the candidates its SRV records
  name, {host, address, port, transport}), connecting, connected, disconnected (reason in words;
  code such as PSK_MISMATCH, CERT_EXPIRED or HANDSHAKE_TIMEOUT; detail; after repeated silent
  handshakes a hint that the ISP may have banned this address), mitigation (a
  request received: new, refresh or efficacy), ended, redirected, decision, mitigations, error, stopped. With --enforce also:
  enforcer-ready (backend, action, consent, table), reconciled (leftovers removed at start),
  lookup (devices found behind the NAT, or found:false with the reason), consent-request
  (devices, the nft script an approval applies, deadline), consent (the answer given),
  enforcement (change added|refreshed|removed|expired with the nft script).

fastnetmon-notify (ISP side, run by FastNetMon through a wrapper named in notify_script_path):
  IP DIRECTION PPS ACTION  what FastNetMon passes; ACTION ban or attack_details (details on
                           stdin: description, flows, packet samples) or unban (no stdin).
                           An outgoing ban of an address inside a home's prefixes becomes a
                           mitigation request: source-prefix the address, the heaviest flows'
                           targets, protocol and source ports (NATed); unban withdraws it.
  --home-prefix NAME=PREFIX  home and its public prefixes (repeatable; bare PREFIX with --home)
  --home NAME              home name for bare --home-prefix values
  --config FILE            JSON: "homePrefixes" and "mqtt" as for listen (so the listener's file
                           can be shared), plus "fastnetmon":{"mqtt","http","httpWithdraw",
                           "stateDir","lifetime","flowShare","waitMs","hold","log"}
  --mqtt URL               publish on the MQTT command contract (P/cmd/<home>, docs/mqtt.md) and
                           wait for the answer on P/evt/<home>
  --mqtt-prefix P --mqtt-username NAME --mqtt-password-file FILE --mqtt-hold S   as for listen
  --http URL               POST {"home","target","source","sourcePort","targetPort","protocol",
                           "lifetime","mid"?} to an ISP flow (answer {"code","mid"})
  --http-withdraw URL      POST {"home","mid"} on unban (default: URL's last segment "withdraw")
  --state-dir DIR          address -> mid records, written durably (default
                           /var/lib/dots-call-home/fastnetmon)
  --lifetime S             lifetime of the requests (default 3600): a mitigation whose withdrawal
                           never arrives ends by itself
  --flow-share F           keep flows with at least F x the heaviest flow's packets (default 0.2),
                           so a light flow of another device behind the same NAT is left out
  --wait-ms MS             how long to wait for the listener's answer (default 10000)
  --stdin-timeout-ms MS    how long to wait for the details on stdin (default 5000)
  --log FILE               append every event line to FILE as well
  Events: fastnetmon-call, ignored (not outgoing, outside every home, nothing to withdraw),
  note, waiting (no target yet), request, answer, withdraw, error. Exit 0 handled, 1 the
  listener was not reached or refused, 2 bad arguments.

JSON config file (--config): keys as below; file paths are relative to the file.
  listen: {"port":4647,"host":"::","dtls":true,"tls":true,
           "psk":[{"identity":"home-1","key":"hex:00112233...","home":"home-1"}],
           "cert":"isp.crt","key":"isp.key","ca":"ca.crt","passphrase":"...",
           "homePrefixes":{"home-1":["203.0.113.0/24"]},"cuidIdentity":"...",
           "dropList":{"maxFailures":5,"windowMs":60000,"banMs":300000},
           "requestRepeatMs":3000,"requestTimeoutMs":60000,
           "maxTcpPerAddress":256,"maxHandshakesPerSource":16,"dtlsCookieAlways":false,
           "stateDir":"/var/lib/dots-call-home",
           "ticketSecretFile":"ticket.secret",
           "mqtt":{"url":"mqtt://broker:1883","prefix":"dots","clientId":"isp-a",
                   "username":"isp","passwordFile":"mqtt.pw","ca":"ca.crt","hold":600}}
  dial:   {"hosts":["isp.example"],"port":4647,"transport":"auto",
           "discoverDomain":"isp.example","dnsServers":["192.0.2.53","[2001:db8::53]:5353"],
           "discoverDnssec":false,
           "psk":{"identity":"home-1","key":"text:secret"},"cert":"home.crt","key":"home.key",
           "ca":"ca.crt","servername":"isp.example","homePrefixes":["203.0.113.0/24"],
           "heartbeatInterval":30,"decisionWaitMs":2000,"autoDecide":"enforced",
           "reconnect":{"minMs":60000,"maxMs":300000},"allowIndefiniteLifetime":false,"maxLifetime":86400,
           "enforce":"nftables","nat":"conntrack","action":"block","consent":"manual",
           "consentTimeoutMs":300000,"consentOnTimeout":"reject","nftTable":"dots_call_home",
           "terminatingPeriodMs":120000}
`;

/** Reads a PSK key: "hex:..." / "text:..." prefixes win; otherwise even-length hex is hex. */
export function parsePskKey(raw: string): Buffer {
  if (typeof raw !== "string" || raw.length === 0) throw new CliUsageError("PSK key is empty");
  if (raw.startsWith("hex:")) {
    const hex = raw.slice(4);
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new CliUsageError("PSK key after hex: is not an even-length hex string");
    return Buffer.from(hex, "hex");
  }
  if (raw.startsWith("text:")) {
    if (raw.length === 5) throw new CliUsageError("PSK key is empty");
    return Buffer.from(raw.slice(5), "utf8");
  }
  const hex = raw.startsWith("0x") ? raw.slice(2) : raw;
  if (/^([0-9a-fA-F]{2})+$/.test(hex)) return Buffer.from(hex, "hex");
  return Buffer.from(raw, "utf8");
}

/** duration: milliseconds, written bare or with a unit (ms, s, m, h); seconds: the same, bare = seconds. */
type FlagKind = "string" | "number" | "boolean" | "list" | "duration" | "seconds";

const COMMON_FLAGS: Record<string, FlagKind> = {
  config: "string",
  port: "number",
  host: "string",
  "psk-identity": "string",
  "psk-key": "string",
  "psk-file": "string",
  cert: "string",
  key: "string",
  ca: "string",
  passphrase: "string",
  "home-prefix": "list",
  help: "boolean",
  version: "boolean",
};

const LISTEN_FLAGS: Record<string, FlagKind> = {
  ...COMMON_FLAGS,
  dtls: "boolean",
  tls: "boolean",
  home: "string",
  "cuid-identity": "string",
  "drop-after": "number",
  "drop-window-ms": "duration",
  "drop-ban-ms": "duration",
  "max-handshakes-per-source": "number",
  "dtls-cookie-always": "boolean",
  "ticket-secret-file": "string",
  "request-repeat-ms": "duration",
  "request-timeout-ms": "duration",
  "state-dir": "string",
  mqtt: "string",
  "mqtt-prefix": "string",
  "mqtt-client-id": "string",
  "mqtt-username": "string",
  "mqtt-password-file": "string",
  "mqtt-ca": "string",
  "mqtt-cert": "string",
  "mqtt-key": "string",
  "mqtt-keepalive": "number",
  "mqtt-hold": "number",
  "mqtt-heartbeats": "boolean",
  "max-tcp-per-address": "number",
};

const DIAL_FLAGS: Record<string, FlagKind> = {
  ...COMMON_FLAGS,
  "heartbeat-interval": "seconds",
  connect: "list",
  "discover-domain": "string",
  "discover-dnssec": "boolean",
  "dns-server": "list",
  transport: "string",
  servername: "string",
  "decision-wait": "duration",
  "auto-decide": "string",
  "reconnect-min": "duration",
  "reconnect-max": "duration",
  "allow-indefinite-lifetime": "boolean",
  "max-lifetime": "seconds",
  "terminating-period": "duration",
  "status-period": "duration",
  "state-dir": "string",
  enforce: "string",
  nat: "string",
  action: "string",
  consent: "string",
  "consent-timeout": "duration",
  "consent-on-timeout": "string",
  "nft-table": "string",
  "nft-owner": "string",
};

/** Every flag each command accepts (without "--"); the help test checks each is documented. */
export const FLAG_NAMES: { listen: readonly string[]; dial: readonly string[] } = {
  listen: Object.keys(LISTEN_FLAGS),
  dial: Object.keys(DIAL_FLAGS),
};

/** Home-side enforcement flags: named so `listen` refuses them with a pointer to `dial`. */
const DIAL_ONLY_ENFORCEMENT = new Set([
  "nat",
  "enforce",
  "action",
  "consent",
  "consent-timeout",
  "consent-on-timeout",
  "nft-table",
  "nft-owner",
]);

export interface ParsedFlags {
  values: Record<string, string | number | boolean | string[]>;
  positional: string[];
}

export function parseFlags(argv: readonly string[], spec: Record<string, FlagKind>): ParsedFlags {
  const values: ParsedFlags["values"] = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    let name = arg.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      inline = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const kind = spec[name];
    if (!kind && DIAL_ONLY_ENFORCEMENT.has(name))
      throw new CliUsageError(`--${name} belongs to the home side's enforcement layer: it is a dial option`);
    if (!kind) throw new CliUsageError(`unknown option --${name} (see --help)`);
    if (kind === "boolean") {
      if (inline !== undefined && !/^(true|false)$/.test(inline)) throw new CliUsageError(`--${name} takes no value`);
      values[name] = inline === undefined ? true : inline === "true";
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) throw new CliUsageError(`--${name} needs a value`);
    if (kind === "duration" || kind === "seconds") {
      const ms = parseDuration(raw, kind === "seconds" ? "s" : "ms");
      if (ms === undefined || (kind === "seconds" && ms % 1000 !== 0)) {
        throw new CliUsageError(
          `--${name} needs a ${kind === "seconds" ? "whole number of seconds" : "duration"} such as ${kind === "seconds" ? "30, 30s or 1m" : "1500, 1500ms, 1.5s, 5m or 1h"}, got "${raw}"`,
        );
      }
      values[name] = kind === "seconds" ? ms / 1000 : ms;
    } else if (kind === "number") {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) throw new CliUsageError(`--${name} needs a number, got "${raw}"`);
      values[name] = n;
    } else if (kind === "list") {
      const prev = values[name];
      values[name] = [...(Array.isArray(prev) ? prev : []), raw];
    } else values[name] = raw;
  }
  return { values, positional };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readJsonFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new CliUsageError(`cannot read --config ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CliUsageError(`--config ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isRecord(json)) throw new CliUsageError(`--config ${file} must hold a JSON object`);
  return json;
}

export interface FileReader {
  (file: string): Buffer;
}

const defaultReader: FileReader = (file) => {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new CliUsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
};

/** A file named by a flag (as given) or by a --config key (relative to the config file). */
function flagOrConfigPath(f: ParsedFlags["values"], flag: string, value: unknown, key: string, base: string | undefined): string {
  return f[flag] !== undefined ? str(value, flag) : resolveFrom(base, str(value, key));
}

function resolveFrom(base: string | undefined, p: string): string {
  if (!base || p.startsWith("/")) return p;
  return `${base}/${p}`;
}

function num(v: unknown, name: string, min: number, max: number, integer = true): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    throw new CliUsageError(`${name} must be ${integer ? "an integer" : "a number"} in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A duration from a flag (already ms) or from --config (ms as a number, or text with a unit). */
function ms(v: unknown, name: string, [min, max]: readonly [number, number], bareUnit: "ms" | "s" = "ms"): number {
  const parsed = typeof v === "number" || typeof v === "string" ? parseDuration(v, bareUnit) : undefined;
  if (parsed === undefined)
    throw new CliUsageError(`${name} must be a duration such as 1500, "1500ms", "1.5s", "5m" or "1h", got ${JSON.stringify(v)}`);
  return num(parsed, name, min, max);
}

/** Seconds from a flag (already s) or from --config (s as a number, or text with a unit). */
function secs(v: unknown, name: string, [min, max]: readonly [number, number]): number {
  const parsed = typeof v === "number" ? v * 1000 : typeof v === "string" ? parseDuration(v, "s") : undefined;
  if (parsed === undefined || parsed % 1000 !== 0)
    throw new CliUsageError(`${name} must be a whole number of seconds such as 30, "30s" or "1m", got ${JSON.stringify(v)}`);
  return num(parsed / 1000, name, min, max);
}

/** Refuses what the runtime refuses (src/dots/prefixes.ts), naming the flag and the rule. */
function checkPrefix(text: string, where: string): string {
  try {
    return parsePrefix(text).text;
  } catch (e) {
    throw new CliUsageError(`${where}: ${(e as Error).message}`);
  }
}

function str(v: unknown, name: string): string {
  if (typeof v !== "string" || v.length === 0) throw new CliUsageError(`${name} must be a non-empty string`);
  return v;
}

function certificateFrom(src: Record<string, unknown>, base: string | undefined, read: FileReader): CertificateCredential | undefined {
  const cert = src.cert;
  const key = src.key;
  if (cert === undefined && key === undefined) {
    if (src.ca !== undefined) throw new CliUsageError("--ca needs --cert and --key as well");
    return undefined;
  }
  if (cert === undefined || key === undefined) throw new CliUsageError("--cert and --key go together");
  const out: CertificateCredential = { cert: read(resolveFrom(base, str(cert, "cert"))), key: read(resolveFrom(base, str(key, "key"))) };
  if (src.ca !== undefined) out.ca = read(resolveFrom(base, str(src.ca, "ca")));
  if (src.passphrase !== undefined) out.passphrase = str(src.passphrase, "passphrase");
  if (src.servername !== undefined) out.servername = str(src.servername, "servername");
  return out;
}

function pskKeyFrom(entry: Record<string, unknown>, base: string | undefined, read: FileReader, where: string): Buffer {
  if (entry.key !== undefined && entry.keyFile !== undefined) throw new CliUsageError(`${where}: give the PSK key or a key file, not both`);
  const key =
    entry.keyFile !== undefined
      ? parsePskKey(
          read(resolveFrom(base, str(entry.keyFile, `${where} key file`)))
            .toString("utf8")
            .trim(),
        )
      : parsePskKey(str(entry.key, `${where} key`));
  const problem = pskKeyProblem(key);
  if (problem) throw new CliUsageError(`${where}: ${problem}`);
  return key;
}

function pskIdentity(v: unknown, where: string): string {
  const identity = str(v, where);
  const problem = pskIdentityProblem(identity);
  if (problem) throw new CliUsageError(`${where}: ${problem}`);
  return identity;
}

/** Merges --config and flags into one settings object (flags win), in file-key spelling. */
function merged(
  argv: readonly string[],
  spec: Record<string, FlagKind>,
): { settings: Record<string, unknown>; base?: string; positional: string[]; help: boolean } {
  const { values, positional } = parseFlags(argv, spec);
  const settings: Record<string, unknown> = {};
  let base: string | undefined;
  if (typeof values.config === "string") {
    Object.assign(settings, readJsonFile(values.config));
    base = values.config.includes("/") ? values.config.slice(0, values.config.lastIndexOf("/")) : ".";
  }
  return { settings: { ...settings, __flags: values }, base, positional, help: values.help === true };
}

// ------------------------------------------------------------------------------------ listen

export interface ListenConfig {
  options: ListenerOptions;
  /** Our cuid identity override (PSK), see CallHomeListener. */
  cuidIdentity?: string;
  requestRepeatMs?: number;
  requestTimeoutMs?: number;
  /** DTLS handshakes in progress per source (--max-handshakes-per-source). */
  maxHandshakesPerSource?: number;
  /** --dtls-cookie-always: no DTLS resumption without the cookie round. */
  dtlsCookieAlways?: boolean;
  /** --mqtt: the command/event contract over an MQTT broker as well (docs/mqtt.md). */
  mqtt?: MqttSettings;
  maxTcpPerAddress?: number;
}

/** The MQTT carrier's settings (docs/mqtt.md). */
export interface MqttSettings {
  url: string;
  prefix: string;
  clientId: string;
  username?: string;
  password?: Buffer;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  keepaliveSeconds: number;
  /** Default time a command for a home nobody holds waits for it, seconds. */
  holdSeconds: number;
  heartbeats: boolean;
}

/** Environment variable with the MQTT password (never a command-line flag). */
export const MQTT_PASSWORD_ENV = "DOTS_MQTT_PASSWORD";

/** --mqtt* flags or the "mqtt" object of --config. */
function mqttFrom(
  f: ParsedFlags["values"],
  settings: Record<string, unknown>,
  base: string | undefined,
  read: FileReader,
  port: number,
  env: NodeJS.ProcessEnv,
): MqttSettings | undefined {
  const file = isRecord(settings.mqtt) ? settings.mqtt : {};
  if (settings.mqtt !== undefined && !isRecord(settings.mqtt))
    throw new CliUsageError(`"mqtt" in --config must be an object {url, prefix, clientId, ...}`);
  const pick = (flag: string, key: string): unknown => f[flag] ?? file[key];
  const url = pick("mqtt", "url");
  if (url === undefined) {
    const stray = Object.keys(f).find((k) => k.startsWith("mqtt-"));
    if (stray) throw new CliUsageError(`--${stray} needs --mqtt URL`);
    return undefined;
  }
  const text = str(url, "mqtt");
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new CliUsageError(`--mqtt ${JSON.stringify(text)} is not a URL such as mqtt://broker:1883 or mqtts://broker:8883`);
  }
  if (parsed.protocol !== "mqtt:" && parsed.protocol !== "mqtts:")
    throw new CliUsageError(`--mqtt must be an mqtt:// or mqtts:// URL, got ${parsed.protocol}//`);
  if (parsed.password !== "")
    throw new CliUsageError(
      `--mqtt: no password in the URL (it would show in the process list): use --mqtt-password-file or ${MQTT_PASSWORD_ENV}`,
    );
  const prefix = str(pick("mqtt-prefix", "prefix") ?? "dots", "mqtt-prefix");
  if (/[+#]/.test(prefix) || prefix.includes("\0") || prefix.startsWith("/") || prefix.endsWith("/") || prefix.startsWith("$"))
    throw new CliUsageError(
      `--mqtt-prefix ${JSON.stringify(prefix)}: topic levels without + # NUL, not starting with $ or /, not ending with /`,
    );
  const clientId = str(pick("mqtt-client-id", "clientId") ?? `dots-listen-${os.hostname()}-${port}`, "mqtt-client-id");
  if (Buffer.byteLength(clientId) > 200 || /[+#/]/.test(clientId) || clientId.includes("\0"))
    throw new CliUsageError(`--mqtt-client-id: at most 200 bytes, without / + # NUL (it names a topic level)`);
  const out: MqttSettings = {
    url: text,
    prefix,
    clientId,
    keepaliveSeconds: num(pick("mqtt-keepalive", "keepalive") ?? 30, "mqtt-keepalive", 5, 3600),
    holdSeconds: num(pick("mqtt-hold", "hold") ?? 600, "mqtt-hold", 0, 86_400),
    heartbeats: pick("mqtt-heartbeats", "heartbeats") === true,
  };
  const user = pick("mqtt-username", "username") ?? (parsed.username !== "" ? decodeURIComponent(parsed.username) : undefined);
  if (user !== undefined) out.username = str(user, "mqtt-username");
  const pwFile = pick("mqtt-password-file", "passwordFile");
  if (file.password !== undefined)
    throw new CliUsageError(`"mqtt.password" in --config: put the password in a file ("passwordFile") or ${MQTT_PASSWORD_ENV}`);
  if (pwFile !== undefined)
    out.password = Buffer.from(
      read(flagOrConfigPath(f, "mqtt-password-file", pwFile, "mqtt.passwordFile", base))
        .toString("utf8")
        .trim(),
      "utf8",
    );
  else if (env[MQTT_PASSWORD_ENV] !== undefined && env[MQTT_PASSWORD_ENV] !== "")
    out.password = Buffer.from(env[MQTT_PASSWORD_ENV] as string, "utf8");
  if (out.password !== undefined && out.username === undefined) throw new CliUsageError(`an MQTT password needs --mqtt-username`);
  const fileArg = (flag: string, key: string): Buffer | undefined => {
    const v = pick(flag, key);
    if (v === undefined) return undefined;
    return read(flagOrConfigPath(f, flag, v, `mqtt.${key}`, base));
  };
  const ca = fileArg("mqtt-ca", "ca");
  const cert = fileArg("mqtt-cert", "cert");
  const key = fileArg("mqtt-key", "key");
  if ((cert === undefined) !== (key === undefined)) throw new CliUsageError("--mqtt-cert and --mqtt-key go together");
  if ((ca || cert) && parsed.protocol !== "mqtts:") throw new CliUsageError("--mqtt-ca/--mqtt-cert need an mqtts:// URL");
  if (ca) out.ca = ca;
  if (cert && key) {
    out.cert = cert;
    out.key = key;
  }
  return out;
}

export function parseListenArgs(
  argv: readonly string[],
  read: FileReader = defaultReader,
  env: NodeJS.ProcessEnv = process.env,
): ListenConfig | "help" {
  const { settings, base, positional, help } = merged(argv, LISTEN_FLAGS);
  if (help) return "help";
  if (positional.length > 0) throw new CliUsageError(`unexpected argument "${positional[0]}" for listen`);
  const f = settings.__flags as ParsedFlags["values"];
  const fileBase = base;

  const port = num(f.port ?? settings.port ?? DEFAULT_PORT, "port", ...LIMITS.port);
  const host = (f.host ?? settings.host ?? "::") as string;

  // PSK entries: file list plus the flag entry.
  const psk: Array<PskCredential & { home?: string }> = [];
  if (settings.psk !== undefined) {
    if (!Array.isArray(settings.psk)) throw new CliUsageError(`"psk" in --config must be a list of {identity, key|keyFile, home?}`);
    settings.psk.forEach((e, i) => {
      if (!isRecord(e)) throw new CliUsageError(`psk[${i}] must be an object`);
      const entry: PskCredential & { home?: string } = {
        identity: pskIdentity(e.identity, `psk[${i}].identity`),
        key: pskKeyFrom(e, fileBase, read, `psk[${i}]`),
      };
      if (e.home !== undefined) entry.home = str(e.home, `psk[${i}].home`);
      psk.push(entry);
    });
  }
  if (f["psk-identity"] !== undefined || f["psk-key"] !== undefined || f["psk-file"] !== undefined) {
    const identity = pskIdentity(f["psk-identity"], "--psk-identity");
    const key = pskKeyFrom({ key: f["psk-key"], keyFile: f["psk-file"] }, undefined, read, "--psk-key/--psk-file");
    const entry: PskCredential & { home?: string } = { identity, key };
    if (f.home !== undefined) entry.home = str(f.home, "--home");
    psk.push(entry);
  }
  const identities = new Set<string>();
  for (const p of psk) {
    if (identities.has(p.identity)) throw new CliUsageError(`PSK identity "${p.identity}" is configured twice`);
    identities.add(p.identity);
  }

  const certificate = certificateFrom(
    {
      cert: f.cert ?? settings.cert,
      key: f.key ?? settings.key,
      ca: f.ca ?? settings.ca,
      passphrase: f.passphrase ?? settings.passphrase,
    },
    f.cert !== undefined ? undefined : fileBase,
    read,
  );

  let dtls = (f.dtls ?? settings.dtls) as boolean | undefined;
  let tls = (f.tls ?? settings.tls) as boolean | undefined;
  if (f.dtls === true && f.tls === undefined) tls = false;
  if (f.tls === true && f.dtls === undefined) dtls = false;
  // DTLS serves certificates with ECDHE_ECDSA (P-256 keys) and ECDHE_RSA (RSA >= 2048 bits).
  const dtlsCertificate = certificate !== undefined && isDtlsCertificateKey(certificate.key, certificate.passphrase);
  if (dtls === undefined && tls === undefined) {
    dtls = psk.length > 0 || dtlsCertificate;
    tls = psk.length > 0 || certificate !== undefined;
  }
  dtls = dtls === true;
  tls = tls === true;
  if (!dtls && !tls) throw new CliUsageError("nothing to listen on: give PSK credentials or a certificate (--cert/--key/--ca)");
  if (dtls && psk.length === 0 && !dtlsCertificate)
    throw new CliUsageError(
      certificate
        ? "--dtls with certificates needs an EC P-256 or RSA (>= 2048 bits) key; give a PSK or such a certificate"
        : "--dtls needs a PSK or a certificate (--cert/--key/--ca)",
    );
  if (tls && psk.length === 0 && !certificate) throw new CliUsageError("--tls needs a certificate (--cert/--key) or a PSK");

  // Home prefixes: file map plus NAME=PREFIX or bare PREFIX flags.
  const homePrefixes: Record<string, string[]> = {};
  if (settings.homePrefixes !== undefined) {
    if (!isRecord(settings.homePrefixes)) throw new CliUsageError(`"homePrefixes" must map home names to prefix lists`);
    for (const [name, list] of Object.entries(settings.homePrefixes)) {
      if (!Array.isArray(list) || list.some((p) => typeof p !== "string"))
        throw new CliUsageError(`homePrefixes.${name} must be a list of prefixes`);
      homePrefixes[name] = (list as string[]).map((p) => checkPrefix(p, `homePrefixes.${name}`));
    }
  }
  const defaultHome =
    (f.home as string | undefined) ??
    (f["psk-identity"] as string | undefined) ??
    (psk.length === 1 ? (psk[0].home ?? psk[0].identity) : undefined);
  for (const raw of (f["home-prefix"] as string[] | undefined) ?? []) {
    const eq = raw.indexOf("=");
    const name = eq >= 0 ? raw.slice(0, eq) : defaultHome;
    const prefix = eq >= 0 ? raw.slice(eq + 1) : raw;
    if (!name) throw new CliUsageError(`--home-prefix ${raw}: say which home it belongs to (NAME=PREFIX) or give --home`);
    (homePrefixes[name] ??= []).push(checkPrefix(prefix, `--home-prefix ${raw}`));
  }

  const fileDrop = isRecord(settings.dropList) ? settings.dropList : {};
  const dropList = {
    maxFailures: num(f["drop-after"] ?? fileDrop.maxFailures ?? DEFAULTS.dropAfterFailures, "drop-after", ...LIMITS.dropAfterFailures),
    windowMs: ms(f["drop-window-ms"] ?? fileDrop.windowMs ?? DEFAULTS.dropWindowMs, "drop-window-ms", LIMITS.dropWindowMs),
    banMs: ms(f["drop-ban-ms"] ?? fileDrop.banMs ?? DEFAULTS.dropBanMs, "drop-ban-ms", LIMITS.dropBanMs),
  };

  const options: ListenerOptions = { port, host, transports: { dtls, tls }, dropList, homePrefixes };
  if (psk.length > 0) options.psk = psk;
  if (certificate) options.certificate = certificate;
  options.stateDir = stateDirFrom(f["state-dir"], settings.stateDir, fileBase);
  const secretFile = f["ticket-secret-file"] ?? settings.ticketSecretFile;
  if (secretFile !== undefined) {
    const file = flagOrConfigPath(f, "ticket-secret-file", secretFile, "ticketSecretFile", fileBase);
    // The file's bytes without trailing white space (a newline from an editor or echo).
    const secret = Buffer.from(read(file).toString("latin1").trimEnd(), "latin1");
    if (secret.length < MIN_TICKET_SECRET_LENGTH)
      throw new CliUsageError(
        `--ticket-secret-file ${file}: ${secret.length} bytes; a ticket secret needs at least ${MIN_TICKET_SECRET_LENGTH} (openssl rand -base64 48 > ${file})`,
      );
    options.ticketSecret = secret;
  }
  const out: ListenConfig = { options };
  const cuidIdentity = f["cuid-identity"] ?? settings.cuidIdentity;
  if (cuidIdentity !== undefined) out.cuidIdentity = str(cuidIdentity, "cuid-identity");
  const perSource = f["max-handshakes-per-source"] ?? settings.maxHandshakesPerSource;
  if (perSource !== undefined) out.maxHandshakesPerSource = num(perSource, "max-handshakes-per-source", ...LIMITS.maxHandshakesPerSource);
  const cookieAlways = f["dtls-cookie-always"] ?? settings.dtlsCookieAlways;
  if (cookieAlways !== undefined) {
    if (typeof cookieAlways !== "boolean") throw new CliUsageError(`"dtlsCookieAlways" in --config: true or false`);
    out.dtlsCookieAlways = cookieAlways;
  }
  const repeat = f["request-repeat-ms"] ?? settings.requestRepeatMs;
  if (repeat !== undefined) out.requestRepeatMs = ms(repeat, "request-repeat-ms", LIMITS.requestRepeatMs);
  const timeout = f["request-timeout-ms"] ?? settings.requestTimeoutMs;
  if (timeout !== undefined) out.requestTimeoutMs = ms(timeout, "request-timeout-ms", LIMITS.requestTimeoutMs);
  const mqtt = mqttFrom(f, settings, base, read, port, env);
  if (mqtt) out.mqtt = mqtt;
  const perAddress = f["max-tcp-per-address"] ?? settings.maxTcpPerAddress;
  if (perAddress !== undefined) out.maxTcpPerAddress = num(perAddress, "max-tcp-per-address", 1, 1_000_000);
  return out;
}

// ------------------------------------------------------------------------------------ dial

export interface DialConfig {
  options: DialerOptions;
  autoDecide?: DecisionOutcome;
  /** Active-but-terminating period after DELETE, ms (engine default 120000). */
  terminatingPeriodMs?: number;
  /** Periodic status notifications, ms (engine default 60000; 0 off). */
  statusPeriodMs?: number;
  /** Set by --enforce: the enforcer (NAT lookup + filter action) decides every mitigation. */
  enforcement?: EnforcementFlags;
}

const OUTCOMES: readonly DecisionOutcome[] = DECISION_OUTCOMES;

export function parseDialArgs(argv: readonly string[], read: FileReader = defaultReader): DialConfig | "help" {
  const { settings, base, positional, help } = merged(argv, DIAL_FLAGS);
  if (help) return "help";
  const f = settings.__flags as ParsedFlags["values"];

  const hosts = [...positional, ...((f.connect as string[] | undefined) ?? [])];
  if (typeof f.host === "string") hosts.push(f.host);
  if (hosts.length === 0 && settings.hosts !== undefined) {
    if (!Array.isArray(settings.hosts) || settings.hosts.some((h) => typeof h !== "string" || h.length === 0))
      throw new CliUsageError(`"hosts" must be a list of host names or addresses`);
    hosts.push(...(settings.hosts as string[]));
  }
  const discover = discoverFrom(f, settings);
  if (hosts.length === 0 && !discover)
    throw new CliUsageError(
      "dial needs the ISP's address: dots-call-home dial [options] HOST, or --discover-domain DOMAIN to find it by DNS SRV (RFC 8973)",
    );

  const port = num(f.port ?? settings.port ?? DEFAULT_PORT, "port", 1, 65535);
  const transport = (f.transport ?? settings.transport ?? "auto") as string;
  if (transport !== "auto" && transport !== "udp" && transport !== "tcp")
    throw new CliUsageError(`--transport must be auto, udp or tcp, got "${transport}"`);

  let psk: PskCredential | undefined;
  if (f["psk-identity"] !== undefined || f["psk-key"] !== undefined || f["psk-file"] !== undefined) {
    psk = {
      identity: pskIdentity(f["psk-identity"], "--psk-identity"),
      key: pskKeyFrom({ key: f["psk-key"], keyFile: f["psk-file"] }, undefined, read, "--psk-key/--psk-file"),
    };
  } else if (settings.psk !== undefined) {
    if (!isRecord(settings.psk)) throw new CliUsageError(`"psk" in a dial --config is one {identity, key|keyFile}`);
    psk = { identity: pskIdentity(settings.psk.identity, "psk.identity"), key: pskKeyFrom(settings.psk, base, read, "psk") };
  }
  const certificate = certificateFrom(
    {
      cert: f.cert ?? settings.cert,
      key: f.key ?? settings.key,
      ca: f.ca ?? settings.ca,
      passphrase: f.passphrase ?? settings.passphrase,
      servername: f.servername ?? settings.servername,
    },
    f.cert !== undefined ? undefined : base,
    read,
  );
  if (!psk && !certificate)
    throw new CliUsageError("dial needs credentials: --psk-identity with --psk-key/--psk-file, or --cert/--key/--ca");
  if (transport === "udp" && !psk && certificate && !isDtlsCertificateKey(certificate.key, certificate.passphrase))
    throw new CliUsageError("--transport udp (DTLS) with certificates needs an EC P-256 or RSA (>= 2048 bits) key");

  const prefixes = [...((settings.homePrefixes as unknown[] | undefined) ?? []), ...((f["home-prefix"] as string[] | undefined) ?? [])];
  if (prefixes.some((p) => typeof p !== "string")) throw new CliUsageError("home prefixes must be CIDR prefixes such as 203.0.113.0/24");
  for (let i = 0; i < prefixes.length; i++) prefixes[i] = checkPrefix(prefixes[i] as string, `--home-prefix ${prefixes[i] as string}`);
  if (prefixes.length === 0)
    throw new CliUsageError("dial needs --home-prefix: source-prefix of every request must lie inside the home's prefixes");

  const options: DialerOptions = { hosts, port, transport: transport as TransportChoice, homePrefixes: prefixes as string[] };
  if (discover) options.discover = discover;
  if (psk) options.psk = psk;
  if (certificate) options.certificate = certificate;
  const hb = f["heartbeat-interval"] ?? settings.heartbeatInterval;
  if (hb !== undefined) options.heartbeatInterval = secs(hb, "heartbeat-interval", LIMITS.heartbeatIntervalS);
  const wait = f["decision-wait"] ?? settings.decisionWaitMs;
  if (wait !== undefined) options.decisionWaitMs = ms(wait, "decision-wait", LIMITS.decisionWaitMs);
  const rec = isRecord(settings.reconnect) ? settings.reconnect : {};
  const rmin = f["reconnect-min"] ?? rec.minMs;
  const rmax = f["reconnect-max"] ?? rec.maxMs;
  if (rmin !== undefined || rmax !== undefined) {
    const minMs = ms(rmin ?? DEFAULTS.reconnectMinMs, "reconnect-min", LIMITS.reconnectMs);
    const maxMs = ms(rmax ?? Math.max(DEFAULTS.reconnectMaxMs, minMs), "reconnect-max", LIMITS.reconnectMs);
    if (maxMs < minMs) throw new CliUsageError("--reconnect-max must not be below --reconnect-min");
    options.reconnect = { minMs, maxMs };
  }
  const indefinite = f["allow-indefinite-lifetime"] ?? settings.allowIndefiniteLifetime;
  if (indefinite !== undefined) options.allowIndefiniteLifetime = indefinite === true;
  const maxLifetime = f["max-lifetime"] ?? settings.maxLifetime;
  if (maxLifetime !== undefined) options.maxLifetime = secs(maxLifetime, "max-lifetime", LIMITS.maxLifetimeS);
  options.stateDir = stateDirFrom(f["state-dir"], settings.stateDir, base);

  const out: DialConfig = { options };
  const terminating = f["terminating-period"] ?? settings.terminatingPeriodMs;
  if (terminating !== undefined) out.terminatingPeriodMs = ms(terminating, "terminating-period", LIMITS.terminatingPeriodMs);
  const statusPeriod = f["status-period"] ?? settings.statusPeriodMs;
  if (statusPeriod !== undefined) out.statusPeriodMs = ms(statusPeriod, "status-period", LIMITS.statusPeriodMs);
  const auto = f["auto-decide"] ?? settings.autoDecide;
  if (auto !== undefined) {
    if (!OUTCOMES.includes(auto as DecisionOutcome)) throw new CliUsageError(`--auto-decide must be one of ${OUTCOMES.join(", ")}`);
    out.autoDecide = auto as DecisionOutcome;
  }
  const enforcement = enforcementFrom(f, settings, base);
  if (enforcement) {
    if (out.autoDecide !== undefined)
      throw new CliUsageError("--auto-decide and --enforce exclude each other: with --enforce the enforcer decides");
    out.enforcement = enforcement;
  }
  return out;
}

/** "192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:5353", as node:dns setServers takes them. */
export function checkDnsServer(text: string): string {
  const problem = dnsServerProblem(text);
  if (problem) throw new CliUsageError(`--dns-server ${JSON.stringify(text)}: ${problem}`);
  return text;
}

/** --discover-domain / --dns-server / --discover-dnssec (or discoverDomain / dnsServers / discoverDnssec in --config). */
function discoverFrom(f: ParsedFlags["values"], settings: Record<string, unknown>): DialerOptions["discover"] {
  const domain = f["discover-domain"] ?? settings.discoverDomain;
  const flagServers = f["dns-server"] as string[] | undefined;
  let servers: unknown = flagServers ?? settings.dnsServers;
  if (servers !== undefined && (!Array.isArray(servers) || servers.some((s) => typeof s !== "string")))
    throw new CliUsageError(`"dnsServers" must be a list of addresses such as "192.0.2.53" or "[2001:db8::53]:5353"`);
  const dnssec = f["discover-dnssec"] ?? settings.discoverDnssec;
  if (dnssec !== undefined && typeof dnssec !== "boolean") throw new CliUsageError(`"discoverDnssec" must be true or false`);
  if (domain === undefined) {
    if (servers !== undefined && (servers as string[]).length > 0)
      throw new CliUsageError("--dns-server needs --discover-domain: it names the DNS server the SRV lookup asks");
    if (dnssec === true) throw new CliUsageError("--discover-dnssec needs --discover-domain: it qualifies the SRV answers");
    return undefined;
  }
  const name = str(domain, "discover-domain");
  const problem = discoveryDomainProblem(name);
  if (problem) throw new CliUsageError(`--discover-domain ${JSON.stringify(name)} ${problem}`);
  const out: NonNullable<DialerOptions["discover"]> = { domain: name };
  servers = (servers as string[] | undefined)?.map(checkDnsServer);
  if (servers && (servers as string[]).length > 0) out.dnsServers = servers as string[];
  if (dnssec === true) out.dnssecValidated = true;
  return out;
}

function choice<T extends string>(v: unknown, name: string, allowed: readonly T[]): T {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v))
    throw new CliUsageError(`--${name} must be ${allowed.join(" or ")}, got ${JSON.stringify(v)}`);
  return v as T;
}

/** The enforcement flags, checked here so a typo fails before any socket or nft runs. */
function enforcementFrom(
  f: ParsedFlags["values"],
  settings: Record<string, unknown>,
  base: string | undefined,
): EnforcementFlags | undefined {
  const pick = (flag: string, key: string): unknown => f[flag] ?? settings[key];
  const enforce = pick("enforce", "enforce");
  const given = [
    ["nat", "nat"],
    ["action", "action"],
    ["consent", "consent"],
    ["consent-timeout", "consentTimeoutMs"],
    ["consent-on-timeout", "consentOnTimeout"],
    ["nft-table", "nftTable"],
    ["nft-owner", "nftOwner"],
  ].filter(([flag, key]) => pick(flag, key) !== undefined);
  if (enforce === undefined) {
    if (given.length > 0) throw new CliUsageError(`--${given[0][0]} needs --enforce nftables|dry-run`);
    return undefined;
  }
  const out: EnforcementFlags = { enforce: choice(enforce, "enforce", ["nftables", "dry-run"] as const) };
  const nat = pick("nat", "nat");
  if (nat !== undefined) {
    const text = str(nat, "nat");
    try {
      const spec = parseNatSpec(text);
      // a static table named in --config is relative to the file, like the other paths there
      out.nat = typeof spec === "object" && spec.kind === "static" && f.nat === undefined ? `static:${resolveFrom(base, spec.file)}` : text;
    } catch (e) {
      throw new CliUsageError(`--nat: ${(e as Error).message}`);
    }
  }
  const action = pick("action", "action");
  if (action !== undefined) out.action = choice(action, "action", ["block", "quarantine"] as const);
  const consent = pick("consent", "consent");
  if (consent !== undefined) out.consent = choice(consent, "consent", ["auto", "manual"] as const);
  const timeout = pick("consent-timeout", "consentTimeoutMs");
  const onTimeout = pick("consent-on-timeout", "consentOnTimeout");
  if ((timeout !== undefined || onTimeout !== undefined) && out.consent !== "manual") {
    throw new CliUsageError(`--${timeout !== undefined ? "consent-timeout" : "consent-on-timeout"} needs --consent manual`);
  }
  if (timeout !== undefined) out.consentTimeoutMs = ms(timeout, "consent-timeout", LIMITS.consentTimeoutMs);
  if (onTimeout !== undefined) out.consentOnTimeout = choice(onTimeout, "consent-on-timeout", ["reject", "approve"] as const);
  const table = pick("nft-table", "nftTable");
  if (table !== undefined) {
    try {
      out.table = checkTableName(str(table, "nft-table"));
    } catch (e) {
      throw new CliUsageError(`--nft-table: ${(e as Error).message}`);
    }
  }
  const owner = pick("nft-owner", "nftOwner");
  if (owner !== undefined) {
    const text = str(owner, "nft-owner");
    if (!/^[A-Za-z0-9_.-]{1,48}$/.test(text)) throw new CliUsageError("--nft-owner: 1 to 48 of A-Z a-z 0-9 _ . -");
    out.owner = text;
  }
  return out;
}
