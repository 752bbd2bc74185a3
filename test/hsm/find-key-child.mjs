// A separate process (a "restart", or another replica): opens the token with the built keystore,
// first generates the key when argv[8] is "generate" (P-384) or "generate-ed25519", finds it by
// label, and prints its SPKI and a signature over argv[7] so the parent can check both.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const [confPath, modulePath, tokenLabel, pin, label, message, action] = process.argv.slice(2);
const built = fileURLToPath(new URL("../../dist/src/hsm/pkcs11-keystore.js", import.meta.url));
if (!existsSync(built)) {
  console.error(`no build at ${built}`);
  process.exit(2);
}
process.env.SOFTHSM2_CONF = confPath;
const { openPkcs11KeyStore } = await import(built);
const ks = await openPkcs11KeyStore({ modulePath, tokenLabel, pin, sessions: 1 });
try {
  if (action === "generate") await ks.generate(label, "ec-p384");
  if (action === "generate-ed25519") await ks.generate(label, "ed25519");
  const signer = await ks.find(label);
  if (!signer) {
    console.log(JSON.stringify({ found: false }));
  } else {
    const sig = await signer.sign(Buffer.from(message), signer.keyType === "ed25519" ? "ed25519" : "ecdsa-sha384");
    const spki = signer.publicKey.export({ type: "spki", format: "der" }).toString("base64");
    console.log(JSON.stringify({ found: true, keyType: signer.keyType, spki, sig: Buffer.from(sig).toString("base64") }));
  }
} finally {
  await ks.close();
}
