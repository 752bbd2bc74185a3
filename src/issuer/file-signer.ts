import { type KeyObject, constants, createPrivateKey, createPublicKey, sign as nodeSign } from "node:crypto";
import { readFileSync } from "node:fs";
import { HallmarkError } from "../errors.js";
import { type KeyType, SCHEME_PARAMETERS, type SignatureScheme, type Signer } from "../hsm/signer.js";

/**
 * A Signer over a private key held in memory: for an upstream CA whose key is kept in a PEM file
 * (the issue allows it; the HSM is preferred). Never used for Hallmark's own CA or JWT keys.
 */
export function createSoftwareSigner(privateKey: KeyObject, label: string): Signer {
  const publicKey = createPublicKey(privateKey);
  const keyType = keyTypeOf(publicKey);
  return {
    label,
    keyType,
    publicKey,
    async sign(data: Uint8Array, scheme: SignatureScheme): Promise<Uint8Array> {
      const p = SCHEME_PARAMETERS[scheme];
      if ((p.family === "ecdsa") !== keyType.startsWith("ec-")) {
        throw new HallmarkError("hsm_scheme_mismatch", `scheme ${scheme} does not fit a ${keyType} key`);
      }
      const options =
        p.family === "ecdsa"
          ? { key: privateKey, dsaEncoding: "ieee-p1363" as const }
          : p.family === "pss"
            ? { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: p.saltLength }
            : { key: privateKey };
      return nodeSign(p.hash, data, options);
    },
  };
}

export function loadFileSigner(path: string): Signer {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch {
    throw new HallmarkError("config_invalid", `ca.upstream.keyFile: cannot read ${path}`);
  }
  try {
    return createSoftwareSigner(createPrivateKey(pem), path);
  } catch (e) {
    if (e instanceof HallmarkError) throw e;
    throw new HallmarkError("config_invalid", `ca.upstream.keyFile: ${path} is not a PEM private key`);
  }
}

function keyTypeOf(key: KeyObject): KeyType {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec" && d.namedCurve === "prime256v1") return "ec-p256";
  if (key.asymmetricKeyType === "ec" && d.namedCurve === "secp384r1") return "ec-p384";
  if (key.asymmetricKeyType === "rsa" && d.modulusLength === 2048) return "rsa-2048";
  if (key.asymmetricKeyType === "rsa" && d.modulusLength === 3072) return "rsa-3072";
  throw new HallmarkError("config_invalid", "upstream CA keys must be EC P-256/P-384 or RSA 2048/3072");
}
