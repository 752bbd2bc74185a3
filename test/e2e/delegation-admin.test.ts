import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminRequest } from "../../src/client/http.js";
import { openSqliteStore } from "../../src/store/sqlite/index.js";
import type { Store } from "../../src/store/types.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { adminSocketOf, startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Issue 11, who may act for whom: `hallmark delegation create|list|show|delete` against a real
 * server over its admin socket, the refusals of bad input with their codes, and the audit record
 * each change leaves (read from the server's database through a second connection, as an auditor would).
 */

let server: TestServer;
let store: Store;
const AGENT = "spiffe://example.org/agent/code-reviewer";
const OTHER_AGENT = "spiffe://example.org/agent/triage";
const IDP = "https://idp.example.com";
const API = "https://api.github.example";

const cli = (...args: string[]) => runCli([...args, "--data-dir", server.dataDir]);
const auditOf = async (event: string) => (await store.audit.list(0, 100_000)).filter((r) => r.event === event);
const createArgs = (...extra: string[]) => ["delegation", "create", "--actor", AGENT, "--subject-issuer", IDP, "--scope", "repo:read", "--audience", API, "--max-ttl", "5m", ...extra];

/** One line on stderr, `hallmark: <code>: …`, exit 1: a refusal by the server. */
function expectRefused(r: CliResult, code: string): void {
  expect(r.stdout).toBe("");
  expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(new RegExp(`^hallmark: ${code}: \\S`));
  expect(r.code).toBe(1);
}

/** One line on stderr, exit 2: a usage error the CLI catches before asking the server. */
function expectUsage(r: CliResult, words: RegExp): void {
  expect(r.stdout).toBe("");
  expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(words);
  expect(r.code).toBe(2);
}

beforeAll(async () => {
  server = await startTestServer();
  store = await openSqliteStore(join(server.dataDir, "hallmark.db"));
}, 60_000);
afterAll(async () => {
  await store?.close();
  await server?.destroy();
});

describe("delegation create, list, show, delete", () => {
  let firstId: string;
  let secondId: string;

  it("creates a delegation for one person with every option and audits it", async () => {
    const r = await cli(
      "delegation", "create", "--actor", AGENT, "--subject-issuer", IDP, "--subject", "alice",
      "--scope", "repo:read issues:write", "--audience", API, "--audience", "billing", "--max-ttl", "5m",
      "--require-dpop", "--require-attestor", "tpm", "--json",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const d = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(d).toMatchObject({
      actor: AGENT,
      subject_issuer: IDP,
      subject: "alice",
      scopes: ["repo:read", "issues:write"],
      audiences: [API, "billing"],
      max_ttl_seconds: 300,
      require_dpop: true,
      require_attestor: "tpm",
    });
    expect(d.id).toMatch(/^[0-9a-f-]{36}$/);
    firstId = d.id as string;
    const records = await auditOf("delegation_create");
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ outcome: "success", actor: "admin:socket", spiffeId: AGENT });
    expect(records[0]!.details).toMatchObject({ delegationId: firstId, subject: "alice", scopes: ["repo:read", "issues:write"], requireAttestor: "tpm" });
  });

  it("creates one for anyone of the issuer, for another agent, and prints it on one line", async () => {
    const r = await cli("delegation", "create", "--actor", OTHER_AGENT, "--subject-issuer", IDP, "--scope", "issues:read", "--scope", "issues:write", "--audience", API, "--max-ttl", "90s");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.stdout).toContain(`${OTHER_AGENT}  for any subject of ${IDP}  scope="issues:read issues:write"`);
    secondId = r.stdout.split(" ")[0]!;
    expect((await auditOf("delegation_create")).map((a) => a.details.delegationId)).toEqual([firstId, secondId]);
  });

  it("lists all of them oldest first, or one actor's", async () => {
    const all = await cli("delegation", "list", "--json");
    expect(all.code).toBe(0);
    expect((JSON.parse(all.stdout) as { delegations: Array<{ id: string }> }).delegations.map((d) => d.id)).toEqual([firstId, secondId]);
    const mine = await cli("delegation", "list", "--actor", OTHER_AGENT);
    expect(mine.code).toBe(0);
    expect(mine.stdout.trim().split("\n")).toHaveLength(1);
    expect(mine.stdout.startsWith(secondId)).toBe(true);
    const none = await cli("delegation", "list", "--actor", "spiffe://example.org/agent/nobody");
    expect(none.stdout.trim()).toBe("no delegations");
  });

  it("shows one, as text and as JSON", async () => {
    const text = await cli("delegation", "show", firstId);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/subject: +alice/);
    expect(text.stdout).toMatch(/scope: +repo:read issues:write/);
    expect(text.stdout).toMatch(/require attestor: +tpm/);
    const json = await cli("delegation", "show", secondId, "--json");
    expect(JSON.parse(json.stdout)).toMatchObject({ id: secondId, subject: null, require_attestor: null, require_dpop: false, max_ttl_seconds: 90 });
  });

  it("deletes one, audits it, and then knows it no more", async () => {
    const r = await cli("delegation", "delete", secondId);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`deleted ${secondId}`);
    const deleted = await auditOf("delegation_delete");
    expect(deleted).toHaveLength(1);
    expect(deleted[0]).toMatchObject({ spiffeId: OTHER_AGENT, details: expect.objectContaining({ delegationId: secondId }) as unknown });
    expectRefused(await cli("delegation", "show", secondId), "delegation_not_found");
    expectRefused(await cli("delegation", "delete", secondId), "delegation_not_found");
    // The failed delete left no record.
    expect(await auditOf("delegation_delete")).toHaveLength(1);
    expect((await store.delegations.list()).map((d) => d.id)).toEqual([firstId]);
  });
});

