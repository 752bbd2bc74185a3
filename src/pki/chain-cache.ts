import { type ChainInput, type ValidatedChain, validateChain } from "./chain.js";
import { sha256Fingerprint } from "./certificate.js";

interface Entry {
  chain: ValidatedChain;
  /** The window in which every certificate of the path is valid. */
  from: number;
  to: number;
}

const cache = new Map<string, Entry>();
const CACHE_LIMIT = 4096;

/**
 * validateChain, remembered per (leaf, intermediates, anchors, handled extensions): evidence from
 * one machine repeats its chain for hours. The path's common validity window is kept, so a
 * remembered chain is still refused at a time outside it. Leaf signatures over evidence are the
 * caller's and are never cached.
 */
export function validateChainCached(input: ChainInput): ValidatedChain {
  const key = [
    sha256Fingerprint(input.leaf),
    ...input.intermediates.map(sha256Fingerprint),
    "|",
    ...input.anchors.map(sha256Fingerprint),
    "|",
    ...(input.handledCriticalExtensions ?? []),
  ].join(".");
  const at = input.at.getTime();
  const hit = cache.get(key);
  if (hit && at >= hit.from && at <= hit.to) return hit.chain;
  const chain = validateChain(input);
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, {
    chain,
    from: Math.max(...chain.path.map((c) => c.notBefore.getTime())),
    to: Math.min(...chain.path.map((c) => c.notAfter.getTime())),
  });
  return chain;
}
