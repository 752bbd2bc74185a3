import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from "jose";
import { testCert } from "./test-pki.js";

/**
 * A test identity provider: its signing keys made here, its JWKS served over HTTPS on loopback
 * with a certificate from a CA made here (written to `caFile`), so that configuring `caFile` is
 * what makes it trusted. `published` is what the JWKS endpoint serves, changeable at any time;
 * `fetches` counts the requests it answered.
 */

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

export async function signingKey(kid: string, alg = "ES256"): Promise<SigningKey> {
  const k = await generateKeyPair(alg, { extractable: true });
  return { kid, ...k, jwk: { ...(await exportJWK(k.publicKey)), kid, alg, use: "sig" } };
}

export interface TestIdp {
  /** The IdP's current signing key (published). */
  key: SigningKey;
  /** What the JWKS endpoint serves. */
  published: JWK[];
  /** How many JWKS requests it answered. */
  readonly fetches: number;
  jwksUri: string;
  /** PEM of the CA its TLS certificate chains to. */
  caFile: string;
  /** PEM of a CA that has nothing to do with it. */
  otherCaFile: string;
  close(): Promise<void>;
}

const pem = (der: ArrayBuffer, label: string) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n")}\n-----END ${label}-----\n`;

/** Starts the IdP's JWKS endpoint on 127.0.0.1; its CA files go in `dir`. */
export async function startTestIdp(dir: string): Promise<TestIdp> {
  const root = await testCert({ name: "Test IdP Root", curve: "P-256" });
  const leaf = await testCert({
    name: "idp",
    curve: "P-256",
    issuer: root,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }])],
  });
  const other = await testCert({ name: "Another Root", curve: "P-256" });
  const caFile = join(dir, "idp-ca.pem");
  const otherCaFile = join(dir, "other-ca.pem");
  writeFileSync(caFile, root.cert.toString("pem"));
  writeFileSync(otherCaFile, other.cert.toString("pem"));
  const tlsKey = pem(await webcrypto.subtle.exportKey("pkcs8", leaf.keys.privateKey), "PRIVATE KEY");
  const key = await signingKey("idp-1");
  const state = { key, published: [key.jwk], fetches: 0 };
  const server: Server = createServer({ key: tlsKey, cert: leaf.cert.toString("pem") }, (_req, res) => {
    state.fetches++;
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys: state.published }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const jwksUri = `https://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  return Object.assign(state, {
    jwksUri,
    caFile,
    otherCaFile,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }) as TestIdp;
}

/**
 * A token signed by `key` (default the IdP's): `claims` as given (the caller sets iss, sub, aud,
 * exp…), header { alg: ES256, kid, typ: JWT } overridable; a claim set to undefined is left out.
 */
export async function signedToken(key: SigningKey, claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  const c = { ...claims };
  for (const [k, v] of Object.entries(c)) if (v === undefined) delete c[k];
  return new SignJWT(c).setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT", ...header } as never).sign(key.privateKey);
}
