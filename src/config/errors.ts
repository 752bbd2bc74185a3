import type { z } from "zod";
import { HallmarkError } from "../errors.js";

/** One readable line per bad field: "config: ca.ttl: '1x' is not a duration". */
export function configError(source: string, error: z.ZodError): HallmarkError {
  const lines = error.issues.map((i) => `${source}: ${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`);
  return new HallmarkError("config_invalid", lines.join("\n"));
}
