import { attest, joinTokenProducer, type SvidFiles } from "../../src/client/attest.js";
import { adminRequest, expectOk } from "../../src/client/http.js";
import type { TestServer } from "./server.js";

/**
 * A node admitted as an operator would admit it: a join token from the admin socket, then the
 * client side of attestation against the server, verified with the server's bundle.
 */
export async function admitJoinTokenNode(server: TestServer, nodeId: string): Promise<SvidFiles> {
  const admin = async (method: string, path: string, body?: unknown) => expectOk(await adminRequest(server.adminSocket, method, path, body));
  const { token } = (await admin("POST", "/admin/tokens", { spiffe_id: nodeId, ttl_seconds: 600 })) as { token: string };
  const { bundle_pem: trustBundlePem } = (await admin("GET", "/admin/bundle")) as { bundle_pem: string };
  return attest({ server: server.url, tls: { trustBundlePem }, producer: joinTokenProducer(token) });
}
