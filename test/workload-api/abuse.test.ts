import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, statSync } from "node:fs";
import { connect as http2Connect, constants as h2 } from "node:http2";
import { connect } from "node:net";
import { join } from "node:path";
import { createRequire } from "node:module";
import { credentials, loadPackageDefinition, Metadata, status, type Client, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isHallmarkError } from "../../src/errors.js";
import { AUDIT_EVENTS } from "../../src/service/audit-events.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import { DEFAULT_WORKLOAD_API_LIMITS, startWorkloadApi, WORKLOAD_PROTO_OPTIONS, workloadProtoPath } from "../../src/workload-api/server.js";
import { unixWorkloadAttestor } from "../../src/workload-api/unix-attestor.js";
import { NOBODY } from "../helpers/as-user.js";
import { hasPythonGrpc, NO_PYTHON_GRPC, pythonFetchX509As, pythonWorkloadCallAs } from "../helpers/python-workload-client.js";
import { tempDir } from "../helpers/tmp.js";
import { startWorkloadBackend, TD, type WorkloadBackend } from "../helpers/workload-identities.js";

/**
 * Workloads that misbehave, against the real Workload API server on its real socket (real SVIDs
 * from a real server, see test/helpers/workload-identities.ts), with the default limits: too many
 * streams, disconnects mid-stream, oversized requests, a socket path already held, plus server
 * reflection and the uniqueness of hints that SPIFFE_Workload_API.md §5.2.1 requires.
 */
const ROOT_ID = `${TD}/workload/root`;
const NOBODY_ID = `${TD}/workload/nobody`;
const LIMITS = DEFAULT_WORKLOAD_API_LIMITS;
const dir = tempDir("workload-abuse");
const socketPath = join(dir.path, "run", "agent.sock");
let backend: WorkloadBackend;
let api: Awaited<ReturnType<typeof startWorkloadApi>>;
type AnyClient = Client & Record<string, (...args: unknown[]) => unknown>;
const clients: AnyClient[] = [];

beforeAll(async () => {
  chmodSync(dir.path, 0o755); // uid nobody reaches the socket and the python client's files
  backend = await startWorkloadBackend();
  await backend.addEntry(ROOT_ID, ["unix:uid:0"]);
  await backend.addEntry(NOBODY_ID, [`unix:uid:${NOBODY.uid}`]);
  api = await startWorkloadApi({ socketPath, identities: backend.identities, attestor: unixWorkloadAttestor(), limits: { updateJitterMs: 50 } });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await api?.close();
  await backend?.close();
  dir.remove();
});

/**
 * A new grpc-js client of the Workload API on a connection of its own: grpc-js otherwise shares
 * one connection among all clients of the same address.
 */
function newClient(path = socketPath): AnyClient {
  const pkg = loadPackageDefinition(loadSync(workloadProtoPath(), WORKLOAD_PROTO_OPTIONS));
  const Ctor = pkg.SpiffeWorkloadAPI as ServiceClientConstructor;
  const c = new Ctor(`unix://${path}`, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }) as AnyClient;
  clients.push(c);
  return c;
}

function withHeader(): Metadata {
  const m = new Metadata();
  m.set("workload.spiffe.io", "true");
  return m;
}

type X509Message = { svids: { spiffe_id: string; hint: string }[] };

/** A FetchX509SVID stream: its first message or the status it ended with, whichever comes first. */
function openX509(c: AnyClient) {
  const call = c.FetchX509SVID!({}, withHeader()) as NodeJS.EventEmitter & { cancel(): void };
  const outcome = new Promise<{ message?: X509Message; code?: number }>((done) => {
    call.once("data", (message: X509Message) => done({ message }));
    call.on("error", (e: { code: number }) => done({ code: e.code }));
  });
  return { call, outcome };
}

function unary<T>(c: AnyClient, method: string, request: object): Promise<T> {
  return new Promise((done, fail) => c[method]!(request, withHeader(), (e: Error | null, r: T) => (e ? fail(e) : done(r))));
}

