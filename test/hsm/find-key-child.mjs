// A separate process (a "restart"): opens the token anew and prints the SPKI of a key found by label.
import { createPublicKey } from "node:crypto";
import pkcs11js from "pkcs11js";

const [modulePath, tokenLabel, pin, label] = process.argv.slice(2);
const p = new pkcs11js.PKCS11();
p.load(modulePath);
p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === tokenLabel);
const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
p.C_Login(session, pkcs11js.CKU_USER, pin);
p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }, { type: pkcs11js.CKA_LABEL, value: label }]);
const [h] = p.C_FindObjects(session, 1);
p.C_FindObjectsFinal(session);
const [point] = p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_EC_POINT }]);
const raw = point.value.subarray(point.value.length - 97);
const jwk = { kty: "EC", crv: "P-384", x: raw.subarray(1, 49).toString("base64url"), y: raw.subarray(49).toString("base64url") };
console.log(createPublicKey({ key: jwk, format: "jwk" }).export({ type: "spki", format: "der" }).toString("base64"));
p.C_Logout(session);
p.C_Finalize();
