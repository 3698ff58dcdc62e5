// The core bundle's size budget: esbuild bundles and minifies dist/index.js (no Node built-ins,
// no `ws`), then gzip; the build fails over budget.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const BUDGET = 9 * 1024; // bytes, minified + gzipped (8.6 KiB now, after issue 14 added 21 operations to the route table: room for fixes, not for a dependency)
/** esbuild's minified browser bundle of one built entry point. */
async function minified(entry, external = []) {
  const result = await build({
    entryPoints: [new URL(entry, import.meta.url).pathname],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    external,
  });
  return result.outputFiles[0].contents;
}
const code = await minified("../dist/index.js");
const gz = gzipSync(code, { level: 9 }).length;
const report = { bundle: "dist/index.js", minified_bytes: code.length, min_gzip_bytes: gz, budget_bytes: BUDGET };
console.log(JSON.stringify(report));
if (gz > BUDGET) {
  console.error(`core bundle is ${gz} B min+gzip, over the ${BUDGET} B budget`);
  process.exit(1);
}

// The E2E entry (@caas/client/e2e), reported apart: its own code, with libsodium (loaded on first
// use by a dynamic import: about 190 KB gzipped, WebAssembly inlined in JS) left out; apps that never import it pay nothing.
const e2eCode = await minified("../dist/e2e/index.js", ["libsodium-wrappers-sumo"]);
console.log(JSON.stringify({ bundle: "dist/e2e/index.js", minified_bytes: e2eCode.length, min_gzip_bytes: gzipSync(e2eCode, { level: 9 }).length, excludes: "libsodium-wrappers-sumo" }));
