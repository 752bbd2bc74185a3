import { join } from "node:path";
import { ensureSoftHsmToken } from "../hsm/softhsm.js";
import type { CaKeyRepository } from "../store/types.js";
import { generatedSecretFile, readSecretFile } from "./secrets.js";

/**
 * The development default: a SoftHSM2 token under <dataDir>/softhsm, its PINs generated beside
 * it. A token (and its PIN files) is created only for a data directory whose database records no
 * CA key yet. Once it records one, the keys live in that token and nowhere else: if the token is
 * gone the start refuses and creates nothing, so that restoring the token directory from a
 * backup is all it takes (a fresh token under the same label would shadow the restored one).
 */
export async function openDevSoftHsmToken(o: {
  dataDir: string;
  tokenLabel: string;
  /** The PIN from hsm.pinFile or the environment, if given; otherwise the generated one. */
  pin: string | undefined;
  caKeys: CaKeyRepository;
}): Promise<{ dir: string; modulePath: string; pin: string }> {
  const dir = join(o.dataDir, "softhsm");
  const userPin = join(dir, "user.pin");
  if ((await o.caKeys.list()).length > 0) {
    const { modulePath } = await ensureSoftHsmToken({ dir, label: o.tokenLabel, requiredBecause: "the database records CA keys in it" });
    return { dir, modulePath, pin: o.pin ?? readSecretFile(userPin, "the SoftHSM2 user PIN") };
  }
  const pin = o.pin ?? generatedSecretFile(userPin);
  const soPin = generatedSecretFile(join(dir, "so.pin"));
  const { modulePath } = await ensureSoftHsmToken({ dir, label: o.tokenLabel, pin, soPin });
  return { dir, modulePath, pin };
}
