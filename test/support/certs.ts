// Throw-away test PKI made with the openssl CLI at test time into a temporary folder: no key is
// ever committed. Generated once per process (cached) and removed when the process exits.
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface KeyPair {
  /** PEM certificate. */
  readonly cert: string;
  /** PEM private key (unencrypted). */
  readonly key: string;
  readonly certPath: string;
  readonly keyPath: string;
}

export interface TestPki {
  /** Temporary folder holding every file below. */
  readonly dir: string;
  /** The trusted test CA (ECDSA P-256). */
  readonly ca: KeyPair;
  /** ISP-side (D)TLS server: CN isp.example, SAN DNS:isp.example, DNS:localhost, IP:127.0.0.1, IP:::1. */
  readonly isp: KeyPair;
  /** Home-side client certificates (CN and SAN DNS home-N.example). */
  readonly home1: KeyPair;
  readonly home2: KeyPair;
  /** A CA nobody trusts, and a client certificate it signed (CN home-1.example, like a real home). */
  readonly rogueCa: KeyPair;
  readonly rogueHome: KeyPair;
  /** Signed by the trusted CA, names like isp (localhost, 127.0.0.1, ::1), but already expired. */
  readonly expired: KeyPair;
  /** Signed by the trusted CA, valid, but names only wrong.example (no localhost, no IP). */
  readonly wrongName: KeyPair;
  /** Like isp and home1, with RSA-2048 keys (ECDHE_RSA suites; RSA client certificates). */
  readonly ispRsa: KeyPair;
  readonly homeRsa: KeyPair;
  /** Names like isp, signed by the trusted CA, with an RSA-1024 key: too small for us. */
  readonly ispRsa1024: KeyPair;
  /** A valid key that matches no certificate. */
  readonly strayKey: { readonly key: string; readonly keyPath: string };
}

let cached: Promise<TestPki> | undefined;

/** The process-wide test PKI (generated on first call). */
export function makeTestPki(): Promise<TestPki> {
  cached ??= generate();
  return cached;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  try {
    await run("openssl", args, { cwd: dir });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr ?? err.message}`);
  }
}

async function generate(): Promise<TestPki> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-pki-"));
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  const p = (name: string) => path.join(dir, name);
  const read = (name: string) => fs.readFileSync(p(name), "utf8");
  let serial = 1;

  const makeCa = async (name: string, cn: string): Promise<KeyPair> => {
    await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`]);
    await openssl(dir, [
      "req",
      "-x509",
      "-new",
      "-key",
      `${name}.key`,
      "-sha256",
      "-days",
      "30",
      "-subj",
      `/CN=${cn}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      `${name}.crt`,
    ]);
    return { cert: read(`${name}.crt`), key: read(`${name}.key`), certPath: p(`${name}.crt`), keyPath: p(`${name}.key`) };
  };

  const makeLeaf = async (name: string, ca: string, cn: string, san: string, eku: string, days = 30, rsaBits = 0): Promise<KeyPair> => {
    if (rsaBits > 0) await openssl(dir, ["genpkey", "-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${rsaBits}`, "-out", `${name}.key`]);
    else await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`]);
    await openssl(dir, ["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${cn}`, "-out", `${name}.csr`]);
    fs.writeFileSync(
      p(`${name}.ext`),
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${eku}\nsubjectAltName=${san}\n`,
    );
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-set_serial",
      String(serial++),
      "-days",
      String(days),
      "-sha256",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.crt`,
    ]);
    return { cert: read(`${name}.crt`), key: read(`${name}.key`), certPath: p(`${name}.crt`), keyPath: p(`${name}.key`) };
  };

  const ispNames = "DNS:isp.example,DNS:localhost,IP:127.0.0.1,IP:::1";
  const ca = await makeCa("ca", "DOTS Test CA");
  const rogueCa = await makeCa("rogue-ca", "Rogue CA");
  const [isp, home1, home2, rogueHome, expired, wrongName, ispRsa, homeRsa, ispRsa1024] = await Promise.all([
    makeLeaf("isp", "ca", "isp.example", ispNames, "serverAuth"),
    makeLeaf("home-1", "ca", "home-1.example", "DNS:home-1.example", "clientAuth"),
    makeLeaf("home-2", "ca", "home-2.example", "DNS:home-2.example", "clientAuth"),
    makeLeaf("rogue-home", "rogue-ca", "home-1.example", "DNS:home-1.example", "clientAuth"),
    // -days -1 puts notAfter one day before notBefore: expired from the start.
    makeLeaf("expired", "ca", "isp.example", ispNames, "serverAuth,clientAuth", -1),
    makeLeaf("wrong-name", "ca", "wrong.example", "DNS:wrong.example", "serverAuth,clientAuth"),
    makeLeaf("isp-rsa", "ca", "isp.example", ispNames, "serverAuth", 30, 2048),
    makeLeaf("home-rsa", "ca", "home-rsa.example", "DNS:home-rsa.example", "clientAuth", 30, 2048),
    makeLeaf("isp-rsa-1024", "ca", "isp.example", ispNames, "serverAuth", 30, 1024),
  ]);
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "stray.key"]);
  return {
    dir,
    ca,
    isp,
    home1,
    home2,
    rogueCa,
    rogueHome,
    expired,
    wrongName,
    ispRsa,
    homeRsa,
    ispRsa1024,
    strayKey: { key: read("stray.key"), keyPath: p("stray.key") },
  };
}
