import { execFileSync } from "node:child_process";
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

/**
 * FetchX509SVID's first message through python3-grpcio, run as `user` (setpriv): prints the first
 * SVID's SPIFFE ID (its DER chain and bundle land in `out`) or the gRPC status name. The proto is
 * compiled once into `workDir`, which must be reachable by `user` (0755 all the way down).
 */
export async function pythonFetchX509As(user: UnixUser, socketPath: string, workDir: string): Promise<{ stdout: string; stderr: string; out: string }> {
  const out = join(workDir, `py-${user.uid}-${Date.now()}`);
  mkdirSync(out, { recursive: true, mode: 0o777 });
  chmodSync(out, 0o777);
  const gen = join(workDir, "pygen");
  if (!existsSync(gen)) {
    mkdirSync(gen, { mode: 0o755 });
    execFileSync("/usr/bin/python3", ["-m", "grpc_tools.protoc", `-I${join(workloadProtoPath(), "..")}`, `--python_out=${gen}`, `--grpc_python_out=${gen}`, workloadProtoPath()]);
    chmodSync(gen, 0o755);
  }
  const r = await finished(spawnAs(user, "/usr/bin/python3", ["-c", PYTHON_CLIENT, gen, socketPath, out]));
  return { stdout: r.stdout, stderr: r.stderr, out };
}
