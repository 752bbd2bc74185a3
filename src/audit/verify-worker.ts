/**
 * The body of the audit verification worker thread (started by WorkerAuditVerifier): walking
 * hundreds of thousands of records takes seconds of CPU, which on the server's event loop would
 * stall every request meanwhile. One verification per worker; it answers once and ends.
 */
import { parentPort, workerData } from "node:worker_threads";
import { isHallmarkError } from "../errors.js";
import { verifyStoredAuditChain } from "./stored-chain.js";
import type { VerifyWorkerAnswer, VerifyWorkerInput } from "./worker-verifier.js";

const input = workerData as VerifyWorkerInput;
let answer: VerifyWorkerAnswer;
try {
  answer = { result: await verifyStoredAuditChain(input.store, input.checkpoint) };
} catch (e) {
  answer = isHallmarkError(e)
    ? { error: { code: e.code, message: e.message } }
    : { error: { code: "internal", message: `audit verification failed: ${(e as Error).message}` } };
}
parentPort?.postMessage(answer);
