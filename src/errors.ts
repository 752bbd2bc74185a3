/**
 * One closed set of error codes for all of Hallmark. Every refusal carries a stable `code`
 * that tests assert, that the API maps to problem+json (RFC 9457), and that the audit log
 * records. Each area owns its table (`src/<area>/errors.ts`); `src/error-codes.ts` merges
 * them so the API layer can look any code up.
 */

export interface ErrorSpec {
  /** HTTP status the API answers with. Anything >= 500 is never exposed in detail. */
  readonly status: number;
  /** Short, stable, human title (the problem+json `title`). */
  readonly title: string;
}

export type ErrorTable = Readonly<Record<string, ErrorSpec>>;

export interface HallmarkErrorOptions {
  cause?: unknown;
  /** Internal detail for logs and audit only; never sent to the caller. */
  internal?: string;
}

/**
 * The one error type Hallmark throws on purpose. `message` is the public detail (safe to show
 * the caller: no secrets, no evidence bytes); `internal` is for the log and the audit record.
 */
export class HallmarkError extends Error {
  override readonly name = "HallmarkError";
  readonly code: string;
  readonly internal: string | undefined;

  constructor(code: string, message: string, options: HallmarkErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.internal = options.internal;
  }
}

export function isHallmarkError(e: unknown): e is HallmarkError {
  return e instanceof HallmarkError;
}

/**
 * Builds a typed error factory for one area's table, so a misspelt code is a compile error:
 * `const tpmError = errorFactory(TPM_ERRORS); throw tpmError("tpm_quote_bad_magic", "…")`.
 */
export function errorFactory<T extends ErrorTable>(_table: T) {
  return (code: keyof T & string, message: string, options?: HallmarkErrorOptions): HallmarkError =>
    new HallmarkError(code, message, options);
}
