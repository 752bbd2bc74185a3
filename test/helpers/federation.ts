import { join } from "node:path";
import { adminRequest } from "../../src/client/http.js";
import { type ServerProcess, startServerProcess } from "./server-process.js";

/** A server's admin API over its socket in `dataDir`: status and JSON body (problem+json on refusal). */
export async function adminOf(dataDir: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await adminRequest(join(dataDir, "admin.sock"), method, path, body);
  return { status: r.status, body: (r.body ?? {}) as Record<string, unknown> };
}

/** A server's own bundle, PEM, as `hallmark bundle show` prints it. */
export async function ownBundlePem(dataDir: string): Promise<string> {
  return String((await adminOf(dataDir, "GET", "/admin/bundle")).body.bundle_pem);
}

/**
 * A second trust domain: `hallmark server --trust-domain <td>` as a separate process (SoftHSM2 is
 * initialised once per process, so a second domain with a token of its own needs one), and the
 * URL it listens on.
 */
export async function startForeignDomain(dataDir: string, trustDomain: string): Promise<{ server: ServerProcess; url: string }> {
  const server = startServerProcess(dataDir, { args: ["--trust-domain", trustDomain] });
  await server.ready;
  return { server, url: /listening on (https:\/\/\S+)/.exec(server.stderr())![1]! };
}

/**
 * Has the server in `dataDir` federate with the foreign domain at `url` over https_spiffe (its
 * main listener and its own SVID `spiffe://<td>/hallmark/server`), bootstrapped with the foreign
 * server's current bundle given out of band, as `hallmark federation create` does.
 */
export async function federateOverSpiffe(dataDir: string, foreign: { dataDir: string; url: string; trustDomain: string }): Promise<void> {
  const initial = (await adminOf(foreign.dataDir, "GET", "/admin/bundle")).body.spiffe_bundle;
  const r = await adminOf(dataDir, "POST", "/admin/federations", {
    trust_domain: foreign.trustDomain,
    bundle_endpoint_url: `${foreign.url}/.well-known/spiffe-bundle`,
    profile: "https_spiffe",
    endpoint_spiffe_id: `spiffe://${foreign.trustDomain}/hallmark/server`,
    trust_bundle: JSON.stringify(initial),
  });
  if (r.status !== 201) throw new Error(`federation create answered ${r.status}: ${JSON.stringify(r.body)}`);
}
