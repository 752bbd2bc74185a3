import type { EvidenceProducer, JsonObject } from "../attestors/types.js";
import { HallmarkError } from "../errors.js";
import { type ClientKeyType, newClientKey } from "./csr.js";
import { ApiClient, expectOk, type ServerTls } from "./http.js";
import type { ServerTarget } from "./server-list.js";

export interface SvidFiles {
  spiffeId: string;
  /** Leaf first, then intermediates. */
  certChainPem: string;
  /** The software key; absent when the key stays in hardware (see keyFiles). */
  privateKeyPem?: string | undefined;
  keyFiles?: Record<string, string> | undefined;
  bundlePem: string;
  expiresAt: string;
  selectors: string[];
  /** The issuance's leaf in the transparency log (absent from servers before issue 12). */
  logIndex?: number | undefined;
}

interface IssuedBody {
  status: "issued";
  spiffe_id: string;
  selectors: string[];
  svid: { cert_chain_pem: string; expires_at: string };
  bundle_pem: string;
  log_index?: number;
}
interface ChallengeBody {
  status: "challenge";
  challenge: JsonObject;
}

const MAX_ROUNDS = 4;

/**
 * The client side of attestation, for any agent runtime: open a session, make a key, have the
 * producer bind evidence to the nonce and that key, answer further rounds, and return the
 * SVID, its key and the bundle.
 */
export async function attest(opts: {
  /** One server or several replicas: the session, evidence and answers go wherever is reachable (replicas share the session). */
  server: ServerTarget;
  tls: ServerTls;
  producer: EvidenceProducer;
  keyType?: ClientKeyType;
}): Promise<SvidFiles> {
  const client = new ApiClient(opts.server, opts.tls);
  try {
    const key = opts.producer.key ? await opts.producer.key() : await newClientKey(opts.keyType);
    const session = expectOk(await client.request("POST", "/v1/attest/sessions", { attestor: opts.producer.type })) as {
      session_id: string;
      nonce: string;
    };
    const nonce = Buffer.from(session.nonce, "base64");
    const evidence = await opts.producer.evidence({ nonce, spki: key.spki });
    let body = expectOk(
      await client.request("POST", `/v1/attest/sessions/${session.session_id}/evidence`, { csr: key.csrPem, evidence }),
    ) as IssuedBody | ChallengeBody;
    for (let round = 0; body.status === "challenge"; round++) {
      if (round >= MAX_ROUNDS || !opts.producer.answer) {
        throw new HallmarkError("session_wrong_round", "the server asked for a round this client cannot answer");
      }
      const response = await opts.producer.answer(body.challenge);
      body = expectOk(
        await client.request("POST", `/v1/attest/sessions/${session.session_id}/answer`, { response }),
      ) as IssuedBody | ChallengeBody;
    }
    return {
      spiffeId: body.spiffe_id,
      certChainPem: body.svid.cert_chain_pem,
      privateKeyPem: "privateKeyPem" in key ? key.privateKeyPem : undefined,
      keyFiles: "keyFiles" in key ? key.keyFiles : undefined,
      bundlePem: body.bundle_pem,
      expiresAt: body.svid.expires_at,
      selectors: body.selectors,
      logIndex: body.log_index,
    };
  } finally {
    client.close();
    await opts.producer.close?.();
  }
}

/** The join-token producer: the evidence is the token itself. */
export function joinTokenProducer(token: string): EvidenceProducer {
  return { type: "join_token", evidence: async () => ({ token }) };
}