/**
 * A FetchX509SVID request over a raw HTTP/2 connection that then vanishes: the socket is
 * destroyed (no RST_STREAM, no GOAWAY) either as soon as the request is written or once the
 * first message arrives, as a crashing workload would.
 */
function rawStreamThenVanish(when: "at-once" | "after-first-message"): Promise<void> {
  return new Promise<void>((done) => {
    const socket = connect(socketPath);
    const session = http2Connect("http://localhost", { createConnection: () => socket });
    session.on("error", () => undefined);
    const req = session.request({
      [h2.HTTP2_HEADER_METHOD]: "POST",
      [h2.HTTP2_HEADER_PATH]: "/SpiffeWorkloadAPI/FetchX509SVID",
      "content-type": "application/grpc",
      te: "trailers",
      "workload.spiffe.io": "true",
    });
    req.on("error", () => undefined);
    const vanish = () => {
      socket.destroy();
      done();
    };
    // An empty X509SVIDRequest: uncompressed, zero length.
    req.end(Buffer.alloc(5));
    if (when === "at-once") setImmediate(vanish);
    else req.once("data", vanish);
    req.once("close", () => done());
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** JWT-SVIDs the backend's server has issued: the issue_jwt records of its audit log (committed before each answer). */
async function jwtIssuances(): Promise<number> {
  const store = await openSqliteStore(join(backend.server.dataDir, "hallmark.db"));
  try {
    return (await store.audit.list(0, 1_000_000)).filter((r) => r.event === AUDIT_EVENTS.issueJwt && r.outcome === "success").length;
  } finally {
    await store.close();
  }
}

describe("Workload API under abuse (default limits)", () => {
  it(`more than ${LIMITS.maxStreamsPerUid} streams from one uid: the extra ones get RESOURCE_EXHAUSTED, another uid is still served`, async () => {
    // Over two connections: grpc-js also caps streams per connection at the same number, which a
    // client would only queue behind; the per-uid limit is what must refuse them.
    const a = newClient();
    const b = newClient();
    const extra = 6;
    const streams = Array.from({ length: LIMITS.maxStreamsPerUid + extra }, (_, i) => openX509(i % 2 ? a : b));
    const outcomes = await Promise.all(streams.map((s) => s.outcome));
    const served = outcomes.filter((o) => o.message?.svids[0]?.spiffe_id === ROOT_ID).length;
    const refused = outcomes.filter((o) => o.code === status.RESOURCE_EXHAUSTED).length;
    expect({ served, refused }).toEqual({ served: LIMITS.maxStreamsPerUid, refused: extra });

    if (!hasPythonGrpc) {
      console.warn(`skipping the other-uid half: ${NO_PYTHON_GRPC}`);
    } else {
      const py = join(dir.path, "python");
      mkdirSync(py, { mode: 0o755, recursive: true });
      const nobody = await pythonFetchX509As(NOBODY, socketPath, py);
      expect(nobody.stdout.trim(), nobody.stderr).toBe(NOBODY_ID);
    }
    for (const s of streams) s.call.cancel();
  });

  it("a uid that asks for more new JWT-SVIDs than jwtFetchRate allows gets RESOURCE_EXHAUSTED before the server is asked; another uid is served", async () => {
    // A second Workload API over the same backend, whose identities hold no JWT-SVID (each call is
    // a fetch from the server), with an allowance of 3 that does not refill within the test.
    const limitedPath = join(dir.path, "run", "limited.sock");
    const limited = await startWorkloadApi({ socketPath: limitedPath, identities: backend.identities, attestor: unixWorkloadAttestor(), limits: { jwtFetchRate: { perSecond: 0.001, burst: 3 } } });
    try {
      const c = newClient(limitedPath);
      const before = await jwtIssuances();
      for (let i = 0; i < 3; i++) {
        const r = await unary<{ svids: { spiffe_id: string }[] }>(c, "FetchJWTSVID", { audience: [`fresh-${i}`] });
        expect(r.svids.map((s) => s.spiffe_id)).toEqual([ROOT_ID]);
      }
      const refused = await unary(c, "FetchJWTSVID", { audience: ["one-too-many"] }).catch((e: { code: number; details: string }) => e);
      expect(refused).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
      expect((refused as { details: string }).details).toMatch(/^workload_too_many_fetches: /);
      expect(await jwtIssuances()).toBe(before + 3);

      if (!hasPythonGrpc) {
        console.warn(`skipping the other-uid half: ${NO_PYTHON_GRPC}`);
      } else {
        const py = join(dir.path, "python");
        mkdirSync(py, { mode: 0o755, recursive: true });
        const call = pythonWorkloadCallAs(NOBODY, limitedPath, py, "jwtsvid", ["nobody-aud"]);
        expect(await call.line(1)).toEqual({ svids: [NOBODY_ID] });
        await call.done;
      }
    } finally {
      await limited.close();
    }
  });

  it("200 streams abandoned by vanishing clients leak no slot: afterwards the uid holds its full quota again", async () => {
    for (let i = 0; i < 200; i++) await rawStreamThenVanish(i % 2 ? "at-once" : "after-first-message");
    // The server learns of each hang-up asynchronously; the full quota must come back.
    const c = newClient();
    let served = 0;
    for (let attempt = 0; attempt < 50 && served < LIMITS.maxStreamsPerUid; attempt++) {
      const streams = Array.from({ length: LIMITS.maxStreamsPerUid }, () => openX509(c));
      const outcomes = await Promise.all(streams.map((s) => s.outcome));
      served = outcomes.filter((o) => o.message).length;
      for (const s of streams) s.call.cancel();
      if (served < LIMITS.maxStreamsPerUid) await sleep(100);
    }
    expect(served).toBe(LIMITS.maxStreamsPerUid);
    // And not one more: the limit still holds after all that churn.
    const d = newClient();
    const full = Array.from({ length: LIMITS.maxStreamsPerUid }, (_, i) => openX509(i % 2 ? c : d));
    await Promise.all(full.map((s) => s.outcome));
    const over = openX509(newClient());
    expect((await over.outcome).code).toBe(status.RESOURCE_EXHAUSTED);
    for (const s of [...full, over]) s.call.cancel();
  });

  it("a flood of streams reset right after their first message gets its connection cut; other connections are served", async () => {
    // nghttp2's rapid-reset protection (CVE-2023-44487) in Node's HTTP/2: past a burst of resets
    // the server sends GOAWAY. Without it, a workload could make the agent build answers forever.
    const flooder = newClient();
    let cutAfter: number | undefined;
    for (let i = 0; i < 3000 && cutAfter === undefined; i++) {
      const s = openX509(flooder);
      const o = await s.outcome;
      s.call.cancel();
      if (o.code !== undefined) cutAfter = i;
    }
    expect(cutAfter).toBeDefined();
    const s = openX509(newClient());
    expect((await s.outcome).message?.svids[0]?.spiffe_id).toBe(ROOT_ID);
    s.call.cancel();
  });

  it("a request bigger than maxRequestBytes is refused with RESOURCE_EXHAUSTED, and the server keeps answering", async () => {
    const c = newClient();
    const huge = { audience: ["x".repeat(LIMITS.maxRequestBytes + 1024)] };
    await expect(unary(c, "FetchJWTSVID", huge)).rejects.toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    const after = await unary<{ svids: { spiffe_id: string }[] }>(c, "FetchJWTSVID", { audience: ["after-huge"] });
    expect(after.svids.map((s) => s.spiffe_id)).toEqual([ROOT_ID]);
  });

  it("server reflection (grpc.reflection.v1) lists SpiffeWorkloadAPI under its package-less name and describes it", async () => {
    const require = createRequire(import.meta.url);
    const proto = join(require.resolve("@grpc/reflection/package.json"), "..", "build", "proto", "grpc", "reflection", "v1", "reflection.proto");
    const pkg = loadPackageDefinition(loadSync(proto, { keepCase: true, defaults: true, oneofs: true })) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: ServiceClientConstructor } } };
    };
    const c = new pkg.grpc.reflection.v1.ServerReflection(`unix://${socketPath}`, credentials.createInsecure()) as AnyClient;
    clients.push(c);
    const call = c.ServerReflectionInfo!() as NodeJS.EventEmitter & { write(m: object): void; end(): void };
    type Answer = { list_services_response?: { service: { name: string }[] }; file_descriptor_response?: { file_descriptor_proto: Buffer[] } };
    const answer = () =>
      new Promise<Answer>((done, fail) => {
        call.once("data", done);
        call.once("error", fail);
      });
    const listed = answer();
    call.write({ list_services: "" });
    const names = (await listed).list_services_response?.service.map((s) => s.name);
    expect(names).toContain("SpiffeWorkloadAPI");
    // What grpcurl's `describe SpiffeWorkloadAPI` asks next: the file that declares it.
    const described = answer();
    call.write({ file_containing_symbol: "SpiffeWorkloadAPI" });
    const files = (await described).file_descriptor_response?.file_descriptor_proto ?? [];
    call.end();
    expect(files.some((f) => f.includes("FetchX509SVID"))).toBe(true);
  });

  it("§5.2.1 hints are unique in a response: a later SVID with a hint already sent is left out (X.509 and JWT)", async () => {
    const first = `${TD}/workload/db-primary`;
    const second = `${TD}/workload/db-replica`;
    const other = `${TD}/workload/cache`;
    await backend.addEntry(first, ["unix:uid:0"], { hint: "db" });
    await backend.addEntry(second, ["unix:uid:0"], { hint: "db" });
    await backend.addEntry(other, ["unix:uid:0"], { hint: "cache" });
    try {
      const s = openX509(newClient());
      const { message } = await s.outcome;
      s.call.cancel();
      expect(message?.svids.map((v) => [v.spiffe_id, v.hint])).toEqual([
        [ROOT_ID, ""],
        [first, "db"],
        [other, "cache"],
      ]);
      const jwt = await unary<{ svids: { spiffe_id: string; hint: string }[] }>(newClient(), "FetchJWTSVID", { audience: ["hints"] });
      expect(jwt.svids.map((v) => [v.spiffe_id, v.hint])).toEqual([
        [ROOT_ID, ""],
        [first, "db"],
        [other, "cache"],
      ]);
    } finally {
      for (const id of [first, second, other]) backend.identities.entries.delete(id);
    }
  });
});

