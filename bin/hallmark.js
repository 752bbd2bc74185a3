#!/usr/bin/env node
// The built CLI (npm run build writes dist/). Kept as plain JS so `hallmark` runs without a compiler.
import { main } from "../dist/src/cli/main.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(`hallmark: internal error: ${e?.message ?? e}`);
    process.exitCode = 1;
  },
);
