import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { attest } from "../client/attest.js";
import { writeFederatedBundles, writeFileAtomic, writeSvidFiles } from "../client/files.js";
import { DpopKey } from "../client/dpop-key.js";
import { checkSvidKeyPair } from "../client/http.js";
import { NodeClient } from "../client/node.js";
import { PRODUCER_TYPES, type ProducerOptions, createProducer } from "../client/producers.js";
import { ServerList, type ServerListOptions, splitServerUrls } from "../client/server-list.js";
import { SUBJECT_TOKEN_TYPE_NAMES, exchangeToken } from "../client/token-exchange.js";
import { saveReceiptBeside } from "../client/receipt-files.js";
import { TrustBundle } from "../client/trust-bundle.js";
import { parseDurationSeconds } from "../config/duration.js";
import { HallmarkError } from "../errors.js";
import { readInputFile, readInputText } from "../input-file.js";
import { pemBlocks } from "../pki/pem.js";
import { type Command, type FlagSpec, type OptionSpec, UsageError, optionalString, requireString, seconds, stringList } from "./args.js";

export const SERVER_OPTIONS: OptionSpec = {
  server: {
    type: "string",
    value: "URL[,URL…]",
    required: true,
    description: "the Hallmark server, https://HOST:PORT; or its replicas, comma-separated (a name with several addresses counts as several): a server that cannot be reached is skipped for the next",
  },
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
/** The agent's own credentials, for the OAuth endpoints: a workload SVID, not the node's. */
const WORKLOAD_SVID_OPTIONS: OptionSpec = {
  ...SERVER_OPTIONS,
  svid: { ...NODE_OPTIONS.svid!, description: "the agent's workload X509-SVID, the svid.pem 'workload fetch x509 --out' wrote (mutual TLS client authentication)" },
  key: { ...NODE_OPTIONS.key!, description: "its private key, the svid.key written with that svid.pem" },
};

/** How long attest and fetch wait for a checkpoint covering the issuance (README, Transparency log). */
const RECEIPT_WAIT: FlagSpec = {
  type: "string",
  value: "DURATION",
  description: "how long to wait for a checkpoint covering the issuance to write DIR/receipt.json; 0 does not wait (the command that fetches it later is printed)",
  default: "5s, five times the server's default checkpoint interval",
};

function receiptWaitMs(v: Record<string, unknown>): number {
  const raw = optionalString(v, "receipt-wait") ?? "5s";
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

/**
 * --server: one https:// URL or several, comma-separated, each checked (a bare HOST:PORT is the
 * usual slip, so say what was meant). `onFailover` is told when a request had to skip a server.
 */
export function serverList(v: Record<string, unknown>, onFailover: ServerListOptions["onFailover"] = printFailover): ServerList {
  const urls = splitServerUrls(requireString(v, "server"));
  if (urls.length === 0) throw new UsageError("--server is required");
  for (const raw of urls) {
    if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(raw)) throw new UsageError(`--server '${raw}' has no scheme: did you mean https://${raw}?`);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new UsageError(`--server '${raw}' is not a URL (e.g. https://127.0.0.1:8443)`);
    }
    if (url.protocol !== "https:") throw new UsageError(`--server must be https:// (the API is served only over TLS): did you mean https://${url.host}?`);
  }
  return new ServerList(urls, { onFailover });
}

/** One line on stderr when a command got its answer from another server than the first it tried. */
function printFailover(failed: readonly string[], answeredBy: string): void {
  console.error(`hallmark: warning: ${failed.join(", ")} failed; ${answeredBy} answered`);
}

/** The --trust-bundle file, refused up front when it holds no certificate (TLS would only say "unable to verify"). */
export function readTrustBundle(path: string): string {
  const pem = readInputText(path, "--trust-bundle");
  if (pemBlocks(pem).length === 0) {
    throw new HallmarkError("bundle_malformed", `--trust-bundle ${path} holds no PEM certificate ('hallmark bundle show --format pem' writes one)`);
  }
  return pem;
}