describe("the socket path", () => {
  it("held by another live process: workload_socket_in_use; left stale by a killed one: replaced and served", async () => {
    const path = join(dir.path, "held", "agent.sock");
    mkdirSync(join(dir.path, "held"));
    const holder: ChildProcess = spawn(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => console.log("listening"))`], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((done) => holder.stdout!.once("data", () => done()));
    const options = { socketPath: path, identities: backend.identities, attestor: unixWorkloadAttestor() };
    const refused = await startWorkloadApi(options).then(
      (second) => second.close().then(() => "started"),
      (e: unknown) => (isHallmarkError(e) ? e.code : String(e)),
    );
    expect(refused).toBe("workload_socket_in_use");

    const killed = new Promise((r) => holder.once("exit", r));
    holder.kill("SIGKILL");
    await killed;
    expect(statSync(path).isSocket()).toBe(true); // stale: nobody listens
    const replaced = await startWorkloadApi(options);
    try {
      const r = await unary<{ svids: { spiffe_id: string }[] }>(newClient(path), "FetchJWTSVID", { audience: ["replaced"] });
      expect(r.svids.map((s) => s.spiffe_id)).toEqual([ROOT_ID]);
    } finally {
      await replaced.close();
    }
    expect(existsSync(path)).toBe(false);
  });
});
