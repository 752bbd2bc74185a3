import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pinServer } from "./loadgen.js";

/** cfssl's certificate table (certdb/sqlite/migrations/001_CreateCertificates.sql, cfssl 1.2). */
const CFSSL_CERTDB = `
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier)
);`;

export interface CfsslPeer {
  /** POST targets: /api/v1/cfssl/sign of the server with its certificate DB, and of the one without. */
  withDb: { url: string; pid: number };
  withoutDb: { url: string; pid: number };
  certFile: string;
  keyFile: string;
  caFile: string;
  stop(): Promise<void>;
}

/**
 * Debian's golang-cfssl as the peer of issue 10: `cfssl serve` with mutual TLS, signing CSRs with
 * an ECDSA P-256 CA key held in a file, once with its SQLite certificate DB and once without.
 * It installs the package when absent and it may (root, apt-get); otherwise a reason to skip.
 */
export async function startCfssl(dir: string): Promise<CfsslPeer | { skip: string }> {
  if (!existsSync("/usr/bin/cfssl")) {
    if (process.getuid?.() !== 0 || !existsSync("/usr/bin/apt-get")) return { skip: "cfssl is absent and apt-get needs root here (apt-get install golang-cfssl)" };
    try {
      console.log("(installing Debian's golang-cfssl for the peer comparison)");
      execFileSync("apt-get", ["install", "-y", "-q", "golang-cfssl"], { stdio: "ignore", timeout: 300_000 });
    } catch (e) {
      return { skip: `apt-get install golang-cfssl failed: ${(e as Error).message.split("\n")[0]}` };
    }
  }
  const f = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  try {
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f("ca-key.pem"));
    openssl("req", "-x509", "-new", "-key", f("ca-key.pem"), "-subj", "/CN=bench cfssl CA", "-days", "2", "-out", f("ca.pem"),
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    for (const [name, ext] of [["tls", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"], ["client", "extendedKeyUsage=clientAuth"]] as const) {
      writeFileSync(f(`${name}.ext`), `${ext}\n`);
      openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f(`${name}-key.pem`), "-subj", `/CN=bench ${name}`, "-out", f(`${name}.csr`));
      openssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-days", "2", "-extfile", f(`${name}.ext`), "-out", f(`${name}.pem`));
    }
  } catch (e) {
    return { skip: `openssl could not make the peer's CA and TLS certificates: ${(e as Error).message.split("\n")[0]}` };
  }
  writeFileSync(f("config.json"), JSON.stringify({ signing: { default: { expiry: "1h", usages: ["digital signature", "server auth", "client auth"] } } }));
  const db = new Database(f("certs.db"));
  db.exec(CFSSL_CERTDB);
  db.close();
  writeFileSync(f("db-config.json"), JSON.stringify({ driver: "sqlite3", data_source: f("certs.db") }));

  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        c.kill("SIGTERM");
        await new Promise((r) => c.once("exit", r));
      }),
    );
  };
  const serve = async (withDb: boolean) => {
    const port = await freePort();
    const child = spawn(
      "cfssl",
      ["serve", "-address", "127.0.0.1", "-port", String(port), "-ca", f("ca.pem"), "-ca-key", f("ca-key.pem"), "-config", f("config.json"),
        "-tls-cert", f("tls.pem"), "-tls-key", f("tls-key.pem"), "-mutual-tls-ca", f("ca.pem"), "-loglevel", "5",
        ...(withDb ? ["-db-config", f("db-config.json")] : [])],
      { stdio: "ignore" },
    );
    children.push(child);
    await listening(port, child);
    pinServer(child.pid!);
    return { url: `https://127.0.0.1:${port}/api/v1/cfssl/sign`, pid: child.pid! };
  };
  try {
    return { withDb: await serve(true), withoutDb: await serve(false), certFile: f("client.pem"), keyFile: f("client-key.pem"), caFile: f("ca.pem"), stop };
  } catch (e) {
    await stop();
    return { skip: `cfssl serve did not start: ${(e as Error).message}` };
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function listening(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`it exited ${child.exitCode}`);
    const up = await new Promise<boolean>((r) => {
      const c = createConnection(port, "127.0.0.1", () => (c.end(), r(true)));
      c.on("error", () => r(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("it did not listen within 10 s");
}
