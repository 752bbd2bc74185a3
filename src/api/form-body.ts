import type { FastifyInstance } from "fastify";
import { HallmarkError } from "../errors.js";

/**
 * application/x-www-form-urlencoded bodies of the OAuth endpoints (RFC 6749 §3.2, RFC 7662 §2.1,
 * RFC 7009 §2.1), parsed strictly and within bounds: a parameter sent twice is refused (RFC 6749
 * §3.1) unless it is one the protocol makes repeatable (RFC 8693 `audience`, RFC 8707
 * `resource`), and a parameter without a value counts as absent (§3.1 again).
 */
export const MAX_FORM_BYTES = 64 * 1024;
export const MAX_FORM_PARAMETERS = 32;
const MAX_NAME_CHARS = 64;
export const FORM_MEDIA_TYPE = "application/x-www-form-urlencoded";

export type FormBody = Record<string, string | string[]>;

export function parseForm(text: string, repeatable: ReadonlySet<string>): FormBody {
  const out: FormBody = Object.create(null) as FormBody;
  let count = 0;
  for (const [name, value] of new URLSearchParams(text)) {
    if (++count > MAX_FORM_PARAMETERS) throw new HallmarkError("invalid_request", `at most ${MAX_FORM_PARAMETERS} parameters`);
    if (name.length === 0 || name.length > MAX_NAME_CHARS) throw new HallmarkError("invalid_request", "a parameter name is empty or too long");
    if (value === "") continue;
    const seen = out[name];
    if (seen === undefined) out[name] = repeatable.has(name) ? [value] : value;
    else if (Array.isArray(seen)) seen.push(value);
    else throw new HallmarkError("invalid_request", `the parameter ${name} is sent more than once`);
  }
  return { ...out };
}

/**
 * Makes `app` (an encapsulated plugin: its parent keeps its JSON parser) read form bodies only:
 * any other media type is refused as unsupported_media_type.
 */
export function acceptFormBodies(app: FastifyInstance, repeatable: ReadonlySet<string>): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(FORM_MEDIA_TYPE, { parseAs: "string", bodyLimit: MAX_FORM_BYTES }, (_req, body, done) => {
    try {
      done(null, parseForm(String(body), repeatable));
    } catch (e) {
      done(e as Error, undefined);
    }
  });
}
