import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { attest } from "../client/attest.js";
import { writeFileAtomic, writeSvidFiles } from "../client/files.js";
import { NodeClient } from "../client/node.js";
import { PRODUCER_TYPES, createProducer } from "../client/producers.js";
import { TrustBundle } from "../client/trust-bundle.js";
import { type Command, type OptionSpec, UsageError, optionalString, requireString, stringList } from "./args.js";

const SERVER_OPTIONS: OptionSpec = {
  server: { type: "string" },
  "trust-bundle": { type: "string" },
  "server-id": { type: "string" },
  json: { type: "boolean" },
};
const NODE_OPTIONS: OptionSpec = { ...SERVER_OPTIONS, svid: { type: "string" }, key: { type: "string" }, out: { type: "string" } };

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    throw new UsageError(`cannot read ${what} '${path}'`);
  }
}

function nodeClient(v: Record<string, unknown>): NodeClient {
  return NodeClient.fromFiles(requireString(v, "server"), {
    svid: requireString(v, "svid"),
    key: requireString(v, "key"),
    trustBundle: requireString(v, "trust-bundle"),
    serverId: optionalString(v, "server-id"),
  });
}

export const clientCommands: Command[] = [
  {
    name: "attest",
    summary: "attest this node and write its SVID (svid.pem, svid.key, bundle.pem) to --out",
    usage:
      "hallmark attest --server https://HOST:PORT [--trust-bundle bundle.pem] [--server-id ID] --out DIR\n" +
      "       [--attestor join_token|tpm|aws_nitro|amd_sev_snp] [--join-token T] [--tpm SPEC] [--tpm-ek rsa2048|ecc-p256|ecc-p384] [--tpm-key-resident]\n" +
      "       [--evidence-file F] [--evidence-cmd CMD] [--vcek F] [--json]",
    options: {
      ...SERVER_OPTIONS,
      out: { type: "string" },
      attestor: { type: "string" },
      "join-token": { type: "string" },
      tpm: { type: "string" },
      "tpm-ek": { type: "string" },
      "tpm-key-resident": { type: "boolean" },
      "evidence-file": { type: "string" },
      "evidence-cmd": { type: "string" },
      vcek: { type: "string" },
    },
    async run(v) {
      const server = requireString(v, "server");
      const out = requireString(v, "out");
      const bundlePath = optionalString(v, "trust-bundle");
      const joinToken = optionalString(v, "join-token");
      const attestor = optionalString(v, "attestor") ?? (joinToken ? "join_token" : undefined);
      if (!attestor) throw new UsageError(`--attestor is required (one of: ${PRODUCER_TYPES().join(", ")})`);
      if (!bundlePath) {
        console.error("warning: no --trust-bundle: the server is not authenticated (insecure bootstrap); the bundle it returns is trusted as is");
      }
      let producer;
      try {
        producer = await createProducer({
          attestor,
          joinToken,
          tpm: optionalString(v, "tpm"),
          tpmEk: optionalString(v, "tpm-ek"),
          tpmKeyResident: v["tpm-key-resident"] === true,
          evidenceFile: optionalString(v, "evidence-file"),
          evidenceCmd: optionalString(v, "evidence-cmd"),
          vcekFile: optionalString(v, "vcek"),
        });
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const trustBundlePem = bundlePath ? readText(bundlePath, "trust bundle") : undefined;
      const svid = await attest({ server, tls: { trustBundlePem, serverId: optionalString(v, "server-id") }, producer });
      writeSvidFiles(out, svid);
      // The server was authenticated with the given bundle: keep that file current too.
      if (bundlePath && trustBundlePem) new TrustBundle(trustBundlePem, bundlePath).adopt(svid.bundlePem);
      const summary = { spiffe_id: svid.spiffeId, expires_at: svid.expiresAt, selectors: svid.selectors, out };
      console.log(v.json ? JSON.stringify(summary, null, 2) : `${svid.spiffeId} (expires ${svid.expiresAt}) written to ${out}`);
      return 0;
    },
  },
  {
    name: "fetch x509",
    summary: "fetch an X.509-SVID for a registration entry of this node, over mutual TLS",
    usage: "hallmark fetch x509 --server URL --svid DIR/svid.pem --key DIR/svid.key --trust-bundle bundle.pem [--spiffe-id ID] --out DIR [--json]",
    options: { ...NODE_OPTIONS, "spiffe-id": { type: "string" } },
    async run(v) {
      const out = requireString(v, "out");
      const client = nodeClient(v);
      try {
        const svid = await client.fetchX509(optionalString(v, "spiffe-id"));
        writeSvidFiles(out, svid);
        console.log(v.json ? JSON.stringify({ spiffe_id: svid.spiffeId, expires_at: svid.expiresAt, serial: svid.serial, out }, null, 2) : `${svid.spiffeId} (expires ${svid.expiresAt}) written to ${out}`);
        return 0;
      } finally {
        client.close();
      }
    },
  },
  {
    name: "fetch jwt",
    summary: "fetch a JWT-SVID for an audience, over mutual TLS",
    usage: "hallmark fetch jwt --server URL --svid DIR/svid.pem --key DIR/svid.key --trust-bundle bundle.pem --audience AUD... [--spiffe-id ID] [--out DIR] [--json]",
    options: { ...NODE_OPTIONS, "spiffe-id": { type: "string" }, audience: { type: "string", multiple: true } },
    async run(v) {
      const audience = stringList(v, "audience");
      if (audience.length === 0) throw new UsageError("--audience is required");
      const client = nodeClient(v);
      try {
        const jwt = await client.fetchJwt(audience, optionalString(v, "spiffe-id"));
        const out = optionalString(v, "out");
        if (out) {
          writeSvidFilesJwt(out, jwt.token);
        }
        console.log(v.json ? JSON.stringify(jwt, null, 2) : jwt.token);
        return 0;
      } finally {
        client.close();
      }
    },
  },
  {
    name: "renew",
    summary: "renew a join-token node's SVID with the current one (hardware nodes attest again)",
    usage: "hallmark renew --server URL --svid DIR/svid.pem --key DIR/svid.key --trust-bundle bundle.pem --out DIR [--json]",
    options: NODE_OPTIONS,
    async run(v) {
      const out = requireString(v, "out");
      const client = nodeClient(v);
      try {
        const svid = await client.renew();
        writeSvidFiles(out, svid);
        console.log(v.json ? JSON.stringify({ spiffe_id: svid.spiffeId, expires_at: svid.expiresAt, out }, null, 2) : `${svid.spiffeId} renewed (expires ${svid.expiresAt})`);
        return 0;
      } finally {
        client.close();
      }
    },
  },
];

function writeSvidFilesJwt(dir: string, token: string): void {
  // A JWT-SVID is a bearer credential: 0600, like a key.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, "jwt_svid.token"), `${token}\n`, 0o600);
}
