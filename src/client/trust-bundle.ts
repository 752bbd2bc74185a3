import { X509Certificate } from "node:crypto";
import { pemBlocks } from "../pki/pem.js";
import { writeFileAtomic } from "./files.js";

/**
 * The trust bundle a client verifies the server with, kept current from what the server sends:
 * every node answer carries the bundle, and a client adopts it (and rewrites the file it was
 * given, atomically) so that a CA rotation never strands it. Only answers that arrived over a
 * connection authenticated with the current bundle are offered here, never an insecure bootstrap.
 */
export class TrustBundle {
  constructor(
    private current: string,
    /** The file the bundle came from, rewritten on change; none for an in-memory client. */
    private readonly file?: string | undefined,
  ) {}

  get pem(): string {
    return this.current;
  }

  /** Takes `next` if it differs and holds only parseable certificates; true when it changed. */
  adopt(next: string | undefined): boolean {
    if (!next || next === this.current || !isCertificateBundle(next)) return false;
    this.current = next;
    if (this.file) writeFileAtomic(this.file, next, 0o644);
    return true;
  }
}

function isCertificateBundle(pem: string): boolean {
  const blocks = pemBlocks(pem);
  if (blocks.length === 0) return false;
  try {
    for (const der of blocks) new X509Certificate(der);
    return true;
  } catch {
    return false;
  }
}
