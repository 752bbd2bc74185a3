import { join } from "node:path";
import { writeSvidFiles } from "../client/files.js";
import { UsageError, type Command, type FlagSpec, optionalString, requireString, stringList } from "./args.js";
import { pemChain, derToPem } from "../pki/pem.js";
import type { WorkloadApiClient } from "../workload-api/client.js";
import { DEFAULT_WORKLOAD_SOCKET } from "../workload-api/endpoint.js";

const SOCKET: FlagSpec = {
  type: "string",
  value: "PATH",
  description: "the agent's Workload API socket",
  default: DEFAULT_WORKLOAD_SOCKET,
  env: "SPIFFE_ENDPOINT_SOCKET (unix:///path)",
};
const JSON_FLAG: FlagSpec = { type: "boolean", description: "print the answer as JSON" };

async function withClient<T>(v: Record<string, unknown>, work: (c: WorkloadApiClient) => Promise<T>): Promise<T> {
  // gRPC is loaded only by the commands that speak it: every other command starts without it.
  const { WorkloadApiClient } = await import("../workload-api/client.js");
  const socket = optionalString(v, "socket");
  const c = socket ? new WorkloadApiClient(socket) : new WorkloadApiClient();
  try {
    return await work(c);
  } finally {
    c.close();
  }
}

/** The Workload API's own client, as `spire-agent api fetch` is: what this process may have, from the local agent. */
export const workloadCommands: Command[] = [
  {
    name: "workload fetch",
    summary: "fetch this process's X.509-SVIDs, a JWT-SVID, or the trust bundles from the agent's Workload API socket",
    operand: { name: "what", value: "x509|jwt|bundles", description: "x509: SVIDs, keys and bundle; jwt: a JWT-SVID for --audience; bundles: X.509 and JWT bundles" },
    options: {
      socket: SOCKET,
      audience: { type: "string", multiple: true, value: "AUD", description: "the JWT-SVID's audience (jwt only; required there)" },
      "spiffe-id": { type: "string", value: "ID", description: "only this identity (jwt)" },
      out: { type: "string", value: "DIR", description: "x509: write svid.pem, svid.key (0600) and bundle.pem here (several SVIDs: one subdirectory each)" },
      json: JSON_FLAG,
    },
    async run(v) {
      const what = requireString(v, "what");
      if (what === "x509") {
        const svids = await withClient(v, (c) => c.fetchX509());
        const out = optionalString(v, "out");
        svids.forEach((s, i) => {
          if (!out) return;
          writeSvidFiles(svids.length === 1 ? out : join(out, String(i)), {
            certChainPem: pemChain(s.certChain),
            privateKeyPem: derToPem(s.privateKey, "PRIVATE KEY"),
            bundlePem: pemChain(s.bundle),
          });
        });
        const summary = svids.map((s) => ({ spiffe_id: s.spiffeId, hint: s.hint, certificates: s.certChain.length }));
        console.log(v.json ? JSON.stringify(summary, null, 2) : svids.map((s) => s.spiffeId).join("\n"));
        return 0;
      }
      if (what === "jwt") {
        const audience = stringList(v, "audience");
        if (audience.length === 0) throw new UsageError("--audience is required for jwt");
        const svids = await withClient(v, (c) => c.fetchJwt(audience, optionalString(v, "spiffe-id")));
        console.log(v.json ? JSON.stringify(svids, null, 2) : svids.map((s) => s.token).join("\n"));
        return 0;
      }
      if (what === "bundles") {
        const [x509, jwt] = await withClient(v, async (c) => [await c.fetchX509Bundles(), await c.fetchJwtBundles()] as const);
        const json = Object.fromEntries([...x509].map(([td, certs]) => [td, { x509_authorities: certs.length, jwt: jwt.get(td) ?? null }]));
        console.log(v.json ? JSON.stringify(json, null, 2) : [...x509].map(([td, certs]) => `${td}\n${pemChain(certs)}`).join("\n"));
        return 0;
      }
      throw new UsageError(`'${what}' is not one of x509, jwt, bundles`);
    },
  },
  {
    name: "workload validate-jwt",
    summary: "have the agent validate a JWT-SVID for an audience; prints its SPIFFE ID",
    operand: { name: "token", value: "TOKEN", description: "the JWT-SVID (JWS compact serialization)" },
    options: {
      socket: SOCKET,
      audience: { type: "string", value: "AUD", required: true, description: "the audience the token must carry" },
      json: JSON_FLAG,
    },
    async run(v) {
      const r = await withClient(v, (c) => c.validateJwt(requireString(v, "token"), requireString(v, "audience")));
      console.log(v.json ? JSON.stringify({ spiffe_id: r.spiffeId, claims: r.claims }, null, 2) : r.spiffeId);
      return 0;
    },
  },
];
