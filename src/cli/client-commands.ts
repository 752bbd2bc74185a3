import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { attest } from "../client/attest.js";
import { writeFederatedBundles, writeFileAtomic, writeSvidFiles } from "../client/files.js";
import { checkSvidKeyPair } from "../client/http.js";
import { NodeClient } from "../client/node.js";
import { PRODUCER_TYPES, type ProducerOptions, createProducer } from "../client/producers.js";
import { saveReceiptBeside } from "../client/receipt-files.js";
import { TrustBundle } from "../client/trust-bundle.js";
import { parseDurationSeconds } from "../config/duration.js";
import { HallmarkError } from "../errors.js";
import { readInputFile, readInputText } from "../input-file.js";
import { pemBlocks } from "../pki/pem.js";
import { type Command, type FlagSpec, type OptionSpec, UsageError, optionalString, requireString, stringList } from "./args.js";

export const SERVER_OPTIONS: OptionSpec = {
  server: { type: "string", value: "URL", required: true, description: "the Hallmark server, https://HOST:PORT" },
  "trust-bundle": { type: "string", value: "FILE", required: true, description: "PEM trust bundle the server's certificate must chain to ('hallmark bundle show', or bundle.pem from attest)" },
  "server-id": {
    type: "string",
    value: "ID",
    description: "the SPIFFE ID the server's certificate must carry as a URI SAN",
    default: "any SPIFFE ID with the path /hallmark/server, in whichever trust domain the trust bundle certifies",
  },
};
const JSON_FLAG: FlagSpec = { type: "boolean", description: "print the result as JSON" };
const OUT: FlagSpec = { type: "string", value: "DIR", required: true, description: "directory to write svid.pem (leaf first, then intermediates), svid.key (0600) and bundle.pem to" };
const NODE_OPTIONS: OptionSpec = {
  ...SERVER_OPTIONS,
  svid: { type: "string", value: "FILE", required: true, description: "the node's SVID, the svid.pem attest or renew wrote" },
  key: { type: "string", value: "FILE", required: true, description: "the node's private key, the svid.key written with that svid.pem" },
};
/** How long attest and fetch wait for a checkpoint covering the issuance (README, Transparency log). */
const RECEIPT_WAIT: FlagSpec = {
  type: "string",
  value: "DURATION",
  description: "how long to wait for a checkpoint covering the issuance to write DIR/receipt.json; 0 does not wait (the command that fetches it later is printed)",
  default: "20s, twice the server's default checkpoint interval",
};

function receiptWaitMs(v: Record<string, unknown>): number {
  const raw = optionalString(v, "receipt-wait") ?? "20s";
  const s = raw.trim() === "0" ? 0 : parseDurationSeconds(raw);
  if (s === undefined) throw new UsageError(`--receipt-wait '${raw}' is not a duration (e.g. 20s, 0)`);
  return s * 1000;
}

/**
 * DIR/receipt.json beside what was written, or one line on stderr saying how to fetch it later:
 * the transparency log proves the issuance only once a checkpoint covers it.
 */
async function keepReceipt(dir: string, server: string, tls: { trustBundlePem: string | undefined; serverId: string | undefined }, index: number | undefined, waitMs: number): Promise<void> {
  const saved = await saveReceiptBeside(dir, { server, tls, index, waitMs });
  if (saved && "later" in saved) console.error(`receipt: no checkpoint covers log index ${index} yet; fetch it later with: ${saved.later}`);
}

const WORKLOAD_ID: FlagSpec = { type: "string", value: "ID", description: "which entry's SPIFFE ID, when the node is entitled to several" };

/** --server must be an https:// URL; a bare HOST:PORT is the usual slip, so say what was meant. */
export function serverUrl(v: Record<string, unknown>): string {
  const raw = requireString(v, "server");
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(raw)) throw new UsageError(`--server '${raw}' has no scheme: did you mean https://${raw}?`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--server '${raw}' is not a URL (e.g. https://127.0.0.1:8443)`);
  }
  if (url.protocol !== "https:") throw new UsageError(`--server must be https:// (the API is served only over TLS): did you mean https://${url.host}?`);
  return raw;
}

