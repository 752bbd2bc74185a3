import { readFileSync } from "node:fs";
import { HallmarkError } from "./errors.js";

/** Why a file could not be read, in words rather than an errno. */
const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of the path is not a directory",
  ELOOP: "too many symbolic links",
};

/**
 * Reads a file an operator named with a flag (--svid, --key, --trust-bundle, --config,
 * --checkpoint, --evidence-file, --vcek). Every such flag goes through here, so a missing or
 * unreadable file is always the same failure: exit 1, `file_unreadable: <flag>: cannot read
 * <path>: <why>`, whichever flag named it.
 */
export function readInputFile(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code ?? "";
    throw new HallmarkError("file_unreadable", `${flag}: cannot read ${path}: ${REASONS[errno] ?? (errno || "unknown error")}`, { cause: e });
  }
}

export function readInputText(path: string, flag: string): string {
  return readInputFile(path, flag).toString("utf8");
}
