// The kit's bundle budget: esbuild bundles and minifies dist/index.js with @caas/client inside
// (the SDK counts) and React outside (the app's peer dependency), then gzip; the build fails over
// budget. It prints both figures: the kit with the SDK, and the kit's own components alone.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const BUDGET = 60 * 1024; // bytes, minified + gzipped, core components + SDK, React excluded
const entry = new URL("../dist/index.js", import.meta.url).pathname;

async function measure(external) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    external,
  });
  const code = result.outputFiles[0].contents;
  return { minified_bytes: code.length, min_gzip_bytes: gzipSync(code, { level: 9 }).length };
}

const withSdk = await measure(["react", "react-dom", "react/jsx-runtime"]);
const alone = await measure(["react", "react-dom", "react/jsx-runtime", "@caas/client"]);
const report = { bundle: "dist/index.js", react: "external (peer)", with_sdk: withSdk, components_only: alone, budget_bytes: BUDGET };
console.log(JSON.stringify(report));
if (withSdk.min_gzip_bytes > BUDGET) {
  console.error(`@caas/react with @caas/client is ${withSdk.min_gzip_bytes} B min+gzip, over the ${BUDGET} B budget`);
  process.exit(1);
}
