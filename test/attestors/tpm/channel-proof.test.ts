import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPairSync, sign as softwareSign } from "node:crypto";
import { join } from "node:path";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { writeFileSync } from "node:fs";
import { createTpmEvidenceProducer } from "../../../src/attestors/tpm/producer.js";
import { tpmResidentSigner } from "../../../src/attestors/tpm/resident-key.js";
import { attest, joinTokenProducer, type SvidFiles } from "../../../src/client/attest.js";
import { adminRequest, expectOk } from "../../../src/client/http.js";
import { NodeClient } from "../../../src/client/node.js";
import { NODE_PROOF_HEADER, NODE_SVID_HEADER, nodeProofMessage } from "../../../src/pki/channel-proof.js";
import { pemBlocks } from "../../../src/pki/pem.js";
import { openSqliteStore } from "../../../src/store/sqlite/index.js";
import { startTestServer, type TestServer } from "../../helpers/server.js";
import { type Swtpm, startSwtpm } from "../../helpers/swtpm.js";
import { tempDir } from "../../helpers/tmp.js";

/**
 * Issue 9, item 1: a node whose key stays in the TPM authenticates its calls with a signature,
 * made inside the TPM (swtpm), over the TLS 1.3 exporter value of the connection. Each refusal
 * has its code, and the proof is good on its own connection only.
 */
const NODE = "spiffe://example.org/hallmark/agent/tpm/resident";
const OVERLAP_SECONDS = 30;
const work = tempDir("channel-proof");
let tpm: Swtpm;
let server: TestServer;
let bundle: string;
let offsetMs = 0;
const clock = () => new Date(Date.now() + offsetMs);
/** The resident node: its SVID and a signer with its TPM key. */
let node: { svid: SvidFiles; sign: (m: Buffer) => Promise<Buffer> };

const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));

async function attestResident(): Promise<typeof node> {
  const svid = await attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: createTpmEvidenceProducer({ tpm: tpm.tcti, pcrs: [7], keyResident: true }) });
  return { svid, sign: tpmResidentSigner(tpm.tcti, svid.keyFiles!["svid.tpmkey"]!) };
}

/** A TLS connection to the server, as a node without a client certificate opens it (or with one). */
function openTls(o: { maxVersion?: "TLSv1.2" | "TLSv1.3"; cert?: string; key?: string } = {}): Promise<TLSSocket> {
  const url = new URL(server.url);
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: url.hostname, port: Number(url.port), ca: bundle, checkServerIdentity: () => undefined, maxVersion: o.maxVersion, cert: o.cert, key: o.key });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** The proof headers for `socket`, signed by `sign` over that socket's exporter value. */
async function proofHeaders(socket: TLSSocket, chainPem: string, sign: (m: Buffer) => Promise<Buffer>): Promise<Record<string, string>> {
  const chain = pemBlocks(chainPem);
  const message = nodeProofMessage((l, label, ctx) => socket.exportKeyingMaterial(l, label, ctx), chain[0]!);
  return { [NODE_SVID_HEADER]: chain.map((c) => c.toString("base64")).join(","), [NODE_PROOF_HEADER]: (await sign(message)).toString("base64") };
}

/** GET /v1/node/entries on `socket` with `headers`, as plain HTTP/1.1 bytes (the server closes after answering). */
function nodeCall(socket: TLSSocket, headers: Record<string, string>): Promise<{ status: number; body: { code?: string } }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("error", reject);
    socket.once("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const [head, body] = [text.slice(0, text.indexOf("\r\n\r\n")), text.slice(text.indexOf("\r\n\r\n") + 4)];
      resolve({ status: Number(head.split(" ")[1]), body: JSON.parse(body) as { code?: string } });
    });
    const lines = Object.entries({ ...headers, host: "hallmark", accept: "application/json", connection: "close" }).map(([k, v]) => `${k}: ${v}`);
    socket.write(`GET /v1/node/entries HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n`);
  });
}

async function refusedProofCodes(): Promise<string[]> {
  const store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 100_000)).filter((r) => r.event === "authenticate_node" && r.outcome === "refused").map((r) => r.code ?? "");
  } finally {
    await store.close();
  }
}

beforeAll(async () => {
  tpm = await startSwtpm();
  writeFileSync(join(work.path, "root.pem"), tpm.rootCertPem + tpm.issuerCertPem);
  server = await startTestServer({
    clock,
    overrides: {
      attestors: { tpm: { ekRoots: [join(work.path, "root.pem")], idTemplate: "/hallmark/agent/tpm/resident" } },
      svid: { nodeTtl: 3600, x509Ttl: 3600, jwtTtl: 300, maxTtl: 86400, nodeRenewalOverlap: OVERLAP_SECONDS },
    },
  });
  bundle = ((await admin("GET", "/admin/bundle")) as { bundle_pem: string }).bundle_pem;
  node = await attestResident();
}, 60_000);
afterAll(async () => {
  await server?.destroy();
  await tpm?.stop();
  work.remove();
});

