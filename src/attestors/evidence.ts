import type { z } from "zod";
import { HallmarkError } from "../errors.js";

/** Validates untrusted evidence JSON; the refusal names the attestor and the first bad field. */
export function parseEvidence<S extends z.ZodType>(schema: S, evidence: unknown, attestor: string): z.infer<S> {
  const r = schema.safeParse(evidence);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  throw new HallmarkError("invalid_evidence", `${attestor} evidence: ${where}${issue?.message ?? "invalid"}`);
}
