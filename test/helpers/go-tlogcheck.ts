import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The Go witness (test/transparency/go/tlogcheck): golang.org/x/mod/sumdb/tlog and sumdb/note
 * from Debian's golang-golang-x-mod-dev, built offline with GOPATH=/usr/share/gocode.
 */
const GOPATH = "/usr/share/gocode";
const SOURCE = fileURLToPath(new URL("../transparency/go/tlogcheck", import.meta.url));

/** Why the Go witness cannot run here, or undefined when it can. */
export function goTlogcheckMissing(): string | undefined {
  if (spawnSync("go", ["version"]).status !== 0) return "the go command is not installed (apt-get install golang-go)";
  if (!existsSync(join(GOPATH, "src/golang.org/x/mod/sumdb/tlog"))) return "golang.org/x/mod is not installed (apt-get install golang-golang-x-mod-dev)";
  return undefined;
}

/** Builds the witness into `dir`; returns the binary's path. */
export function buildGoTlogcheck(dir: string): string {
  const binary = join(dir, "tlogcheck");
  // GOCACHE outside the test's own directory, so later runs reuse compiled packages.
  const env = { ...process.env, GO111MODULE: "off", GOPATH, GOCACHE: join(tmpdir(), "hallmark-go-cache"), GOFLAGS: "" };
  execFileSync("go", ["build", "-o", binary, "."], { cwd: SOURCE, env, stdio: "pipe" });
  return binary;
}

export interface GoCheckResult {
  checked: Record<string, number>;
  failures: string[];
}

/** Runs the witness on `input` (JSON on stdin) without blocking the event loop (it may call our server). */
export async function runGoTlogcheck(binary: string, input: unknown): Promise<GoCheckResult> {
  const { spawn } = await import("node:child_process");
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out) as GoCheckResult) : reject(new Error(`tlogcheck failed (${code}): ${err}`))));
    child.stdin.end(JSON.stringify(input));
  });
}
