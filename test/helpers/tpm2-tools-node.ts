import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EvidenceProducer, JsonObject } from "../../src/attestors/types.js";
import type { Swtpm } from "./swtpm.js";

export interface Tpm2ToolsNodeOptions {
  /** rsa and ecc384: swtpm's persistent, certified EKs; ecc256: a P-256 EK made with tpm2_createek (no certificate). */
  ek?: "rsa" | "ecc384" | "ecc256";
  pcrs?: string;
  /** Tampering hooks for refusal tests. */
  extraDataHex?: (honest: string) => string;
  akArgs?: string[];
  ekCert?: boolean;
}

/**
 * A node that uses only tpm2-tools against swtpm, as the README's worked example does: read the
 * persistent EK and its certificate, create an AK under it, quote with extraData =
 * SHA-256("hallmark-tpm-quote-v1" || 0 || nonce || SHA-256(SPKI)), then activate the credential.
 */
export function tpm2ToolsNode(tpm: Swtpm, o: Tpm2ToolsNodeOptions = {}): EvidenceProducer {
  const ekHandle = o.ek === "ecc384" ? "0x81010016" : o.ek === "ecc256" ? "ek.ctx" : "0x81010001";
  const ekNv = o.ek === "ecc384" ? "0x1c00016" : "0x1c00002";
  const pcrs = o.pcrs ?? "sha256:0,1,7";
  const f = (name: string) => join(tpm.dir, name);
  return {
    type: "tpm",
    async evidence({ nonce, spki }) {
      if (o.ek === "ecc256") await tpm.tpm2("tpm2_createek", ["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"]);
      else await tpm.tpm2("tpm2_readpublic", ["-c", ekHandle, "-o", "ek.pub"]);
      if (o.ekCert !== false && o.ek !== "ecc256") await tpm.tpm2("tpm2_nvread", [ekNv, "-C", "o", "-o", "ek.crt"]);
      await tpm.tpm2("tpm2_createak", ["-C", ekHandle, "-c", "ak.ctx", "-u", "ak.pub", "-n", "ak.name", ...(o.akArgs ?? ["-G", "ecc", "-g", "sha256", "-s", "ecdsa"])]);
      const keyDigest = createHash("sha256").update(spki).digest();
      const honest = createHash("sha256").update(Buffer.concat([Buffer.from("hallmark-tpm-quote-v1\0", "ascii"), nonce, keyDigest])).digest("hex");
      const extra = o.extraDataHex ? o.extraDataHex(honest) : honest;
      await tpm.tpm2("tpm2_quote", ["-c", "ak.ctx", "-l", pcrs, "-q", extra, "-m", "quote.msg", "-s", "quote.sig", "-g", "sha256"]);
      await tpm.tpm2("tpm2_pcrread", [pcrs, "-o", "pcrs.bin"]);
      const b64 = (n: string) => readFileSync(f(n)).toString("base64");
      return {
        ek_public: b64("ek.pub"),
        ...(o.ekCert !== false && o.ek !== "ecc256" ? { ek_cert: b64("ek.crt") } : {}),
        ak_public: b64("ak.pub"),
        quote: b64("quote.msg"),
        quote_signature: b64("quote.sig"),
        pcr_values: b64("pcrs.bin"),
      };
    },
    async answer(challenge: JsonObject) {
      writeFileSync(f("cred.in"), Buffer.from(String(challenge.tpm2_tools_credential), "base64"));
      if (o.ek === "ecc384") {
        // swtpm's high-range ECC P-384 EK has userWithAuth: its (empty) password authorises it.
        await tpm.tpm2("tpm2_activatecredential", ["-c", "ak.ctx", "-C", ekHandle, "-i", "cred.in", "-o", "secret.out"]);
      } else {
        // The low-range RSA EK needs PolicySecret(TPM_RH_ENDORSEMENT).
        await tpm.tpm2("tpm2_startauthsession", ["--policy-session", "-S", "session.ctx"], { flush: false });
        await tpm.tpm2("tpm2_policysecret", ["-S", "session.ctx", "-c", "e"], { flush: false });
        await tpm.tpm2("tpm2_activatecredential", ["-c", "ak.ctx", "-C", ekHandle, "-i", "cred.in", "-o", "secret.out", "-P", "session:session.ctx"]);
      }
      return { secret: readFileSync(f("secret.out")).toString("base64") };
    },
  };
}
