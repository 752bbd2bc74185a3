import { describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { createLogger } from "../src/log.js";

describe("log redaction", () => {
  it("never writes PINs, tokens, private keys or evidence", () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const log = createLogger("info", sink);
    log.info({ pin: "1234-secret-pin", hsm: { pin: "5678-secret-pin" }, token: "join-token-secret", body: { token: "nested-token-secret" }, privateKey: "-----BEGIN PRIVATE KEY-----abc", evidence: { quote: "AAAA-evidence" }, req: { headers: { authorization: "Bearer abc.def" } } }, "hello");
    const out = lines.join("");
    expect(out).toContain("hello");
    for (const secret of ["1234-secret-pin", "5678-secret-pin", "join-token-secret", "nested-token-secret", "BEGIN PRIVATE KEY", "AAAA-evidence", "Bearer abc.def"]) {
      expect(out).not.toContain(secret);
    }
    expect(out).toContain("[redacted]");
  });
});
