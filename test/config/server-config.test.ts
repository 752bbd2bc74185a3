import { afterAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { MAX_JWT_BATCH, MAX_X509_BATCH } from "../../src/api/public-routes.js";
import { MIN_ISSUANCE_BURST, loadServerConfig } from "../../src/config/server.js";
import { parseDurationSeconds } from "../../src/config/duration.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("config");
afterAll(() => dir.remove());
const file = (name: string, text: string) => {
  const p = join(dir.path, name);
  writeFileSync(p, text);
  return p;
};

describe("server configuration", () => {
  it("works out of the box with documented defaults", () => {
    const c = loadServerConfig({}, {});
    expect(c.trustDomain).toBe("example.org");
    expect(c.listen).toBe("127.0.0.1:8443");
    expect(c.hsm.softhsmAutoInit).toBe(true);
    expect(c.svid).toEqual({ nodeTtl: 3600, x509Ttl: 3600, jwtTtl: 300, witTtl: 300, maxTtl: 86400, nodeRenewalOverlap: 30 });
  });

  it("reads YAML and JSON, lets the environment override the file and flags override both", () => {
    const yaml = file("c.yaml", "trustDomain: file.example\nlisten: 0.0.0.0:9000\nca:\n  ttl: 30d\n");
    const c = loadServerConfig({ config: yaml, listen: "127.0.0.1:9001" }, { HALLMARK_TRUST_DOMAIN: "env.example" });
    expect(c.trustDomain).toBe("env.example");
    expect(c.listen).toBe("127.0.0.1:9001");
    expect(c.ca.ttl).toBe(30 * 86400);
    const json = file("c.json", JSON.stringify({ svid: { jwtTtl: "2m", witTtl: "10m" } }));
    expect(loadServerConfig({ config: json }, {}).svid).toMatchObject({ jwtTtl: 120, witTtl: 600 });
  });

  it("reports every bad field on its own line, with its path", () => {
    const bad = file("bad.yaml", "trustDomain: Bad_Domain!\nca:\n  ttl: 1x\n  keyType: dsa\nlisten: nowhere\nsurprise: 1\n");
    let message = "";
    try {
      loadServerConfig({ config: bad }, {});
    } catch (e) {
      expect(e).toMatchObject({ code: "config_invalid" });
      message = (e as Error).message;
    }
    const lines = message.split("\n");
    expect(lines.some((l) => l.startsWith(`${bad}: trustDomain: `))).toBe(true);
    expect(lines.some((l) => l.startsWith(`${bad}: ca.ttl: '1x' is not a duration`))).toBe(true);
    expect(lines.some((l) => l.startsWith(`${bad}: ca.keyType: `))).toBe(true);
    expect(lines.some((l) => l.startsWith(`${bad}: listen: must be HOST:PORT`))).toBe(true);
    expect(lines.some((l) => l.includes("surprise"))).toBe(true);
  });

  it("bounds public connections and anonymous requests by default, and lets a partial limits section keep the other defaults", () => {
    const d = loadServerConfig({}, {}).limits;
    expect(d).toMatchObject({ handshakeTimeout: 10, headersTimeout: 10, requestTimeout: 30, idleTimeout: 15, maxConnectionsPerAddress: 64 });
    expect(d.maxConnections).toBeGreaterThan(d.maxConnectionsPerAddress);
    const c = loadServerConfig({ config: file("l.yaml", "limits:\n  idleTimeout: 1m\n  attestRate: { burst: 5 }\n") }, {}).limits;
    expect(c).toMatchObject({ idleTimeout: 60, headersTimeout: 10, attestRate: { burst: 5, perSecond: 10 } });
    expect(() => loadServerConfig({ config: file("m.yaml", "limits: { headersTimeout: 60s, requestTimeout: 30s }\n") }, {})).toThrowError(
      /limits: headersTimeout must not exceed requestTimeout/,
    );
  });

  it("starts 16 requests per turn of the event loop by default, and refuses an allowance under 1 or fractional", () => {
    expect(loadServerConfig({}, {}).limits.requestsPerTurn).toBe(16);
    expect(loadServerConfig({ config: file("rt.yaml", "limits:\n  requestsPerTurn: 4\n") }, {}).limits.requestsPerTurn).toBe(4);
    expect(() => loadServerConfig({ config: file("ru.yaml", "limits:\n  requestsPerTurn: 0\n") }, {})).toThrowError(/limits\.requestsPerTurn: /);
    expect(() => loadServerConfig({ config: file("rv.yaml", "limits:\n  requestsPerTurn: 2.5\n") }, {})).toThrowError(/limits\.requestsPerTurn: /);
  });

  it("lets a connection hold 16 requests open by default, and refuses a cap under 1, over 1024 or fractional", () => {
    expect(loadServerConfig({}, {}).limits.maxOpenRequestsPerConnection).toBe(16);
    expect(loadServerConfig({ config: file("oa.yaml", "limits:\n  maxOpenRequestsPerConnection: 1\n") }, {}).limits.maxOpenRequestsPerConnection).toBe(1);
    for (const [name, bad] of [["ob.yaml", "0"], ["oc.yaml", "1025"], ["od.yaml", "1.5"]] as const) {
      expect(() => loadServerConfig({ config: file(name, `limits:\n  maxOpenRequestsPerConnection: ${bad}\n`) }, {})).toThrowError(
        /limits\.maxOpenRequestsPerConnection: /,
      );
    }
  });

  it("allows a node 500 workload SVIDs a second (burst 1000) by default, and refuses a burst smaller than the largest batch", () => {
    expect(loadServerConfig({}, {}).limits.issuanceRate).toEqual({ perSecond: 500, burst: 1000, trackedNodes: 100_000 });
    // A batch takes one token per SVID, all or none: a bucket smaller than a batch could never pass one.
    expect(MIN_ISSUANCE_BURST).toBe(MAX_X509_BATCH);
    expect(MIN_ISSUANCE_BURST).toBe(MAX_JWT_BATCH);
    const ok = loadServerConfig({ config: file("ia.yaml", `limits:\n  issuanceRate: { perSecond: 0.5, burst: ${MIN_ISSUANCE_BURST} }\n`) }, {}).limits.issuanceRate;
    expect(ok).toEqual({ perSecond: 0.5, burst: MIN_ISSUANCE_BURST, trackedNodes: 100_000 });
    for (const [name, bad] of [["ib.yaml", `burst: ${MIN_ISSUANCE_BURST - 1}`], ["ic.yaml", "perSecond: 0"], ["id.yaml", "burst: 100.5"], ["ie.yaml", "perNode: 3"]] as const) {
      expect(() => loadServerConfig({ config: file(name, `limits:\n  issuanceRate: { ${bad} }\n`) }, {})).toThrowError(/limits\.issuanceRate/);
    }
  });

  it("allows an OAuth client 500 requests a second (burst 1000) by default, and refuses a bucket that could admit nothing", () => {
    expect(loadServerConfig({}, {}).limits.clientRate).toEqual({ perSecond: 500, burst: 1000, trackedClients: 100_000 });
    expect(loadServerConfig({ config: file("ca.yaml", "limits:\n  clientRate: { perSecond: 2, burst: 1 }\n") }, {}).limits.clientRate).toMatchObject({ perSecond: 2, burst: 1 });
    for (const [name, bad] of [["cb.yaml", "burst: 0"], ["cc.yaml", "perSecond: -1"], ["cd.yaml", "trackedClients: 3"]] as const) {
      expect(() => loadServerConfig({ config: file(name, `limits:\n  clientRate: { ${bad} }\n`) }, {})).toThrowError(/limits\.clientRate/);
    }
  });

  it("signs with session copies of the HSM keys as the module suits (auto) unless told on or off", () => {
    expect(loadServerConfig({}, {}).hsm.sessionCopies).toBe("auto");
    expect(loadServerConfig({ config: file("sc.yaml", "hsm:\n  sessionCopies: off\n") }, {}).hsm.sessionCopies).toBe("off");
    expect(() => loadServerConfig({ config: file("sd.yaml", "hsm:\n  sessionCopies: sometimes\n") }, {})).toThrowError(/hsm\.sessionCopies: /);
  });

  it("groups audit appends by default (window 0, batches of 256), keeps the other default when one is set, and bounds both", () => {
    expect(loadServerConfig({}, {}).audit).toEqual({ tailCheckRecords: 1000, groupCommit: { maxBatch: 256, maxDelayMs: 0 } });
    expect(loadServerConfig({ config: file("g.yaml", "audit:\n  groupCommit: { maxDelayMs: 1.5 }\n") }, {}).audit.groupCommit).toEqual({ maxBatch: 256, maxDelayMs: 1.5 });
    expect(() => loadServerConfig({ config: file("h.yaml", "audit:\n  groupCommit: { maxDelayMs: 50, maxBatch: 0 }\n") }, {})).toThrowError(
      /audit\.groupCommit\.maxBatch: [^\n]*\n.*audit\.groupCommit\.maxDelayMs: /,
    );
  });

  it("refuses unreadable, non-YAML and non-mapping files in one line", () => {
    expect(() => loadServerConfig({ config: join(dir.path, "missing.yaml") }, {})).toThrowError(/^--config: cannot read .*missing.yaml: no such file$/);
    expect(() => loadServerConfig({ config: file("x.yaml", "a: [1, 2\n") }, {})).toThrowError(/not valid YAML or JSON/);
    expect(() => loadServerConfig({ config: file("y.yaml", "- 1\n- 2\n") }, {})).toThrowError(/must be a mapping/);
  });

  it("parses durations", () => {
    expect([parseDurationSeconds("90"), parseDurationSeconds("10m"), parseDurationSeconds("1h"), parseDurationSeconds("2d"), parseDurationSeconds(5)]).toEqual([90, 600, 3600, 172800, 5]);
    expect([parseDurationSeconds("0"), parseDurationSeconds("-1"), parseDurationSeconds("1.5h"), parseDurationSeconds("h"), parseDurationSeconds(0)]).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });
});

describe("store configuration", () => {
  it("defaults to SQLite with migrations on, and a url (file or HALLMARK_STORE_URL) selects PostgreSQL", () => {
    expect(loadServerConfig({}, {}).store).toEqual({ driver: "sqlite", migrate: true, pool: { max: 10, connectionTimeout: 5, idleTimeout: 30, statementTimeout: 30 } });
    const env = loadServerConfig({}, { HALLMARK_STORE_URL: "postgres://hallmark@db:5432/hallmark" }).store;
    expect(env).toMatchObject({ driver: "postgres", url: "postgres://hallmark@db:5432/hallmark", migrate: true });
    const yaml = file("pg.yaml", "store:\n  driver: postgres\n  url: postgresql://h@db/h\n  passwordFile: /etc/hallmark/db.pw\n  pool:\n    max: 4\n    statementTimeout: 1m\n");
    expect(loadServerConfig({ config: yaml, noMigrate: true }, {}).store).toEqual({
      driver: "postgres",
      url: "postgresql://h@db/h",
      passwordFile: "/etc/hallmark/db.pw",
      migrate: false,
      pool: { max: 4, connectionTimeout: 5, idleTimeout: 30, statementTimeout: 60 },
    });
    expect(loadServerConfig({ noMigrate: true }, {}).store).toMatchObject({ driver: "sqlite", migrate: false });
  });

  it("refuses postgres without a url, a url that is not postgres://, and a url with driver sqlite, without echoing the url", () => {
    const refusal = (text: string) => {
      try {
        loadServerConfig({ config: file("s.yaml", text) }, {});
      } catch (e) {
        return (e as Error).message;
      }
      return "accepted";
    };
    expect(refusal("store:\n  driver: postgres\n")).toMatch(/store\.url.*required with driver postgres/);
    const wrongScheme = refusal("store:\n  url: mysql://u:hunter2@db/h\n");
    expect(wrongScheme).toMatch(/store\.url.*must be a postgres:\/\/ URL/);
    expect(wrongScheme).not.toContain("hunter2");
    expect(refusal("store:\n  driver: sqlite\n  url: postgres://u@db/h\n")).toMatch(/url and passwordFile are for driver postgres/);
  });
});
