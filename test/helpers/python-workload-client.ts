import { type ChildProcess, execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { workloadProtoPath } from "../../src/workload-api/server.js";
import { finished, spawnAs, type UnixUser } from "./as-user.js";

/** Debian's python3-grpcio and python3-grpc-tools: a Workload API client that is not our code. */
export const hasPythonGrpc = existsSync("/usr/lib/python3/dist-packages/grpc") && existsSync("/usr/lib/python3/dist-packages/grpc_tools");
export const NO_PYTHON_GRPC = "python3-grpcio/python3-grpc-tools are not installed (scripts/install-deps.sh installs them)";

const PYTHON_CLIENT = `
import sys, grpc
sys.path.insert(0, sys.argv[1])
import workload_pb2, workload_pb2_grpc
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix:" + sys.argv[2]))
try:
    for m in stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),), timeout=10):
        open(sys.argv[3] + "/svid.der", "wb").write(m.svids[0].x509_svid)
        open(sys.argv[3] + "/bundle.der", "wb").write(m.svids[0].bundle)
        print(m.svids[0].spiffe_id)
        break
except grpc.RpcError as e:
    print(e.code().name)
`;

/** Workload API calls through python3-grpcio: each message or refusal one JSON line, flushed at once (a test reads a stream while it is open). */
const PYTHON_CALLS = `
import sys, json, base64, grpc
sys.path.insert(0, sys.argv[1])
import workload_pb2, workload_pb2_grpc
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix:" + sys.argv[2]))
md = (("workload.spiffe.io", "true"),)
op, args = sys.argv[3], sys.argv[4:]
def out(o): print(json.dumps(o), flush=True)
def b64(b): return base64.b64encode(b).decode()
try:
    if op == "x509svid":
        for m in stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=md, timeout=20):
            out({"svids": [s.spiffe_id for s in m.svids], "federated_bundles": {k: b64(v) for k, v in m.federated_bundles.items()}})
            break
    elif op == "x509bundles":
        for i, m in enumerate(stub.FetchX509Bundles(workload_pb2.X509BundlesRequest(), metadata=md, timeout=25)):
            out({"bundles": {k: b64(v) for k, v in m.bundles.items()}})
            if i + 1 >= int(args[0]): break
    elif op == "jwtbundles":
        for m in stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=md, timeout=20):
            out({"bundles": {k: json.loads(v) for k, v in m.bundles.items()}})
            break
    elif op == "jwtsvid":
        r = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=args), metadata=md, timeout=20)
        out({"svids": [s.spiffe_id for s in r.svids]})
    elif op == "validate":
        r = stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience=args[0], svid=args[1]), metadata=md, timeout=20)
        out({"spiffe_id": r.spiffe_id})
except grpc.RpcError as e:
    out({"error": e.code().name, "details": e.details()})
`;

/** The Python stubs of workload.proto, compiled once into `workDir/pygen` (reachable by other users: 0755). */
function compiledProto(workDir: string): string {
  const gen = join(workDir, "pygen");
  if (!existsSync(gen)) {
    mkdirSync(gen, { recursive: true, mode: 0o755 });
    execFileSync("/usr/bin/python3", ["-m", "grpc_tools.protoc", `-I${join(workloadProtoPath(), "..")}`, `--python_out=${gen}`, `--grpc_python_out=${gen}`, workloadProtoPath()]);
    chmodSync(gen, 0o755);
  }
  return gen;
}

/** One JSON line per message (or `{ error, details }` for a gRPC refusal) of a python3-grpcio client run as `user`. */
export interface PythonWorkloadCall {
  child: ChildProcess;
  /** Resolves with the n-th line (1-based) once it is printed; rejects when the client exits before. */
  line(n: number): Promise<Record<string, unknown>>;
  done: Promise<{ code: number | null; stderr: string }>;
}

/**
 * A Workload API call through python3-grpcio, run as `user` (setpriv): `x509svid` (the first
 * message: SPIFFE IDs and federated_bundles, base64 DER), `x509bundles <n>` (the first n messages:
 * bundles, base64 DER), `jwtbundles` (the first message: JWKS by trust domain), `jwtsvid <audience>…`
 * (FetchJWTSVID: the SPIFFE IDs answered), `validate <audience> <token>`.
 */
export function pythonWorkloadCallAs(user: UnixUser, socketPath: string, workDir: string, op: string, args: string[] = []): PythonWorkloadCall {
  const child = spawnAs(user, "/usr/bin/python3", ["-c", PYTHON_CALLS, compiledProto(workDir), socketPath, op, ...args]);
  const lines: Array<Record<string, unknown>> = [];
  const waiting: Array<() => void> = [];
  let buffered = "";
  child.stdout!.on("data", (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
      buffered = buffered.slice(nl + 1);
    }
    for (const w of waiting.splice(0)) w();
  });
  const done = finished(child).then((r) => ({ code: r.code, stderr: r.stderr }));
  const line = (n: number) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        if (lines.length >= n) resolve(lines[n - 1]!);
        else waiting.push(check);
      };
      check();
      void done.then((r) => (lines.length >= n ? resolve(lines[n - 1]!) : reject(new Error(`the python client exited (${r.code}) after ${lines.length} lines: ${r.stderr}`))));
    });
  return { child, line, done };
}

/**
 * FetchX509SVID's first message through python3-grpcio, run as `user` (setpriv): prints the first
 * SVID's SPIFFE ID (its DER chain and bundle land in `out`) or the gRPC status name. The proto is
 * compiled once into `workDir`, which must be reachable by `user` (0755 all the way down).
 */
export async function pythonFetchX509As(user: UnixUser, socketPath: string, workDir: string): Promise<{ stdout: string; stderr: string; out: string }> {
  const out = join(workDir, `py-${user.uid}-${Date.now()}`);
  mkdirSync(out, { recursive: true, mode: 0o777 });
  chmodSync(out, 0o777);
  const r = await finished(spawnAs(user, "/usr/bin/python3", ["-c", PYTHON_CLIENT, compiledProto(workDir), socketPath, out]));
  return { stdout: r.stdout, stderr: r.stderr, out };
}
