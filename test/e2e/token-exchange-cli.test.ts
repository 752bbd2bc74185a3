import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPublicKey } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type JWK, calculateJwkThumbprint, createRemoteJWKSet, customFetch, jwtVerify } from "jose";
import { DpopKey } from "../../src/client/dpop-key.js";
import { verifyDpopBoundRequest } from "../../src/oauth/resource-server.js";
import { bundleFetch } from "../helpers/bundle-fetch.js";
import { type CliResult, run, runCli } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";
import { type ExchangeWorld, type Workload, PERSON, TD, personToken, startExchangeWorld } from "../helpers/token-exchange.js";

/**
 * Issue 11, the agent's side: `hallmark token exchange` against a real server (SoftHSM2, SQLite,
 * mutual TLS) that trusts a test identity provider, from the person's token to a DPoP-bound access
 * token a resource server accepts (the README's worked example), and the CLI's refusals.
 */

const AGENT = `${TD}/agent/code-reviewer`;
const NODE = `${TD}/node/agents`;
const API = "https://api.github.example";

const dir = tempDir("token-exchange-cli");
const file = (name: string) => join(dir.path, name);
let world: ExchangeWorld;
let agent: Workload;

const baseArgs = () => ["token", "exchange", "--server", world.issuer, "--trust-bundle", file("bundle.pem"), "--svid", file("svid.pem"), "--key", file("svid.key")];
const exchange = (...extra: string[]) => runCli([...baseArgs(), "--subject-token", file("alice.jwt"), ...extra]);

function expectOneLine(r: CliResult, code: number, words: RegExp): void {
  expect(r.stdout).toBe("");
  expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(words);
  expect(r.code).toBe(code);
}

async function thumbprintOfKeyFile(path: string): Promise<string> {
  const jwk = createPublicKey(readFileSync(path)).export({ format: "jwk" }) as JWK;
  return calculateJwkThumbprint(jwk, "sha256");
}

// The server as the README configures it: DPoP required, no nonces (test/e2e/token-exchange-client.test.ts has them).
beforeAll(async () => {
  world = await startExchangeWorld({ dpop: { required: true, nonce: false } });
  agent = await world.workloadOn(NODE, AGENT);
  writeFileSync(file("svid.pem"), agent.certPem);
  writeFileSync(file("svid.key"), agent.keyPem, { mode: 0o600 });
  writeFileSync(file("bundle.pem"), world.bundlePem);
  await world.delegate({ actor: AGENT, scopes: ["repo:read", "issues:write"], audiences: [API], max_ttl_seconds: 600, require_dpop: true });
  writeFileSync(file("alice.jwt"), `${await personToken(world)}\n`);
}, 60_000);

afterAll(async () => {
  await world?.close();
  dir.remove();
});

