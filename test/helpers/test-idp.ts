import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { writeFileSync } from "node:fs";
import { type Server, createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from "jose";
import { testCert } from "./test-pki.js";

/**
 * A test OIDC-style identity provider, the "person's token" side of token exchange: a signing key
 * made here, its JWKS served over HTTPS on loopback with a certificate from a CA made here (so a
 * server trusts it only through `caFile`), and tokens signed with that key.
 */
export interface TestIdp {
  /** The `iss` of its tokens (a name: its JWKS is at jwksUri). */
  issuer: string;
  jwksUri: string;
  /** PEM of the CA the JWKS endpoint's certificate chains to. */
  caFile: string;
  /** How many times the JWKS was fetched. */
  readonly fetches: number;
  /** The `delegation.subjectIssuers` entry that trusts this IdP for `audiences`. */
  subjectIssuer(audiences: string[]): { issuer: string; audiences: string[]; jwksUri: string; caFile: string; jwksRefresh: number };
  /** A person's token: iss, sub, aud, iat, exp (10 minutes) unless overridden; `undefined` removes a claim. */
  token(claims?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

const pem = (der: ArrayBuffer, label: string) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n")}\n-----END ${label}-----\n`;

export async function startTestIdp(dir: string, o: { issuer?: string; audience?: string; sub?: string } = {}): Promise<TestIdp> {
  const issuer = o.issuer ?? "https://idp.example.com";
  const root = await testCert({ name: "Test IdP Root", curve: "P-256" });
  const leaf = await testCert({ name: "idp", curve: "P-256", issuer: root, extensions: [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }])] });
  const caFile = join(dir, "idp-ca.pem");
  writeFileSync(caFile, root.cert.toString("pem"));
  const signing: { privateKey: CryptoKey; publicKey: CryptoKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = "idp-1";
  const jwk: JWK = { ...(await exportJWK(signing.publicKey)), kid, alg: "ES256", use: "sig" };
  let fetches = 0;
  const server: Server = createServer({ key: pem(await webcrypto.subtle.exportKey("pkcs8", leaf.keys.privateKey), "PRIVATE KEY"), cert: leaf.cert.toString("pem") }, (_req, res) => {
    fetches++;
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const jwksUri = `https://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  return {
    issuer,
    jwksUri,
    caFile,
    get fetches() {
      return fetches;
    },
    subjectIssuer: (audiences) => ({ issuer, audiences, jwksUri, caFile, jwksRefresh: 300 }),
    async token(claims = {}) {
      const t = Math.floor(Date.now() / 1000);
      const all: Record<string, unknown> = { iss: issuer, sub: o.sub ?? "alice@example.com", aud: o.audience ?? "https://hallmark.example.org", iat: t - 5, exp: t + 600, ...claims };
      for (const [k, v] of Object.entries(all)) if (v === undefined) delete all[k];
      return new SignJWT(all).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(signing.privateKey);
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