function nodeClient(v: Record<string, unknown>, server: ServerList = serverList(v)): NodeClient {
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

/** A token from a file (a person's token, a JWT-SVID): one line, surrounding whitespace dropped. */
function readTokenFile(path: string, flag: string): string {
  const token = readInputText(path, flag).trim();
  if (token.length === 0 || /\s/.test(token)) throw new HallmarkError("file_unreadable", `${flag}: ${path} does not hold one token (empty, or more than one line)`);
  return token;
}

/** --dpop-key FILE (a key kept from before), or a fresh key saved to --dpop-key-out FILE (0600) before it is used. */
async function dpopKeyOf(v: Record<string, unknown>): Promise<DpopKey> {
  const [keyFile, outFile] = [optionalString(v, "dpop-key"), optionalString(v, "dpop-key-out")];
  if (keyFile !== undefined && outFile !== undefined) throw new UsageError("give --dpop-key FILE or --dpop-key-out FILE, not both");
  if (keyFile !== undefined) return DpopKey.fromPem(readInputFile(keyFile, "--dpop-key"), `--dpop-key ${keyFile}`);
  if (outFile === undefined) {
    throw new UsageError("give --dpop-key FILE (a key you hold) or --dpop-key-out FILE (a new key is saved there): the token is bound to that key and useless without it");
  }
  if (existsSync(outFile)) throw new UsageError(`--dpop-key-out ${outFile} exists: the tokens bound to it would be stranded (use --dpop-key ${outFile} to reuse it)`);
  const { key, pem } = await DpopKey.generate();
  writeFileAtomic(outFile, pem, 0o600);
  return key;
}

const tokenExchangeCommand: Command = {
  name: "token exchange",
  summary: "exchange a person's token for an access token the agent holds for them (RFC 8693), bound to a DPoP key",
  options: {
    ...WORKLOAD_SVID_OPTIONS,
    "subject-token": { type: "string", value: "FILE", required: true, description: "the person's token (from the identity provider, or an access token of this server for a chain)" },
    "subject-token-type": {
      type: "string",
      value: "TYPE",
      description: `what the subject token is: ${Object.keys(SUBJECT_TOKEN_TYPE_NAMES).join(", ")}`,
      default: "jwt",
    },
    "actor-token": { type: "string", value: "FILE", description: "the agent's JWT-SVID (audience: the server's issuer); its subject must be the --svid's" },
    scope: { type: "string", multiple: true, value: "SCOPES", required: true, description: "the scope to ask for, space-separated" },
    audience: { type: "string", multiple: true, value: "AUD", required: true, description: "an audience the token is for" },
    resource: { type: "string", multiple: true, value: "URI", description: "a resource the token is for, an absolute URI (RFC 8707)" },
    ttl: { type: "string", value: "DURATION", description: "how long the token should live (90s, 10m; at most the delegation's max TTL)", default: "the server's delegation.accessTokenTtl, within the delegation and the subject token's exp" },
    "dpop-key": { type: "string", value: "FILE", description: "the DPoP private key the token is bound to, PEM PKCS#8 (EC P-256, P-384, P-521 or Ed25519)" },
    "dpop-key-out": { type: "string", value: "FILE", description: "make a new EC P-256 DPoP key and save it here (0600, PEM PKCS#8); the file must not exist" },
    json: { type: "boolean", description: "print the whole token response (access_token, issued_token_type, token_type, expires_in, scope) as JSON" },
  },
  notes: () => [
    "The endpoints come from the server's metadata (/.well-known/oauth-authorization-server). The agent authenticates",
    "with --svid over mutual TLS and signs a DPoP proof with the DPoP key; it must present the token with proofs",
    "from the same key (Authorization: DPoP <token>, DPoP: <proof>). Without --json, only the access token is printed.",
  ],
  async run(v) {
    const server = serverList(v);
    const typeName = optionalString(v, "subject-token-type") ?? "jwt";
    if (!(typeName in SUBJECT_TOKEN_TYPE_NAMES)) {
      throw new UsageError(`--subject-token-type must be one of ${Object.keys(SUBJECT_TOKEN_TYPE_NAMES).join(", ")}, not '${typeName}'`);
    }
    const ttlFlag = optionalString(v, "ttl");
    const ttl = ttlFlag === undefined ? undefined : seconds(ttlFlag, "ttl");
    const [svid, key, bundle] = [requireString(v, "svid"), requireString(v, "key"), requireString(v, "trust-bundle")];
    const certPem = readInputText(svid, "--svid");
    const keyPem = readInputText(key, "--key");
    const trustBundlePem = readTrustBundle(bundle);
    checkSvidKeyPair(certPem, keyPem, { svid: `--svid ${svid}`, key: `--key ${key}` });
    const subjectToken = readTokenFile(requireString(v, "subject-token"), "--subject-token");
    const actorFile = optionalString(v, "actor-token");
    const actorToken = actorFile === undefined ? undefined : readTokenFile(actorFile, "--actor-token");
    const dpopKey = await dpopKeyOf(v);
    const answer = await exchangeToken({
      server,
      trustBundlePem,
      serverId: optionalString(v, "server-id"),
      svid: { certPem, keyPem },
      subjectToken,
      subjectTokenType: typeName,
      actorToken,
      scope: stringList(v, "scope").join(" "),
      audience: stringList(v, "audience"),
      resource: stringList(v, "resource"),
      expiresIn: ttl,
      dpopKey,
    });
    console.log(v.json ? JSON.stringify(answer, null, 2) : answer.access_token);
    return 0;
  },
};

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
      const server = serverList(v);
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
      await keepReceipt(out, server.lastAnswered().origin, { trustBundlePem: svid.bundlePem, serverId: optionalString(v, "server-id") }, svid.logIndex, waitMs);
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
      const server = serverList(v);
      const client = nodeClient(v, server);
      try {
        const svid = await client.fetchX509(optionalString(v, "spiffe-id"));
        writeSvidFiles(out, svid);
        const federated = writeFederatedBundles(out, svid.federatedBundles);
        await keepReceipt(out, server.lastAnswered().origin, { trustBundlePem: client.trustBundlePem, serverId: optionalString(v, "server-id") }, svid.logIndex, waitMs);
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
      const server = serverList(v);
      const client = nodeClient(v, server);
      try {
        const jwt = await client.fetchJwt(audience, optionalString(v, "spiffe-id"));
        const out = optionalString(v, "out");
        if (out) {
          writeSvidFilesJwt(out, jwt.token);
          await keepReceipt(out, server.lastAnswered().origin, { trustBundlePem: client.trustBundlePem, serverId: optionalString(v, "server-id") }, jwt.log_index, waitMs);
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
  tokenExchangeCommand,
];

function writeSvidFilesJwt(dir: string, token: string): void {
  // A JWT-SVID is a bearer credential: 0600, like a key.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, "jwt_svid.token"), `${token}\n`, 0o600);
}
