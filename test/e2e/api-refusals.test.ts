import { afterAll, beforeAll, describe, expect, it } from "vitest";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { newClientKey } from "../../src/client/csr.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { httpsRaw, postJson } from "../helpers/https.js";
import { join } from "node:path";

let server: TestServer;
let now = new Date();
const clock = () => now;

beforeAll(async () => {
  server = await startTestServer({ clock });
});
afterAll(async () => {
  await server?.destroy();
});

const api = (path: string) => `${server.url}${path}`;
const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

async function openSession(attestor = "join_token"): Promise<{ session_id: string; nonce: string }> {
  const r = await postJson(api("/v1/attest/sessions"), { attestor });
  expect(r.status).toBe(201);
  return r.body as { session_id: string; nonce: string };
}

async function newToken(id = "spiffe://example.org/node/r1", ttl = 600): Promise<string> {
  return ((await admin("POST", "/admin/tokens", { spiffe_id: id, ttl_seconds: ttl })) as { token: string }).token;
}

function expectProblem(r: { status: number; contentType: string; body: unknown }, status: number, code: string): void {
  expect(r.contentType).toContain("application/problem+json");
  expect(r.body).toMatchObject({ status, code, type: `urn:hallmark:error:${code}` });
  expect(r.status).toBe(status);
  expect(JSON.stringify(r.body)).not.toMatch(/at \w+ \(|\.ts:\d+/); // no stack trace
}

/** Audit records of refusals with this code, read from the real database. */
async function refusals(code: string): Promise<number> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 100_000)).filter((r) => r.outcome === "refused" && r.code === code).length;
  } finally {
    await store.close();
  }
}

/** A CSR made with @peculiar/x509 so tests can put hostile extensions in it. */
async function csrWith(extensions: x509.Extension[], curve: "P-256" | "P-384" = "P-256"): Promise<string> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: curve }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=test",
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions,
  });
  return csr.toString("pem");
}

