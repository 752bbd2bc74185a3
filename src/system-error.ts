import { getSystemErrorMap } from "node:util";

/**
 * The C library's wording for a failed system call ("permission denied", "read-only file
 * system", "not a directory"), for one-line start-up errors that name a file and the reason.
 */
export function errnoReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException | undefined;
  if (typeof err?.errno === "number") {
    const described = getSystemErrorMap().get(err.errno);
    if (described) return described[1];
  }
  return err?.code ?? String(err?.message ?? e);
}
