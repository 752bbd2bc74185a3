import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, fsyncSync, linkSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { HallmarkError } from "../errors.js";
import { expectOk } from "./http.js";

/**
 * Downloads a file the admin API streams (a database backup) to `out`: into a temporary file
 * created 0600 beside it, checked against the SHA-256 the server announces, flushed to disk, then
 * moved into place. Without `force` an existing `out` is never replaced, not even by a race: the
 * temporary file is hard-linked to `out`, which fails if `out` appeared meanwhile.
 */
export function adminDownload(
  socketPath: string,
  path: string,
  out: string,
  opts: { force: boolean },
): Promise<{ bytes: number; sha256: string }> {
  if (!opts.force && existsSync(out)) throw alreadyThere(out);
  const tmp = `${out}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  return new Promise((resolve, reject) => {
    const fail = (e: unknown) => {
      rmSync(tmp, { force: true });
      reject(e);
    };
    const req = httpRequest({ socketPath, path, method: "GET", host: "localhost" }, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          let body: unknown = Buffer.concat(chunks).toString("utf8");
          try {
            body = JSON.parse(body as string);
          } catch {
            // not a problem document: expectOk reports the status
          }
          try {
            expectOk({ status: res.statusCode ?? 0, body });
          } catch (e) {
            reject(e);
          }
        });
        return;
      }
      let fd: number;
      try {
        fd = openSync(tmp, "wx", 0o600);
      } catch (cause) {
        res.destroy();
        reject(new HallmarkError("backup_failed", `cannot create ${tmp}`, { cause }));
        return;
      }
      const hash = createHash("sha256");
      let bytes = 0;
      res.on("data", (c: Buffer) => {
        writeSync(fd, c);
        hash.update(c);
        bytes += c.length;
      });
      res.on("error", (e) => {
        closeSync(fd);
        fail(new HallmarkError("backup_failed", "the server stopped sending the backup", { cause: e }));
      });
      res.on("end", () => {
        fsyncSync(fd);
        closeSync(fd);
        const sha256 = hash.digest("hex");
        if (!res.complete || sha256 !== res.headers["x-hallmark-sha256"]) {
          fail(new HallmarkError("backup_failed", "the backup arrived incomplete or altered (SHA-256 mismatch)"));
          return;
        }
        try {
          if (opts.force) {
            renameSync(tmp, out);
          } else {
            linkSync(tmp, out);
            rmSync(tmp);
          }
        } catch (e) {
          fail((e as NodeJS.ErrnoException).code === "EEXIST" ? alreadyThere(out) : new HallmarkError("backup_failed", `cannot write ${out}`, { cause: e }));
          return;
        }
        resolve({ bytes, sha256 });
      });
    });
    req.on("error", (e: NodeJS.ErrnoException) => fail(new HallmarkError("unavailable", `cannot reach the server: ${e.code ?? e.message}`, { cause: e })));
    req.end();
  });
}

function alreadyThere(out: string): HallmarkError {
  return new HallmarkError("backup_exists", `${out} exists: pass --force to replace it`);
}
