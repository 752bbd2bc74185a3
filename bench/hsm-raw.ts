import { createHash, generateKeyPairSync, sign as nodeSign } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import pkcs11js from "pkcs11js";
import { openPkcs11KeyStore } from "../src/hsm/pkcs11-keystore.js";
import { acquireModule, findTokenSlot, openUserSession, releaseModule } from "../src/hsm/pkcs11-module.js";
import type { Signer } from "../src/hsm/signer.js";
import { ensureSoftHsmToken, findSoftHsmModule } from "../src/hsm/softhsm.js";
import { type Measured, closedLoop, summary } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const P256_PARAMS = Buffer.from("06082a8648ce3d030107", "hex");

export interface RawSignRateOptions {
  /** The token's softhsm2.conf; sets SOFTHSM2_CONF for this process when given. */
  softhsmConf?: string;
  /** Defaults to the installed SoftHSM2. */
  modulePath?: string;
  tokenLabel: string;
  pin: string;
  seconds?: number;
  /**
   * A key kept in the token (CKA_TOKEN true), as the server's keys are, instead of a session key.
   * SoftHSM2 checks a token object's file on every use, so C_SignInit costs more with one: the
   * floor under what the server pays per signature. The key is destroyed afterwards.
   */
  tokenResident?: boolean;
}

/**
 * The floor under every HSM-signed operation: pkcs11js C_Sign (synchronous, one session, no
 * pool, no hashing) with an ECDSA P-256 session key, which vanishes with the session, so the
 * token is left as it was.
 */
export async function rawSignRate(opts: RawSignRateOptions): Promise<{ perSecond: number; p50Ms: number; p99Ms: number; measured: Measured }> {
  if (opts.softhsmConf) process.env.SOFTHSM2_CONF = opts.softhsmConf;
  // Shares the module with any keystore of this process (one C_Initialize per process).
  const p = acquireModule(opts.modulePath ?? findSoftHsmModule());
  try {
    const slot = findTokenSlot(p, opts.tokenLabel);
    if (!slot) throw new Error(`no token labelled ${opts.tokenLabel}`);
    const session = openUserSession(p, slot, opts.pin);
    const onToken = opts.tokenResident === true;
    const { privateKey, publicKey } = p.C_GenerateKeyPair(
      session,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [
        { type: pkcs11js.CKA_TOKEN, value: onToken },
        { type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS },
        { type: pkcs11js.CKA_VERIFY, value: true },
      ],
      [
        { type: pkcs11js.CKA_TOKEN, value: onToken },
        { type: pkcs11js.CKA_SIGN, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
      ],
    );
    const digest = createHash("sha256").update("hallmark bench").digest();
    const out = Buffer.alloc(64);
    const mechanism = { mechanism: pkcs11js.CKM_ECDSA };
    const latenciesMs: number[] = [];
    const seconds = opts.seconds ?? SECONDS;
    const start = performance.now();
    const end = start + seconds * 1000;
    let ops = 0;
    for (let t = start; t < end; ops++) {
      p.C_SignInit(session, mechanism, privateKey);
      p.C_Sign(session, digest, out);
      const now = performance.now();
      latenciesMs.push(now - t);
      t = now;
    }
    const measured = { ops, seconds: (performance.now() - start) / 1000, latenciesMs };
    const sorted = [...latenciesMs].sort((a, b) => a - b);
    if (onToken) for (const h of [privateKey, publicKey]) p.C_DestroyObject(session, h);
    p.C_CloseSession(session);
    return {
      perSecond: measured.ops / measured.seconds,
      p50Ms: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN,
      p99Ms: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? Number.NaN,
      measured,
    };
  } finally {
    releaseModule(p);
  }
}

/** Runs one phase and notes how busy the event loop was: what signing leaves for TLS and the rest. */
async function phase(label: string, op: () => Promise<unknown>, concurrency: number): Promise<void> {
  const before = performance.eventLoopUtilization();
  const m = await closedLoop(op, concurrency, SECONDS);
  const elu = performance.eventLoopUtilization(before);
  console.log(`${summary(label, m)}  loop busy ${(elu.utilization * 100).toFixed(0)}%`);
}

/**
 * ECDSA P-256 signing on one SoftHSM2 token: raw pkcs11js C_Sign and Node's in-memory signer as
 * baselines, then our Signer.sign with C_SignAsync and with C_Sign at concurrency 1, 4 and 16,
 * and one RSA-2048 line for scale.
 */
export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "hallmark-bench-hsm-"));
  try {
    const pin = "bench-user-pin";
    const { confPath } = await ensureSoftHsmToken({ dir, label: "bench", pin, soPin: "bench-so-pin" });
    console.log(`ECDSA P-256 signatures, SoftHSM2, ${SECONDS} s per line`);

    const raw = await rawSignRate({ softhsmConf: confPath, tokenLabel: "bench", pin });
    console.log(`${summary("baseline: pkcs11js C_Sign, sync, 1 session", raw.measured)}  loop busy 100%`);
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const message = Buffer.from("hallmark bench message");
    await phase("baseline: node:crypto sign, in memory", async () => nodeSign("sha256", message, privateKey), 1);

    for (const signing of ["async", "sync"] as const) {
      const ks = await openPkcs11KeyStore({ modulePath: findSoftHsmModule(), tokenLabel: "bench", pin, sessions: 4, signing });
      try {
        const ec: Signer = (await ks.find("bench-p256")) ?? (await ks.generate("bench-p256", "ec-p256"));
        for (const concurrency of [1, 4, 16]) {
          await phase(`Signer.sign ${signing === "async" ? "C_SignAsync" : "C_Sign"}, pool 4, concurrency ${concurrency}`, () => ec.sign(message, "ecdsa-sha256"), concurrency);
        }
        if (signing === "async") {
          const rsa = (await ks.find("bench-rsa2048")) ?? (await ks.generate("bench-rsa2048", "rsa-2048"));
          await phase("Signer.sign RSA-2048 PKCS#1 C_SignAsync, concurrency 4", () => rsa.sign(message, "rsa-pkcs1-sha256"), 4);
        }
      } finally {
        await ks.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