/** The --trust-bundle file, refused up front when it holds no certificate (TLS would only say "unable to verify"). */
export function readTrustBundle(path: string): string {
  const pem = readInputText(path, "--trust-bundle");
  if (pemBlocks(pem).length === 0) {
    throw new HallmarkError("bundle_malformed", `--trust-bundle ${path} holds no PEM certificate ('hallmark bundle show --format pem' writes one)`);
  }
  return pem;
}

function nodeClient(v: Record<string, unknown>): NodeClient {
  const server = serverUrl(v);
  const [svid, key, bundle] = [requireString(v, "svid"), requireString(v, "key"), requireString(v, "trust-bundle")];
  const certPem = readInputText(svid, "--svid");
  const keyPem = readInputText(key, "--key");
  const trustBundlePem = readTrustBundle(bundle);
  checkSvidKeyPair(certPem, keyPem, { svid: `--svid ${svid}`, key: `--key ${key}` });
  return new NodeClient(server, { certPem, keyPem, trustBundlePem, serverId: optionalString(v, "server-id") }, bundle);
}

/** How a node proves what it is: the flags of `hallmark attest`, shared with `hallmark agent`. */
export const ATTESTATION_OPTIONS: OptionSpec = {
  attestor: { type: "string", value: "TYPE", description: `the evidence to present: ${PRODUCER_TYPES().join(", ")}`, default: "join_token when --join-token is given" },
  "join-token": { type: "string", value: "TOKEN", description: "the one-time token from 'hallmark token create' (join_token)" },
  tpm: { type: "string", value: "SPEC", description: "the TPM: swtpm:host=H,port=P or a device such as /dev/tpmrm0 (tpm)" },
  "tpm-ek": { type: "string", value: "EK", description: "which endorsement key: rsa2048, ecc-p256 or ecc-p384 (tpm)", default: "rsa2048" },
  "tpm-key-resident": { type: "boolean", description: "create the SVID key inside the TPM; DIR/svid.tpmkey holds its TPM-wrapped blob (tpm)" },
  "evidence-file": { type: "string", value: "FILE", description: "evidence made beforehand: a Nitro attestation document or an SEV-SNP report, raw or base64 (aws_nitro, amd_sev_snp)" },
  "evidence-cmd": {
    type: "string",
    value: "CMD",
    description: "a command that prints the evidence, given HALLMARK_NONCE_HEX, HALLMARK_PUBLIC_KEY_DER_B64 (and HALLMARK_REPORT_DATA_HEX for amd_sev_snp) (aws_nitro, amd_sev_snp)",
  },
  vcek: { type: "string", value: "FILE", description: "the VCEK or VLEK certificate, DER or PEM, to send with the report (amd_sev_snp)" },
};

/** The producer the ATTESTATION_OPTIONS choose (files read now: a bad path is a usage-time error). */
export function producerOptions(v: Record<string, unknown>): ProducerOptions {
  const joinToken = optionalString(v, "join-token");
  const attestor = optionalString(v, "attestor") ?? (joinToken ? "join_token" : undefined);
  if (!attestor) throw new UsageError(`--attestor is required (one of: ${PRODUCER_TYPES().join(", ")})`);
  const evidenceFile = optionalString(v, "evidence-file");
  const vcekFile = optionalString(v, "vcek");
  return {
    attestor,
    joinToken,
    tpm: optionalString(v, "tpm"),
    tpmEk: optionalString(v, "tpm-ek"),
    tpmKeyResident: v["tpm-key-resident"] === true,
    evidence: evidenceFile ? readInputFile(evidenceFile, "--evidence-file") : undefined,
    evidenceCmd: optionalString(v, "evidence-cmd"),
    vcek: vcekFile ? readInputFile(vcekFile, "--vcek") : undefined,
  };
}

