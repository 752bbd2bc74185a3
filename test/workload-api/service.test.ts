import { createPrivateKey, X509Certificate } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { credentials, loadPackageDefinition, Metadata, status, type Client, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { CompactSign, compactVerify, createLocalJWKSet, importJWK, type JWK, jwtVerify, type JWTHeaderParameters, type JSONWebKeySet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorkloadApi, workloadProtoPath } from "../../src/workload-api/server.js";
import { unixWorkloadAttestor } from "../../src/workload-api/unix-attestor.js";
import { NOBODY } from "../helpers/as-user.js";
import { run, runCli } from "../helpers/cli.js";
import { hasPythonGrpc, NO_PYTHON_GRPC, pythonFetchX509As } from "../helpers/python-workload-client.js";
import { tempDir } from "../helpers/tmp.js";
import { startWorkloadBackend, TD, type TestIdentities, type WorkloadBackend } from "../helpers/workload-identities.js";

/**
 * The Workload API over its real socket, serving REAL SVIDs: a real Hallmark server admits a node
 * with a join token; entries for unix:uid:0 and unix:uid:65534 are fetched by that node, and an
 * in-test WorkloadIdentities (the agent's cache stands in) serves them, and WIT-SVIDs the node
 * asked the server for with a key pair made here, as the agent does. Clients: @grpc/grpc-js
 * loaded from the proto (root, in this process) and Debian's python3-grpcio (as uid 65534).
 */
const ROOT_ID = `${TD}/workload/root`;
const NOBODY_ID = `${TD}/workload/nobody`;
const dir = tempDir("workload-api");
const socketPath = join(dir.path, "run", "agent.sock");
let backend: WorkloadBackend;
let api: Awaited<ReturnType<typeof startWorkloadApi>>;
let identities: TestIdentities;
let client: Client & Record<string, (...args: unknown[]) => unknown>;

function withHeader(): Metadata {
  const m = new Metadata();
  m.set("workload.spiffe.io", "true");
  return m;
}

function unary<T>(method: string, request: object, metadata = withHeader()): Promise<T> {
  return new Promise((done, fail) => client[method]!(request, metadata, (e: Error | null, r: T) => (e ? fail(e) : done(r))));
}

beforeAll(async () => {
  backend = await startWorkloadBackend();
  identities = backend.identities;
  await backend.addEntry(ROOT_ID, ["unix:uid:0"]);
  await backend.addEntry(NOBODY_ID, ["unix:uid:65534"]);

  chmodSync(dir.path, 0o755);
  api = await startWorkloadApi({ socketPath, identities, attestor: unixWorkloadAttestor(), limits: { updateJitterMs: 50 } });
  const pkg = loadPackageDefinition(loadSync(workloadProtoPath(), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }));
  const Ctor = pkg.SpiffeWorkloadAPI as ServiceClientConstructor;
  client = new Ctor(`unix://${socketPath}`, credentials.createInsecure()) as typeof client;
});

afterAll(async () => {
  client?.close();
  await api?.close();
  await backend?.close();
  dir.remove();
});

