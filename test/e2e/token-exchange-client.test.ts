import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRemoteJWKSet, customFetch, jwtVerify } from "jose";
import { DpopKey } from "../../src/client/dpop-key.js";
import { TokenExchangeClient, exchangeToken } from "../../src/client/token-exchange.js";
import { bundleFetch } from "../helpers/bundle-fetch.js";
import { type ExchangeWorld, type Workload, PERSON, TD, auditRecords, personToken, startExchangeWorld } from "../helpers/token-exchange.js";

/**
 * The client library (src/client/token-exchange.ts) against a real server that demands DPoP
 * nonces (RFC 9449 §8): the retry on use_dpop_nonce, the nonce kept for the next exchange, both
 * client authentications (mutual TLS and a JWT-SVID client assertion) with an actor token, and a
 * refusal carrying the server's code.
 */

const AGENT = `${TD}/agent/planner`;
const API = "https://api.example";
let world: ExchangeWorld;
let agent: Workload;

const nonceRefusals = async () => (await auditRecords(world)).filter((r) => r.event === "issue_access_token" && r.code === "dpop_nonce_required").length;

async function verified(token: string) {
  const jwks = createRemoteJWKSet(new URL(`${world.issuer}/oauth2/jwks`), { [customFetch]: bundleFetch(world.bundlePem) as never });
  return (await jwtVerify(token, jwks, { typ: "at+jwt", issuer: world.issuer, audience: API })).payload;
}

beforeAll(async () => {
  world = await startExchangeWorld({ dpop: { required: true, nonce: true } });
  agent = await world.workloadOn(`${TD}/node/planners`, AGENT);
  await world.delegate({ actor: AGENT, scopes: ["repo:read", "issues:write"], audiences: [API], require_dpop: true });
}, 60_000);
afterAll(async () => world?.close());

describe("exchangeToken against a server that demands DPoP nonces", () => {
  it("retries once with the server's nonce and gets a token bound to its key (mutual TLS)", async () => {
    const dpop = (await DpopKey.generate()).key;
    const before = await nonceRefusals();
    const r = await exchangeToken({
      server: world.issuer,
      trustBundlePem: world.bundlePem,
      svid: { certPem: agent.certPem, keyPem: agent.keyPem },
      subjectToken: await personToken(world),
      subjectTokenType: "jwt",
      scope: ["repo:read"],
      audience: [API],
      dpopKey: dpop,
    });
    expect(r).toMatchObject({ token_type: "DPoP", issued_token_type: "urn:ietf:params:oauth:token-type:access_token" });
    expect(await verified(r.access_token)).toMatchObject({ sub: PERSON, client_id: AGENT, act: { sub: AGENT }, cnf: { jkt: dpop.jkt } });
    // The first proof had no nonce: refused once (and audited), then accepted.
    expect((await nonceRefusals()) - before).toBe(1);
  });

  it("a kept client sends the nonce it was given with the next exchange: no second refusal", async () => {
    const client = await TokenExchangeClient.discover({ server: world.issuer, trustBundlePem: world.bundlePem, svid: { certPem: agent.certPem, keyPem: agent.keyPem } });
    try {
      const dpopKey = (await DpopKey.generate()).key;
      const ask = async () => client.exchange({ subjectToken: await personToken(world), subjectTokenType: "jwt", scope: "issues:write", audience: [API], dpopKey });
      const before = await nonceRefusals();
      await ask();
      await ask();
      await ask();
      expect((await nonceRefusals()) - before).toBe(1);
    } finally {
      client.close();
    }
  });

  it("authenticates with a JWT-SVID client assertion and sends the agent's JWT-SVID as actor token", async () => {
    const jwtSvid = (await agent.node.fetchJwt([world.issuer], AGENT)).token;
    const dpopKey = await DpopKey.generate();
    const r = await exchangeToken({
      server: world.issuer,
      trustBundlePem: world.bundlePem,
      svid: { jwtSvid },
      subjectToken: await personToken(world),
      subjectTokenType: "id_token",
      actorToken: jwtSvid,
      audience: [API],
      dpopKey: dpopKey.key,
    });
    expect(await verified(r.access_token)).toMatchObject({ sub: PERSON, client_id: AGENT, act: { sub: AGENT }, cnf: { jkt: dpopKey.key.jkt } });
  });

  it("a refusal is a HallmarkError with the server's code; without a DPoP key the server's requirement stands", async () => {
    const base = { server: world.issuer, trustBundlePem: world.bundlePem, svid: { certPem: agent.certPem, keyPem: agent.keyPem }, subjectTokenType: "jwt", audience: [API] };
    await expect(exchangeToken({ ...base, subjectToken: await personToken(world), scope: "repo:admin", dpopKey: (await DpopKey.generate()).key })).rejects.toMatchObject({
      name: "HallmarkError",
      code: "scope_not_allowed",
    });
    await expect(exchangeToken({ ...base, subjectToken: await personToken(world) })).rejects.toMatchObject({ code: "dpop_required" });
    // The metadata must be for the issuer asked (RFC 8414 §3.3).
    const elsewhere = world.issuer.replace("127.0.0.1", "localhost");
    await expect(exchangeToken({ ...base, server: elsewhere, subjectToken: "x" })).rejects.toMatchObject({ code: "oauth_metadata_invalid" });
  });
});
