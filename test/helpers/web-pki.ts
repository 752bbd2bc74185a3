import { join } from "node:path";
import { run } from "./cli.js";

async function openssl(args: string[]): Promise<void> {
  const r = await run("openssl", args);
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

/**
 * A private "public" CA made by openssl, standing in for the Web PKI (Let's Encrypt and the like),
 * and leaves under it for localhost and 127.0.0.1: what an https_web bundle endpoint presents.
 */
export async function makeWebPki(dir: string, name = "web"): Promise<{ rootPem: string; rootKey: string; leaf(leafName: string): Promise<{ cert: string; key: string }> }> {
  const rootPem = join(dir, `${name}-root.pem`);
  const rootKey = join(dir, `${name}-root.key`);
  await openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", rootKey,
    "-out", rootPem, "-subj", `/CN=Hallmark test Web PKI root ${name}`, "-days", "2",
  ]);
  return {
    rootPem,
    rootKey,
    async leaf(leafName: string) {
      const key = join(dir, `${leafName}.key`);
      const cert = join(dir, `${leafName}.pem`);
      await openssl([
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
        "-subj", "/CN=localhost", "-days", "2", "-CA", rootPem, "-CAkey", rootKey,
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
      ]);
      return { cert, key };
    },
  };
}