describe("SpiffeWorkloadAPI on the socket, with real SVIDs", () => {
  it("the socket file is 0777 in a 0755 directory it created", async () => {
    const { statSync } = await import("node:fs");
    expect(statSync(socketPath).mode & 0o777).toBe(0o777);
    expect(statSync(join(dir.path, "run")).mode & 0o777).toBe(0o755);
  });

  it("a call without the workload.spiffe.io metadata: INVALID_ARGUMENT", async () => {
    await expect(unary("FetchJWTSVID", { audience: ["a"] }, new Metadata())).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });

  it("a JWT request with no audience: INVALID_ARGUMENT", async () => {
    await expect(unary("FetchJWTSVID", { audience: [] })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });

  it("FetchJWTSVID for root; ValidateJWTSVID accepts it and refuses it with a flipped bit (INVALID_ARGUMENT)", async () => {
    const r = await unary<{ svids: { spiffe_id: string; svid: string }[] }>("FetchJWTSVID", { audience: ["billing"] });
    expect(r.svids.map((s) => s.spiffe_id)).toEqual([ROOT_ID]);
    const token = r.svids[0]!.svid;
    const ok = await unary<{ spiffe_id: string; claims: { fields: Record<string, { stringValue?: string }> } }>("ValidateJWTSVID", { audience: "billing", svid: token });
    expect(ok.spiffe_id).toBe(ROOT_ID);
    expect(ok.claims.fields.sub?.stringValue).toBe(ROOT_ID);
    const sig = token.lastIndexOf(".") + 5;
    const flipped = token.slice(0, sig) + (token[sig] === "A" ? "B" : "A") + token.slice(sig + 1);
    await expect(unary("ValidateJWTSVID", { audience: "billing", svid: flipped })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    await expect(unary("ValidateJWTSVID", { audience: "other", svid: token })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });

  it("FetchX509SVID: the first message at once, another after a change, each with the full state; openssl verifies the SVID", async () => {
    const call = client.FetchX509SVID!({}, withHeader()) as NodeJS.EventEmitter & { cancel(): void };
    call.on("error", () => undefined); // the CANCELLED our own cancel() ends it with
    const messages: { svids: { spiffe_id: string; x509_svid: Buffer; bundle: Buffer }[] }[] = [];
    const next = () => new Promise<void>((done) => call.once("data", (m: (typeof messages)[number]) => (messages.push(m), done())));
    await next();
    const second = next();
    identities.changed();
    await second;
    call.cancel();
    expect(messages).toHaveLength(2);
    for (const m of messages) expect(m.svids.map((s) => s.spiffe_id)).toEqual([ROOT_ID]);
    const svid = messages[1]!.svids[0]!;
    const leaf = new X509Certificate(svid.x509_svid);
    expect(leaf.subjectAltName).toContain(`URI:${ROOT_ID}`);
    const pems = join(dir.path, "root-check");
    mkdirSync(pems);
    writeFileSync(join(pems, "leaf.pem"), leaf.toString());
    writeFileSync(join(pems, "ca.pem"), new X509Certificate(svid.bundle).toString());
    const v = await run("openssl", ["verify", "-CAfile", join(pems, "ca.pem"), join(pems, "leaf.pem")]);
    expect(v.stdout).toContain(": OK");
  });

  it("FetchJWTBundles: the JWKS of the trust domain; an independent JOSE library verifies a JWT-SVID with it", async () => {
    const call = client.FetchJWTBundles!({}, withHeader()) as NodeJS.EventEmitter & { cancel(): void };
    call.on("error", () => undefined);
    const m = await new Promise<{ bundles: Record<string, Buffer> }>((done) => call.once("data", done));
    call.cancel();
    const jwks = JSON.parse(m.bundles[TD]!.toString()) as JSONWebKeySet;
    const r = await unary<{ svids: { svid: string }[] }>("FetchJWTSVID", { audience: ["x"] });
    const { payload } = await jwtVerify(r.svids[0]!.svid, createLocalJWKSet(jwks), { audience: "x" });
    expect(payload.sub).toBe(ROOT_ID);
  });

  type WitMessage = { svids: { spiffe_id: string; wit_svid: string; wit_svid_key: string; hint: string }[] };
  const openStream = (method: string, request: object, metadata = withHeader()) => {
    const call = client[method]!(request, metadata) as NodeJS.EventEmitter & { cancel(): void };
    const ended = new Promise<{ code: number }>((done) => call.on("error", done));
    return { call, ended, next: <T>() => new Promise<T>((done) => call.once("data", done)) };
  };

  /** WIT-SVID §6.2 as a verifier does it: the key of the bundle (from FetchWITBundles) that the header's kid names. */
  async function verifyWithWitBundle(token: string) {
    const s = openStream("FetchWITBundles", {});
    const m = await s.next<{ bundles: Record<string, string> }>();
    s.call.cancel();
    expect(Object.keys(m.bundles)).toEqual([TD]);
    const jwks = JSON.parse(m.bundles[TD]!) as { keys: JWK[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const k of jwks.keys) expect(k).toMatchObject({ use: "wit-svid", kid: expect.any(String) });
    return jwtVerify(token, async (h: JWTHeaderParameters) => importJWK(jwks.keys.find((k) => k.kid === h.kid)!, h.alg), { typ: "wit+jwt" });
  }

  it("FetchWITSVID: the first message at once, another after a change, each with the full state; jose verifies the WIT against FetchWITBundles", async () => {
    const s = openStream("FetchWITSVID", {});
    const first = await s.next<WitMessage>();
    const second = s.next<WitMessage>();
    identities.changed();
    const again = await second;
    s.call.cancel();
    for (const m of [first, again]) expect(m.svids.map((w) => w.spiffe_id)).toEqual([ROOT_ID]);
    const wit = again.svids[0]!;
    const { payload, protectedHeader } = await verifyWithWitBundle(wit.wit_svid);
    expect(protectedHeader.typ).toBe("wit+jwt");
    expect(payload.sub).toBe(ROOT_ID);
    // wit_svid_key is the private JWK whose public half is cnf.jwk: a proof of possession made with it verifies under cnf.jwk.
    const privateJwk = JSON.parse(wit.wit_svid_key) as JWK;
    expect(privateJwk.d).toBeTruthy();
    const { d: _d, ...publicPart } = privateJwk;
    expect((payload.cnf as { jwk: JWK }).jwk).toEqual(publicPart);
    const proof = await new CompactSign(Buffer.from("proof")).setProtectedHeader({ alg: "ES256" }).sign(await importJWK(privateJwk, "ES256"));
    const checked = await compactVerify(proof, await importJWK((payload.cnf as { jwk: JWK }).jwk, "ES256"));
    expect(Buffer.from(checked.payload).toString()).toBe("proof");
    // A flipped bit in the WIT's signature fails.
    const sig = wit.wit_svid.lastIndexOf(".") + 5;
    const flipped = wit.wit_svid.slice(0, sig) + (wit.wit_svid[sig] === "A" ? "B" : "A") + wit.wit_svid.slice(sig + 1);
    await expect(verifyWithWitBundle(flipped)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
  });

  it("FetchWITSVID names one identity: its own is served; another's is PERMISSION_DENIED; a malformed one and a missing header INVALID_ARGUMENT", async () => {
    const own = openStream("FetchWITSVID", { spiffe_id: ROOT_ID });
    expect((await own.next<WitMessage>()).svids.map((w) => w.spiffe_id)).toEqual([ROOT_ID]);
    own.call.cancel();
    expect(await openStream("FetchWITSVID", { spiffe_id: NOBODY_ID }).ended).toMatchObject({ code: status.PERMISSION_DENIED });
    expect(await openStream("FetchWITSVID", { spiffe_id: "not a spiffe id" }).ended).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect(await openStream("FetchWITSVID", {}, new Metadata()).ended).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect(await openStream("FetchWITBundles", {}, new Metadata()).ended).toMatchObject({ code: status.INVALID_ARGUMENT });
  });

  it("garbage bytes on the socket do not crash the server; it answers the next call", async () => {
    await new Promise<void>((done) => {
      const s = connect(socketPath, () => s.end(Buffer.from("GET / HTTP/1.1\r\n\r\n\x00\xff garbage".repeat(100))));
      s.resume(); // read (and drop) the GOAWAY, so the server's hang-up is seen
      s.on("close", () => done());
      s.on("error", () => done());
    });
    const r = await unary<{ svids: unknown[] }>("FetchJWTSVID", { audience: ["after-garbage"] });
    expect(r.svids).toHaveLength(1);
  });
});


describe("Debian's python3-grpcio as an independent client, run as other uids", () => {
  if (!hasPythonGrpc) console.warn(`skipped: ${NO_PYTHON_GRPC}`);
  const pythonAs = (uid: number) => pythonFetchX509As({ uid, gid: uid }, socketPath, dir.path);

  it.skipIf(!hasPythonGrpc)("as nobody: FetchX509SVID gives the nobody SVID, and openssl verifies its DER against the DER bundle", async () => {
    const { stdout, stderr, out } = await pythonAs(NOBODY.uid);
    expect(stdout.trim(), stderr).toBe(NOBODY_ID);
    const conv = async (name: string) => {
      await run("openssl", ["x509", "-inform", "DER", "-in", join(out, `${name}.der`), "-out", join(out, `${name}.pem`)]);
      return join(out, `${name}.pem`);
    };
    const v = await run("openssl", ["verify", "-CAfile", await conv("bundle"), await conv("svid")]);
    expect(v.stdout).toContain(": OK");
  });

  it.skipIf(!hasPythonGrpc)("as a uid with no entry (4242): PERMISSION_DENIED", async () => {
    const { stdout, stderr } = await pythonAs(4242);
    expect(stdout.trim(), stderr).toBe("PERMISSION_DENIED");
  });
});

describe("hallmark workload: the Workload API's own client (the built CLI, as root: the uid-0 entry)", () => {
  it("fetch x509 writes the SVID, its key and the bundle, which openssl verifies", async () => {
    const out = join(dir.path, "cli-x509");
    const r = await runCli(["workload", "fetch", "x509", "--socket", socketPath, "--out", out]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(ROOT_ID);
    const v = await run("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "svid.pem"), join(out, "svid.pem")]);
    expect(v.stdout).toContain(": OK");
    const leaf = new X509Certificate(readFileSync(join(out, "svid.pem")));
    expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(join(out, "svid.key"))))).toBe(true);
  });

  it("fetch jwt, then validate-jwt TOKEN; a missing audience is a usage error", async () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${socketPath}` };
    const jwt = await runCli(["workload", "fetch", "jwt", "--audience", "billing"], env);
    expect(jwt.code, jwt.stderr).toBe(0);
    const token = jwt.stdout.trim();
    const ok = await runCli(["workload", "validate-jwt", "--audience", "billing", token], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(ROOT_ID);
    const wrong = await runCli(["workload", "validate-jwt", "--audience", "payroll", token], env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^hallmark: workload_api_refused: INVALID_ARGUMENT: /);
    const usage = await runCli(["workload", "fetch", "jwt"], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim()).toBe("hallmark: --audience is required for jwt");
  });

  it("bundles names the trust domain; no agent at the socket is one line, exit 1", async () => {
    const b = await runCli(["workload", "fetch", "bundles", "--socket", socketPath, "--json"]);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout)).toHaveProperty([TD, "x509_authorities"], 1);
    const none = await runCli(["workload", "fetch", "x509", "--socket", join(dir.path, "no-agent.sock")]);
    expect(none.code).toBe(1);
    expect(none.stderr.trim().split("\n")).toHaveLength(1);
    expect(none.stderr).toMatch(/^hallmark: unavailable: cannot reach the Workload API/);
  });
});
