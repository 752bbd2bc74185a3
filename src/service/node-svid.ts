import type { NodeRecord } from "../store/types.js";
import { type IssuedX509, normalizeSerial } from "./ports.js";

/*
 * Which node SVID is the node's: the server accepts only the SVID it issued last (and, for a
 * short overlap, the one before it), so a replaced or pre-eviction SVID is dead at once.
 */

/** The presented serial is the node's current SVID, or its predecessor within the overlap. */
export function isCurrentNodeSvid(node: NodeRecord, serial: string, now: Date): boolean {
  if (node.serial !== undefined && normalizeSerial(node.serial) === serial) return true;
  return (
    node.previousSerial !== undefined &&
    node.previousValidUntil !== undefined &&
    now < node.previousValidUntil &&
    normalizeSerial(node.previousSerial) === serial
  );
}

/**
 * The node fields after a new node SVID replaced its current one: the old one stays usable for
 * `overlapSeconds` (never past its own expiry), unless the node was evicted, when nothing issued
 * before the eviction may work again.
 */
export function supersede(
  node: NodeRecord | undefined,
  svid: IssuedX509,
  now: Date,
  overlapSeconds: number,
): Pick<NodeRecord, "serial" | "expiresAt" | "previousSerial" | "previousValidUntil"> {
  const keepPrevious = node?.serial !== undefined && !node.evicted && overlapSeconds > 0;
  const until = keepPrevious ? new Date(Math.min(now.getTime() + overlapSeconds * 1000, node.expiresAt?.getTime() ?? Infinity)) : undefined;
  return {
    serial: svid.serial,
    expiresAt: svid.notAfter,
    previousSerial: keepPrevious ? node.serial : undefined,
    previousValidUntil: until,
  };
}
