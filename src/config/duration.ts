import { z } from "zod";

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90", 90, "90s", "10m", "1h", "30d" → seconds. Undefined when not a duration. */
export function parseDurationSeconds(input: string | number): number | undefined {
  if (typeof input === "number") return Number.isInteger(input) && input > 0 ? input : undefined;
  const m = /^(\d{1,9})([smhd]?)$/.exec(input.trim());
  if (!m) return undefined;
  const value = Number(m[1]) * (UNIT_SECONDS[m[2] || "s"] ?? 1);
  return value > 0 ? value : undefined;
}

/** A zod field for durations, in seconds. */
export const durationSeconds = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const s = parseDurationSeconds(v);
  if (s === undefined) {
    ctx.addIssue({ code: "custom", message: `'${v}' is not a duration (e.g. 90s, 10m, 1h, 30d)` });
    return z.NEVER;
  }
  return s;
});
