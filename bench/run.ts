import "reflect-metadata";

/**
 * `npm run bench`: every benchmark in one run, each next to its baseline measured in the same
 * run. BENCH_ONLY=issuance,tpm limits the set; BENCH_SECONDS sets each phase's length.
 */
const BENCHES: Record<string, () => Promise<{ run: () => Promise<void> }>> = {
  hsm: () => import("./hsm-raw.js"),
  issuance: () => import("./issuance.js"),
  attestors: () => import("./attestors.js"),
  tpm: () => import("./tpm.js"),
  audit: () => import("./audit-verify.js"),
  workload: () => import("./workload-api.js"),
  oauth: () => import("./oauth.js"),
  tlog: () => import("./tlog.js"),
  // issue 10's table: a Go load generator, cfssl as the peer, entry scaling, 1,024 connections
  speed: () => import("./speed.js"),
  // issue 13: issuance on 1 and 2 PostgreSQL replicas beside SQLite, entry propagation between replicas,
  // a replica's cold start on 100,000 entries (BENCH_PHASES=issuance or coldstart: one of them)
  replicas: () => import("./replicas.js"),
};

const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
for (const [name, load] of Object.entries(BENCHES)) {
  if (only && !only.includes(name)) continue;
  console.log(`\n##### ${name}`);
  await (await load()).run();
}
