import type { Server as TlsServer, TLSSocket } from "node:tls";

/**
 * A TLS connection's writable high-water mark: above any answer Hallmark sends (the largest are
 * pages of 500 entries and batches of 64 SVIDs, well under 1 MiB).
 *
 * Why: Node's HTTP server pauses a connection's parser when a request's headers arrive while the
 * previous answer has not drained (writableNeedDrain: the answer was over the mark, 16 KiB by
 * default, and its write has not completed yet). On a TLS socket the rest of that request,
 * decrypted from the same read, still reaches the paused parser, which refuses it (HPE_PAUSED),
 * and the connection is cut: the client sees EOF. A keep-alive client that sends its next request
 * the moment an answer has arrived, with a body in two TLS records (Go's net/http splits at
 * 4 KiB), met it 20-40 times in 900 batch requests (issue 10;
 * test/e2e/keep-alive-after-large-answers.test.ts). Answers are whole buffers in memory when
 * written, so a higher mark buffers nothing more; it only keeps that pause from starting.
 */
export const ANSWER_HIGH_WATER_MARK = 4 * 1024 * 1024;

/** Raises the writable high-water mark of every TLS connection `server` accepts. */
export function raiseAnswerHighWaterMark(server: TlsServer): void {
  // Node offers no option for the sockets a TLS server creates, hence their writable state.
  server.prependListener("secureConnection", (socket: TLSSocket) => {
    const state = (socket as TLSSocket & { _writableState?: { highWaterMark: number } })._writableState;
    if (state && state.highWaterMark < ANSWER_HIGH_WATER_MARK) state.highWaterMark = ANSWER_HIGH_WATER_MARK;
  });
}