describe("hallmark token exchange against a real server", () => {
  it("prints a DPoP-bound access token that verifies against /oauth2/jwks, bound to the saved key, which a resource server accepts", async () => {
    const keyFile = file("dpop-1.key");
    const r = await exchange("--scope", "repo:read", "--audience", API, "--dpop-key-out", keyFile, "--ttl", "2m", "--json");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const answer = JSON.parse(r.stdout) as { access_token: string; token_type: string; issued_token_type: string; expires_in: number };
    expect(answer).toMatchObject({ token_type: "DPoP", issued_token_type: "urn:ietf:params:oauth:token-type:access_token" });
    expect(answer.expires_in).toBeGreaterThan(0);
    expect(answer.expires_in).toBeLessThanOrEqual(120);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);

    const jwks = createRemoteJWKSet(new URL(`${world.issuer}/oauth2/jwks`), { [customFetch]: bundleFetch(world.bundlePem) as never });
    const { payload } = await jwtVerify(answer.access_token, jwks, { typ: "at+jwt", issuer: world.issuer, audience: API });
    expect(payload).toMatchObject({ sub: PERSON, scope: "repo:read", client_id: AGENT, act: { sub: AGENT } });
    expect((payload.cnf as { jkt: string }).jkt).toBe(await thumbprintOfKeyFile(keyFile));

    // The resource server of the README: the token with a proof from the saved key is accepted…
    const url = `${API}/repos/acme/widgets/pulls`;
    const dpop = await DpopKey.fromPem(readFileSync(keyFile));
    const claims = await verifyDpopBoundRequest({
      authorization: `DPoP ${answer.access_token}`,
      dpop: await dpop.proof({ htm: "GET", htu: url, accessToken: answer.access_token }),
      method: "GET",
      url,
      jwks,
      issuer: world.issuer,
      audience: API,
    });
    expect(claims.act?.sub).toBe(AGENT);
    // …the same token as Bearer, or with a proof from another key, is not.
    const asBearer = verifyDpopBoundRequest({ authorization: `Bearer ${answer.access_token}`, dpop: undefined, method: "GET", url, jwks, issuer: world.issuer, audience: API });
    await expect(asBearer).rejects.toMatchObject({ code: "access_token_dpop_bound" });
    const other = (await DpopKey.generate()).key;
    const stolen = verifyDpopBoundRequest({
      authorization: `DPoP ${answer.access_token}`,
      dpop: await other.proof({ htm: "GET", htu: url, accessToken: answer.access_token }),
      method: "GET",
      url,
      jwks,
      issuer: world.issuer,
      audience: API,
    });
    await expect(stolen).rejects.toMatchObject({ code: "dpop_proof_invalid" });
  });

  it("--dpop-key reuses a kept key; without --json only the token is printed; introspection with curl over mTLS says active with act and cnf", async () => {
    const keyFile = file("dpop-1.key");
    const r = await exchange("--scope", "issues:write", "--audience", API, "--dpop-key", keyFile);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const token = r.stdout.trim();
    expect(token.split(".")).toHaveLength(3);
    const jkt = await thumbprintOfKeyFile(keyFile);
    // The README's curl line for introspection, as a resource server holding an SVID runs it.
    const c = await run("curl", ["-sS", "--cacert", file("bundle.pem"), "--cert", file("svid.pem"), "--key", file("svid.key"), "--data-urlencode", `token=${token}`, `${world.issuer}/oauth2/introspect`]);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ active: true, sub: PERSON, scope: "issues:write", act: { sub: AGENT }, cnf: { jkt }, token_type: "DPoP" });
  });

  it("a server refusal is exit 1 with its code on one line, and never echoes a token", async () => {
    const r = await exchange("--scope", "repo:admin", "--audience", API, "--dpop-key", file("dpop-1.key"));
    expectOneLine(r, 1, /^hallmark: scope_not_allowed: \S/);
    const subject = readFileSync(file("alice.jwt"), "utf8").trim();
    expect(r.stderr).not.toContain(subject.split(".")[2]);
    const wrongAudience = await exchange("--scope", "repo:read", "--audience", "https://elsewhere.example", "--dpop-key", file("dpop-1.key"));
    expectOneLine(wrongAudience, 1, /^hallmark: audience_not_allowed: \S/);
    const tooLong = await exchange("--scope", "repo:read", "--audience", API, "--ttl", "1h", "--dpop-key", file("dpop-1.key"));
    expectOneLine(tooLong, 1, /^hallmark: ttl_not_allowed: \S/);
  });

  it("bad flags and files: exit 2 (usage) or 1 (file), one line each, before anything is sent", async () => {
    const withKey = ["--scope", "repo:read", "--audience", API];
    writeFileSync(file("empty.jwt"), "\n");
    const cases: Array<[string[], number, RegExp]> = [
      [[...baseArgs(), ...withKey, "--dpop-key-out", file("unused.key")], 2, /--subject-token is required/],
      [["--audience", API, "--dpop-key-out", file("unused.key")], 2, /--scope is required/],
      [withKey, 2, /--dpop-key FILE .*--dpop-key-out FILE/],
      [[...withKey, "--dpop-key", file("dpop-1.key"), "--dpop-key-out", file("unused.key")], 2, /not both/],
      [[...withKey, "--dpop-key-out", file("dpop-1.key")], 2, /exists/],
      [[...withKey, "--dpop-key-out", file("unused.key"), "--subject-token-type", "saml"], 2, /--subject-token-type must be one of jwt, access_token, id_token/],
      [[...withKey, "--dpop-key-out", file("unused.key"), "--server", "127.0.0.1:1"], 2, /did you mean https:\/\/127\.0\.0\.1:1/],
      [[...withKey, "--dpop-key-out", file("unused.key"), "--ttl", "soon"], 2, /--ttl: 'soon' is not a duration/],
      [[...withKey, "--dpop-key", file("svid.pem")], 1, /^hallmark: dpop_key_unreadable: --dpop-key .*svid\.pem is not a PEM private key/],
      [[...withKey, "--dpop-key", file("nothing.key")], 1, /^hallmark: file_unreadable: --dpop-key: cannot read/],
      [[...baseArgs(), ...withKey, "--dpop-key", file("dpop-1.key"), "--subject-token", file("empty.jwt")], 1, /^hallmark: file_unreadable: --subject-token: .* does not hold one token/],
      [[...withKey, "--dpop-key", file("dpop-1.key"), "--key", file("dpop-1.key")], 1, /^hallmark: svid_key_mismatch: /],
    ];
    // Arguments that start with the command's own are given whole; the others go after --subject-token.
    const results = await Promise.all(cases.map(([args]) => (args[0] === "token" ? runCli(args) : exchange(...args))));
    results.forEach((r, i) => expectOneLine(r, cases[i]![1], cases[i]![2]));
  });
});