export const clientCommands: Command[] = [
  {
    name: "attest",
    summary: "attest this node and write its SVID (svid.pem, svid.key, bundle.pem) to --out",
    options: {
      ...SERVER_OPTIONS,
      "trust-bundle": {
        ...SERVER_OPTIONS["trust-bundle"]!,
        required: false,
        default: "none: insecure bootstrap, the server is not authenticated and a warning says so",
      },
      out: OUT,
      ...ATTESTATION_OPTIONS,
      "receipt-wait": RECEIPT_WAIT,
      json: JSON_FLAG,
    },
    async run(v) {
      const server = serverUrl(v);
      const out = requireString(v, "out");
      const bundlePath = optionalString(v, "trust-bundle");
      const chosen = producerOptions(v);
      const waitMs = receiptWaitMs(v);
      if (!bundlePath) {
        console.error("warning: no --trust-bundle: the server is not authenticated (insecure bootstrap); the bundle it returns is trusted as is");
      }
      const trustBundlePem = bundlePath ? readTrustBundle(bundlePath) : undefined;
      const producer = await createProducer(chosen).catch((e: unknown) => {
        throw new UsageError((e as Error).message);
      });
      const svid = await attest({ server, tls: { trustBundlePem, serverId: optionalString(v, "server-id") }, producer });
      writeSvidFiles(out, svid);
      // The server was authenticated with the given bundle: keep that file current too.
      if (bundlePath && trustBundlePem) new TrustBundle(trustBundlePem, bundlePath).adopt(svid.bundlePem);
      await keepReceipt(out, server, { trustBundlePem: svid.bundlePem, serverId: optionalString(v, "server-id") }, svid.logIndex, waitMs);
      const summary = { spiffe_id: svid.spiffeId, expires_at: svid.expiresAt, selectors: svid.selectors, out };
      console.log(v.json ? JSON.stringify(summary, null, 2) : `${svid.spiffeId} (expires ${svid.expiresAt}) written to ${out}`);
      return 0;
    },
  },
  {
    name: "fetch x509",
    summary: "fetch an X.509-SVID for a registration entry of this node, over mutual TLS",
    options: {
      ...NODE_OPTIONS,
      "spiffe-id": WORKLOAD_ID,
      out: { ...OUT, description: `${OUT.description}; and federated/<trust domain>.pem for each trust domain the entry federates with` },
      "receipt-wait": RECEIPT_WAIT,
      json: JSON_FLAG,
    },
    async run(v) {
      const out = requireString(v, "out");
      const waitMs = receiptWaitMs(v);
      const client = nodeClient(v);
      try {
        const svid = await client.fetchX509(optionalString(v, "spiffe-id"));
        writeSvidFiles(out, svid);
        const federated = writeFederatedBundles(out, svid.federatedBundles);
        await keepReceipt(out, serverUrl(v), { trustBundlePem: client.trustBundlePem, serverId: optionalString(v, "server-id") }, svid.logIndex, waitMs);
        console.log(
          v.json
            ? JSON.stringify({ spiffe_id: svid.spiffeId, expires_at: svid.expiresAt, serial: svid.serial, out, federated }, null, 2)
            : `${svid.spiffeId} (expires ${svid.expiresAt}) written to ${out}${federated.length ? ` with the bundles of ${federated.join(", ")}` : ""}`,
        );
        return 0;
      } finally {
        client.close();
      }
    },
  },
  {
    name: "fetch jwt",
    summary: "fetch a JWT-SVID for an audience, over mutual TLS",
    options: {
      ...NODE_OPTIONS,
      audience: { type: "string", multiple: true, value: "AUD", required: true, description: "an audience the JWT-SVID is for (its aud claim)" },
      "spiffe-id": WORKLOAD_ID,
      out: { type: "string", value: "DIR", description: "also write the token to DIR/jwt_svid.token (mode 0600) and its receipt to DIR/receipt.json; the token is printed either way" },
      "receipt-wait": RECEIPT_WAIT,
      json: JSON_FLAG,
    },
    async run(v) {
      const audience = stringList(v, "audience");
      const waitMs = receiptWaitMs(v);
      const client = nodeClient(v);
      try {
        const jwt = await client.fetchJwt(audience, optionalString(v, "spiffe-id"));
        const out = optionalString(v, "out");
        if (out) {
          writeSvidFilesJwt(out, jwt.token);
          await keepReceipt(out, serverUrl(v), { trustBundlePem: client.trustBundlePem, serverId: optionalString(v, "server-id") }, jwt.log_index, waitMs);
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
    options: { ...NODE_OPTIONS, out: OUT, json: JSON_FLAG },
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