describe("HTTP input validation", () => {
  it("answers malformed JSON with invalid_request", async () => {
    const r = await httpsRaw(api("/v1/attest/sessions"), { method: "POST", body: "{not json", headers: { "content-type": "application/json" } });
    expectProblem(r, 400, "invalid_request");
  });

  it("answers an oversized body with body_too_large", async () => {
    const r = await postJson(api("/v1/attest/sessions"), { attestor: "x".repeat(300 * 1024) });
    expectProblem(r, 413, "body_too_large");
  });

  it("answers a non-JSON content type with unsupported_media_type", async () => {
    const r = await httpsRaw(api("/v1/attest/sessions"), { method: "POST", body: "attestor=tpm", headers: { "content-type": "application/x-www-form-urlencoded" } });
    expectProblem(r, 415, "unsupported_media_type");
  });

  it("answers unknown fields, unknown routes and bad session ids", async () => {
    expectProblem(await postJson(api("/v1/attest/sessions"), { attestor: "join_token", extra: 1 }), 400, "invalid_request");
    expectProblem(await httpsRaw(api("/v1/nothing")), 404, "not_found");
    expectProblem(await postJson(api("/v1/attest/sessions/not-a-uuid/evidence"), { csr: "x", evidence: {} }), 400, "invalid_request");
    expectProblem(
      await postJson(api("/v1/attest/sessions/00000000-0000-4000-8000-000000000000/evidence"), { csr: "x", evidence: {} }),
      404,
      "session_not_found",
    );
  });

  it("refuses an unknown attestor type", async () => {
    expectProblem(await postJson(api("/v1/attest/sessions"), { attestor: "magic" }), 400, "unknown_attestor");
  });

  it("refuses node endpoints without a client certificate", async () => {
    const key = await newClientKey();
    expectProblem(await postJson(api("/v1/svids/x509"), { csr: key.csrPem }), 401, "client_cert_required");
    expectProblem(await postJson(api("/v1/svids/jwt"), { audience: ["a"] }), 401, "client_cert_required");
  });

  it("refuses a client certificate from another CA", async () => {
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=rogue",
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/node/r1" }])],
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
    const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`;
    const csr = (await newClientKey()).csrPem;
    expectProblem(await postJson(api("/v1/svids/x509"), { csr }, { cert: cert.toString("pem"), key }), 401, "client_cert_invalid");
  });
});

describe("attestation refusals, each audited", () => {
  it("refuses a malformed CSR and spends the session", async () => {
    const s = await openSession();
    const before = await refusals("csr_malformed");
    const r = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", evidence: { token: await newToken() } });
    expectProblem(r, 400, "csr_malformed");
    expect(await refusals("csr_malformed")).toBe(before + 1);
  });

  it("refuses a CSR asking for a CA certificate", async () => {
    const s = await openSession();
    const csr = await csrWith([new x509.BasicConstraintsExtension(true, undefined, true)]);
    const r = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { token: await newToken("spiffe://example.org/node/ca") } });
    expectProblem(r, 400, "csr_requests_ca");
    expect(await refusals("csr_requests_ca")).toBe(1);
  });

  it("refuses a CSR naming an identity outside the trust domain, or not the node's", async () => {
    for (const uri of ["spiffe://evil.org/node/r1", "spiffe://example.org/someone-else"]) {
      const s = await openSession();
      const csr = await csrWith([new x509.SubjectAlternativeNameExtension([{ type: "url", value: uri }])]);
      const r = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { token: await newToken("spiffe://example.org/node/san") } });
      expectProblem(r, 403, "csr_san_not_allowed");
    }
    expect(await refusals("csr_san_not_allowed")).toBe(2);
  });

  it("refuses a CSR whose signature does not verify", async () => {
    const s = await openSession();
    const good = (await newClientKey()).csrPem;
    const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ""), "base64");
    der.writeUInt8(der.readUInt8(der.length - 5) ^ 0x01, der.length - 5); // inside the signature
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    const r = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr: bad, evidence: { token: await newToken("spiffe://example.org/node/sig") } });
    expect([400]).toContain(r.status);
    expect(["csr_signature_invalid", "csr_malformed"]).toContain((r.body as { code: string }).code);
  });

  it("refuses a reused session (nonce) and an expired one", async () => {
    const s = await openSession();
    const csr = (await newClientKey()).csrPem;
    const first = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { token: await newToken("spiffe://example.org/node/once") } });
    expect(first.status).toBe(200);
    const again = await postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { token: await newToken("spiffe://example.org/node/once") } });
    expectProblem(again, 403, "session_used");

    const late = await openSession();
    now = new Date(now.getTime() + 10 * 60_000);
    try {
      const r = await postJson(api(`/v1/attest/sessions/${late.session_id}/evidence`), { csr, evidence: { token: await newToken("spiffe://example.org/node/late") } });
      expectProblem(r, 403, "session_expired");
    } finally {
      now = new Date();
    }
    expect(await refusals("session_used")).toBe(1);
    expect(await refusals("session_expired")).toBe(1);
  });

  it("refuses an unknown, a reused and an expired join token", async () => {
    const csr = (await newClientKey()).csrPem;
    const submit = async (token: string) => {
      const s = await openSession();
      return postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { token } });
    };
    expectProblem(await submit("A".repeat(43)), 403, "join_token_invalid");
    expectProblem(await submit("short"), 403, "join_token_invalid");
    expectProblem(await (async () => {
      const s = await openSession();
      return postJson(api(`/v1/attest/sessions/${s.session_id}/evidence`), { csr, evidence: { nope: 1 } });
    })(), 400, "invalid_evidence");
    const t = await newToken("spiffe://example.org/node/tok");
    expect((await submit(t)).status).toBe(200);
    expectProblem(await submit(t), 403, "join_token_used");
    const e = await newToken("spiffe://example.org/node/exp", 60);
    now = new Date(now.getTime() + 61_000);
    try {
      expectProblem(await submit(e), 403, "join_token_expired");
    } finally {
      now = new Date();
    }
    for (const code of ["join_token_invalid", "join_token_used", "join_token_expired", "invalid_evidence"]) {
      expect(await refusals(code)).toBeGreaterThan(0);
    }
  });

  it("refuses bad admin input with problem+json", async () => {
    const bad = await adminRequest(server.adminSocket, "POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/x/../y", ttl_seconds: 60 });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: "invalid_spiffe_id" });
    const outside = await adminRequest(server.adminSocket, "POST", "/admin/entries", { spiffe_id: "spiffe://other.org/w", parent_id: "spiffe://example.org/n", selectors: [] });
    expect(outside.body).toMatchObject({ code: "spiffe_id_outside_trust_domain" });
    const sel = await adminRequest(server.adminSocket, "POST", "/admin/entries", { spiffe_id: "spiffe://example.org/w", parent_id: "spiffe://example.org/n", selectors: ["no-colon"] });
    expect(sel.body).toMatchObject({ code: "invalid_selector" });
  });

  it("exposes metrics with attestation outcomes by attestor and reason", async () => {
    const r = await httpsRaw(api("/metrics"));
    expect(r.status).toBe(200);
    expect(r.text).toMatch(/hallmark_attestations_total\{attestor="join_token",outcome="join_token_used"\} \d+/);
    expect(r.text).toMatch(/hallmark_attestations_total\{attestor="join_token",outcome="success"\} \d+/);
  });
});
