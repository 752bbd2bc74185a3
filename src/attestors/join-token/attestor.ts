import { z } from "zod";
import { HallmarkError } from "../../errors.js";
import { joinTokenHash, looksLikeJoinToken } from "../../join-tokens/token.js";
import { SpiffeId } from "../../spiffe/id.js";
import type { JoinTokenRepository } from "../../store/types.js";
import type { AttestationContext, AttestationStep, Attestor } from "../types.js";
import { parseEvidence } from "../evidence.js";

/** The join-token attestor's type: selector prefix and the `attestor` of its nodes. */
export const JOIN_TOKEN_ATTESTOR = "join_token";

const evidenceSchema = z.object({ token: z.string().max(256) }).strict();

/**
 * The join-token attestor, for development and bootstrap: a one-time token created by an
 * administrator for one SPIFFE ID. Single use, expiring, bound to that ID. It proves nothing
 * about hardware, so such nodes cannot re-attest: they renew with their SVID or get a new token.
 */
export class JoinTokenAttestor implements Attestor {
  readonly type = JOIN_TOKEN_ATTESTOR;

  constructor(private readonly tokens: JoinTokenRepository) {}

  async attest(evidence: unknown, ctx: AttestationContext): Promise<AttestationStep> {
    const { token } = parseEvidence(evidenceSchema, evidence, this.type);
    if (!looksLikeJoinToken(token)) throw new HallmarkError("join_token_invalid", "the join token is unknown");
    const tokenHash = joinTokenHash(token);
    const { outcome, record } = await this.tokens.consume(tokenHash, ctx.now);
    switch (outcome) {
      case "consumed":
        break;
      case "used":
        throw new HallmarkError("join_token_used", "the join token was already used");
      case "expired":
        throw new HallmarkError("join_token_expired", "the join token has expired");
      default:
        throw new HallmarkError("join_token_invalid", "the join token is unknown");
    }
    const agentId = SpiffeId.parse(record!.spiffeId);
    return {
      kind: "attested",
      result: {
        agentId,
        // A prefix of the hash names the token in selectors and audit without revealing it.
        selectors: [`token_hash_prefix:${tokenHash.slice(0, 16)}`],
        canReattest: false,
        claims: { token_hash_prefix: tokenHash.slice(0, 16) },
      },
    };
  }
}