describe("bad input", () => {
  it("refuses actors that are not agents of this trust domain, with the SPIFFE codes", async () => {
    const cases: Array<[string, string]> = [
      ["not-a-spiffe-id", "invalid_spiffe_id"],
      ["spiffe://Example.org/agent", "invalid_spiffe_id"],
      ["spiffe://example.org", "invalid_spiffe_id"],
      ["spiffe://other.org/agent/x", "spiffe_id_outside_trust_domain"],
      // Hallmark's own namespace holds the server and the nodes: no delegation may name them.
      ["spiffe://example.org/hallmark/server", "spiffe_id_reserved"],
      ["spiffe://example.org/hallmark/agent/tpm/abc", "spiffe_id_reserved"],
    ];
    const results = await Promise.all(cases.map(([actor]) => cli(...createArgs().map((a) => (a === AGENT ? actor : a)))));
    results.forEach((r, i) => expectRefused(r, cases[i]![1]));
  });

  it("refuses scope tokens outside RFC 6749 §3.3: a quote, a backslash, a space inside a token", async () => {
    const refused = await Promise.all(['repo:"admin', "repo\\admin", "tab\there"].map((scope) => cli(...createArgs("--scope", scope))));
    for (const r of refused) expectRefused(r, "delegation_invalid");
    // The CLI splits --scope at spaces, so a space inside one token is tried on the API itself.
    const body = { actor: AGENT, subject_issuer: IDP, scopes: ["repo read"], audiences: [API], max_ttl_seconds: 60 };
    const r = await adminRequest(adminSocketOf(server.dataDir), "POST", "/admin/delegations", body);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: "delegation_invalid" });
    const many = await adminRequest(adminSocketOf(server.dataDir), "POST", "/admin/delegations", { ...body, scopes: Array.from({ length: 65 }, (_, i) => `s${i}`) });
    expect(many.body).toMatchObject({ code: "invalid_request" });
  });

  it("refuses zero audiences: a usage error on the CLI, invalid_request on the API", async () => {
    expectUsage(await cli("delegation", "create", "--actor", AGENT, "--subject-issuer", IDP, "--scope", "repo:read", "--max-ttl", "5m"), /--audience is required/);
    const r = await adminRequest(adminSocketOf(server.dataDir), "POST", "/admin/delegations", {
      actor: AGENT,
      subject_issuer: IDP,
      scopes: ["repo:read"],
      audiences: [],
      max_ttl_seconds: 60,
    });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: "invalid_request", detail: expect.stringContaining("audiences") as unknown });
    expectRefused(await cli(...createArgs("--audience", "has space")), "delegation_invalid");
  });

  it("refuses an unknown attestor, a max TTL over svid.maxTtl, and a subject issuer that is not an http(s) URL", async () => {
    const unknown = await cli(...createArgs("--require-attestor", "tpm2"));
    expectRefused(unknown, "unknown_attestor");
    expect(unknown.stderr).toContain("(one of: join_token, aws_nitro, amd_sev_snp, tpm)");
    expectRefused(await cli(...createArgs().map((a) => (a === "5m" ? "2d" : a))), "ttl_invalid");
    expectUsage(await cli(...createArgs().map((a) => (a === "5m" ? "soon" : a))), /--max-ttl: 'soon' is not a duration/);
    const issuers = ["ftp://idp.example.com", "idp.example.com", "https://idp.example.com/#frag", "https://user@idp.example.com"];
    for (const r of await Promise.all(issuers.map((issuer) => cli(...createArgs().map((a) => (a === IDP ? issuer : a)))))) {
      expectRefused(r, "delegation_invalid");
    }
  });

  it("refuses an unknown id, and one that is not an id, and a missing id as usage", async () => {
    const unknown = randomUUID();
    expectRefused(await cli("delegation", "show", unknown), "delegation_not_found");
    expectRefused(await cli("delegation", "delete", unknown), "delegation_not_found");
    expectRefused(await cli("delegation", "show", "nope"), "invalid_request");
    expectUsage(await cli("delegation", "delete"), /ID is required/);
  });

  it("left no delegation and no audit record behind any refusal", async () => {
    expect(await store.delegations.list()).toHaveLength(1);
    expect(await auditOf("delegation_create")).toHaveLength(2);
    expect(await auditOf("delegation_delete")).toHaveLength(1);
  });
});
