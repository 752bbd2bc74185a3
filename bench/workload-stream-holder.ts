import { credentials, loadPackageDefinition, Metadata, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { WORKLOAD_PROTO_OPTIONS, workloadProtoPath } from "../src/workload-api/server.js";

/**
 * Run by bench/workload-api.ts as another uid: `node workload-stream-holder.js SOCKET N` opens N
 * FetchX509SVID streams on one connection, prints "ready N" once every stream has its first
 * message (or "failed CODE"), and holds them until killed.
 */
const [socket, count] = [process.argv[2]!, Number(process.argv[3])];
const pkg = loadPackageDefinition(loadSync(workloadProtoPath(), WORKLOAD_PROTO_OPTIONS));
const client = new (pkg.SpiffeWorkloadAPI as ServiceClientConstructor)(`unix://${socket}`, credentials.createInsecure()) as unknown as {
  FetchX509SVID(req: object, md: Metadata): NodeJS.EventEmitter;
};
const md = new Metadata();
md.set("workload.spiffe.io", "true");
let ready = 0;
for (let i = 0; i < count; i++) {
  const call = client.FetchX509SVID({}, md);
  call.once("data", () => {
    if (++ready === count) console.log(`ready ${ready}`);
  });
  call.on("error", (e: { code: number }) => {
    console.log(`failed ${e.code}`);
    process.exit(1);
  });
}