describe("channel-bound node proofs signed in the TPM", () => {
  it("authenticates a TPM-resident node's calls, one TPM signature per kept-alive connection", async () => {
    expect(node.svid.privateKeyPem).toBeUndefined();
    let signatures = 0;
    expect(node.svid.spiffeId).toBe(NODE);
    const client = new NodeClient(server.url, {
      trustBundlePem: bundle,
      nodeProof: { chainPem: node.svid.certChainPem, sign: (m) => (signatures++, node.sign(m)) },
    });
    try {
      const first = await client.entries();
      expect(first.full).toBe(true);
      await client.entries();
      await client.bundle();
      await client.entries();
      expect(signatures).toBe(1);
    } finally {
      client.close();
    }
  });

  it("reports a TPM that cannot sign as unavailable (retried by the agent), not as an unreachable server", async () => {
    const client = new NodeClient(server.url, {
      trustBundlePem: bundle,
      nodeProof: { chainPem: node.svid.certChainPem, sign: () => Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:1")) },
    });
    try {
      await expect(client.entries()).rejects.toMatchObject({ code: "unavailable", message: expect.stringMatching(/^the node proof could not be signed/) });
    } finally {
      client.close();
    }
  });

  it("refuses a proof made for another connection (headers replayed from connection A on connection B)", async () => {
    const a = await openTls();
    const headersA = await proofHeaders(a, node.svid.certChainPem, node.sign);
    a.destroy();
    const b = await openTls();
    const replayed = await nodeCall(b, headersA);
    expect(replayed.status).toBe(401);
    expect(replayed.body.code).toBe("node_proof_invalid");
    // The same node on connection C with C's own proof is admitted: only the binding was wrong.
    const c = await openTls();
    expect((await nodeCall(c, await proofHeaders(c, node.svid.certChainPem, node.sign))).status).toBe(200);
    expect(await refusedProofCodes()).toContain("node_proof_invalid");
  });

  it("refuses a proof signed by another key than the SVID's", async () => {
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const s = await openTls();
    const r = await nodeCall(s, await proofHeaders(s, node.svid.certChainPem, async (m) => softwareSign("sha256", m, other.privateKey)));
    expect(r).toMatchObject({ status: 401, body: { code: "node_proof_invalid" } });
  });

  it("refuses a chain that does not lead to the trust bundle", async () => {
    const s = await openTls();
    const r = await nodeCall(s, await proofHeaders(s, tpm.issuerCertPem, node.sign));
    expect(r).toMatchObject({ status: 401, body: { code: "node_proof_svid_invalid" } });
  });

  it("refuses malformed or half-sent proof headers with their codes, never a 500", async () => {
    const valid = async (s: TLSSocket) => proofHeaders(s, node.svid.certChainPem, node.sign);
    const cases: Array<[(h: Record<string, string>) => Record<string, string>, number, string]> = [
      [(h) => ({ [NODE_SVID_HEADER]: h[NODE_SVID_HEADER]! }), 401, "node_proof_invalid"],
      [(h) => ({ [NODE_PROOF_HEADER]: h[NODE_PROOF_HEADER]! }), 401, "node_proof_invalid"],
      [(h) => ({ ...h, [NODE_PROOF_HEADER]: "not base64!" }), 401, "node_proof_invalid"],
      [(h) => ({ ...h, [NODE_SVID_HEADER]: "AAAA" }), 401, "node_proof_svid_invalid"],
      [(h) => ({ ...h, [NODE_SVID_HEADER]: Array(9).fill(h[NODE_SVID_HEADER]).join(",") }), 401, "node_proof_svid_invalid"],
      [(h) => ({ ...h, [NODE_SVID_HEADER]: `${h[NODE_SVID_HEADER]},` }), 401, "node_proof_svid_invalid"],
    ];
    for (const [mangle, status, code] of cases) {
      const s = await openTls();
      expect(await nodeCall(s, mangle(await valid(s)))).toMatchObject({ status, body: { code } });
    }
  });

  it("refuses proof headers on TLS 1.2, even with a correct signature over its exporter value", async () => {
    const s = await openTls({ maxVersion: "TLSv1.2" });
    expect(s.getProtocol()).toBe("TLSv1.2");
    const r = await nodeCall(s, await proofHeaders(s, node.svid.certChainPem, node.sign));
    expect(r).toMatchObject({ status: 401, body: { code: "node_proof_requires_tls13" } });
    expect(await refusedProofCodes()).toContain("node_proof_requires_tls13");
  });

  it("refuses a request with both a client certificate and proof headers", async () => {
    const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: "spiffe://example.org/node/software", ttl_seconds: 600 })) as { token: string };
    const software = await attest({ server: server.url, tls: { trustBundlePem: bundle }, producer: joinTokenProducer(token) });
    const s = await openTls({ cert: software.certChainPem, key: software.privateKeyPem });
    const r = await nodeCall(s, await proofHeaders(s, node.svid.certChainPem, node.sign));
    expect(r).toMatchObject({ status: 400, body: { code: "node_proof_conflict" } });
  });

  it("refuses an expired SVID with a valid proof as node_svid_expired, as mutual TLS does", async () => {
    offsetMs = 3601 * 1000;
    try {
      const s = await openTls();
      const r = await nodeCall(s, await proofHeaders(s, node.svid.certChainPem, node.sign));
      expect(r).toMatchObject({ status: 401, body: { code: "node_svid_expired" } });
    } finally {
      offsetMs = 0;
    }
  });

  it("refuses a superseded SVID with a valid proof as node_svid_superseded, after the renewal overlap", async () => {
    const old = node;
    node = await attestResident();
    const fresh = await openTls();
    expect((await nodeCall(fresh, await proofHeaders(fresh, node.svid.certChainPem, node.sign))).status).toBe(200);
    offsetMs = (OVERLAP_SECONDS + 5) * 1000;
    try {
      const s = await openTls();
      const r = await nodeCall(s, await proofHeaders(s, old.svid.certChainPem, old.sign));
      expect(r).toMatchObject({ status: 401, body: { code: "node_svid_superseded" } });
    } finally {
      offsetMs = 0;
    }
    expect(await refusedProofCodes()).toContain("node_svid_superseded");
  });
});
