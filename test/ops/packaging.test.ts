import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { runCli } from "../helpers/cli.js";

/**
 * Issue 8, "running it for real", item 3: the systemd unit and the Docker image build must match
 * the repository as it is. There is no Docker engine on the test machine, so the Dockerfile is
 * checked statically: every COPY source exists, and the TypeScript build it runs finds every
 * file it imports among the copied ones (the image once copied bench/, whose imports reach
 * test/helpers/, which it did not copy: the build failed).
 */
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const UNIT = join(ROOT, "packaging/systemd/hallmark-server.service");

/** A unit file as section -> key -> values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    expect(eq, `a key=value line: ${line}`).toBeGreaterThan(0);
    expect(current, `a key before any section: ${line}`).toBeDefined();
    const key = line.slice(0, eq);
    current!.set(key, [...(current!.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

describe("the systemd unit", () => {
  const unit = parseUnit(readFileSync(UNIT, "utf8"));
  const service = unit.get("Service")!;
  const one = (key: string) => {
    const v = service.get(key);
    expect(v, `[Service] ${key}`).toBeDefined();
    return v![v!.length - 1]!;
  };

  it("has the hardening and operation keys an operator relies on", () => {
    expect([...unit.keys()]).toEqual(["Unit", "Service", "Install"]);
    expect(one("User")).toBe("hallmark");
    expect(one("StateDirectory")).toBe("hallmark");
    expect(one("RuntimeDirectory")).toBe("hallmark");
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("ReadWritePaths")).toBe("/var/lib/hallmark");
    expect(one("PrivateTmp")).toBe("yes");
    expect(one("RestrictAddressFamilies").split(/\s+/).sort()).toEqual(["AF_INET", "AF_INET6", "AF_UNIX"]);
    expect(one("Restart")).toBe("on-failure");
    expect(Number(one("LimitNOFILE"))).toBeGreaterThanOrEqual(4096);
    expect(unit.get("Install")!.get("WantedBy")).toEqual(["multi-user.target"]);
  });

  it("starts a command that exists in this repository, with options it accepts", async () => {
    const [env, node, script, ...args] = one("ExecStart").split(/\s+/);
    expect([env, node]).toEqual(["/usr/bin/env", "node"]);
    // /opt/hallmark is the repository's built tree.
    expect(script).toMatch(/^\/opt\/hallmark\//);
    const inRepo = join(ROOT, script!.slice("/opt/hallmark/".length));
    expect(existsSync(inRepo), inRepo).toBe(true);
    expect(args.slice(0, 3)).toEqual(["server", "--config", "/etc/hallmark/server.yaml"]);
    const help = await runCli(["server", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("--config FILE");
    // The data directory it may write is the one the README's configuration names.
    expect(readFileSync(join(ROOT, "README.md"), "utf8")).toContain("dataDir: /var/lib/hallmark");
  });

  it("passes systemd-analyze verify (when systemd-analyze is installed)", (ctx) => {
    const which = spawnSync("sh", ["-c", "command -v systemd-analyze"], { encoding: "utf8" });
    if (which.status !== 0) {
      console.warn("skipped: systemd-analyze is not installed on this machine (apt-get install systemd)");
      ctx.skip();
      return;
    }
    const r = spawnSync("systemd-analyze", ["verify", UNIT], { encoding: "utf8" });
    // Unknown or misspelt keys are only warnings: any output at all fails the check.
    expect({ status: r.status, out: `${r.stdout}${r.stderr}`.trim() }).toEqual({ status: 0, out: "" });
  });
});

describe("docker-compose.yml", () => {
  it("runs a command and flags the CLI has, and probes an endpoint the server serves", async () => {
    const compose = parseYaml(readFileSync(join(ROOT, "docker-compose.yml"), "utf8")) as {
      services: { hallmark: { build: string; command: string[]; healthcheck: { test: string[] }; volumes: string[] } };
    };
    const svc = compose.services.hallmark;
    expect(svc.build).toBe(".");
    expect(svc.command[0]).toBe("server");
    const usage = (await runCli(["server", "--help"])).stdout;
    for (const flag of svc.command.filter((a) => a.startsWith("--"))) expect(usage).toContain(flag);
    expect(svc.healthcheck.test.join(" ")).toContain("path:'/healthz'");
    expect(readFileSync(join(ROOT, "README.md"), "utf8")).toContain("`GET /healthz`");
    expect(svc.volumes).toContain("hallmark-data:/var/lib/hallmark");
  });
});

describe("the Dockerfile (no Docker engine here: checked against the tree)", () => {
  const lines = readFileSync(join(ROOT, "Dockerfile"), "utf8").split("\n").map((l) => l.trim());
  const copies = lines.filter((l) => l.startsWith("COPY ") && !l.includes("--from="));
  const sources = copies.flatMap((l) => l.split(/\s+/).slice(1, -1));

  it("copies only paths that exist", () => {
    expect(sources.length).toBeGreaterThan(3);
    for (const s of sources) expect(existsSync(join(ROOT, s)), `COPY source ${s}`).toBe(true);
    const fromBuild = lines.filter((l) => l.startsWith("COPY --from=build")).map((l) => l.split(/\s+/)[2]!);
    // What the runtime stage takes from the build stage is what the build produces or copied.
    expect(fromBuild.sort()).toEqual(["/app/dist", "/app/fixtures", "/app/node_modules"]);
  });

  it("builds with a tsconfig whose every file, and every file those import, was copied", () => {
    const build = lines.find((l) => /^RUN npx tsc -p \S+$/.test(l));
    expect(build, "a RUN npx tsc -p <tsconfig> line").toBeDefined();
    const tsconfig = build!.split(/\s+/).pop()!;
    expect(sources).toContain(tsconfig);
    const config = JSON.parse(readFileSync(join(ROOT, tsconfig), "utf8")) as { extends?: string; include: string[] };
    const copied = (file: string) => sources.some((s) => file === s || file.startsWith(`${s.replace(/\/$/, "")}/`));
    // Every tsconfig in the extends chain is copied too.
    for (let c: { extends?: string } | undefined = config; c?.extends; ) {
      const parent = c.extends.replace(/^\.\//, "");
      expect(copied(parent), `${parent} is copied`).toBe(true);
      c = JSON.parse(readFileSync(join(ROOT, parent), "utf8")) as { extends?: string };
    }
    const files = config.include.flatMap((dir) => tsFiles(join(ROOT, dir)));
    expect(files.length).toBeGreaterThan(50);
    const outside: string[] = [];
    for (const file of files) {
      for (const spec of relativeImports(readFileSync(file, "utf8"))) {
        const target = relative(ROOT, resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
        if (!copied(target) || !existsSync(join(ROOT, target))) outside.push(`${relative(ROOT, file)} -> ${target}`);
      }
      expect(copied(relative(ROOT, file)), relative(ROOT, file)).toBe(true);
    }
    expect(outside).toEqual([]);
    // bin/hallmark.js (copied into the runtime stage) loads what this build writes.
    const bin = readFileSync(join(ROOT, "bin/hallmark.js"), "utf8");
    expect(bin).toContain('from "../dist/src/cli/main.js"');
    expect(config.include).toContain("src");
  });
});

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return name.endsWith(".ts") ? [p] : [];
  });
}

function relativeImports(source: string): string[] {
  return [...source.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]!);
}
