// Validates CAAS's contract documents with the real tools the SDKs rely on.
//   node validate.mjs asyncapi <url-or-file>   AsyncAPI 3 parser (@asyncapi/parser): any error fails
//   node validate.mjs openapi <url-or-file>    Redocly's OpenAPI validation (spec rules), then
//                                             openapi-typescript must generate types from it
// Prints the diagnostics as JSON lines; exits 1 on any error, 2 on bad usage.
import { readFile } from "node:fs/promises";

async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const response = await fetch(source);
    if (!response.ok) throw new Error(`${source}: HTTP ${response.status}`);
    return await response.text();
  }
  return await readFile(source, "utf8");
}

async function asyncapi(text) {
  const { Parser, DiagnosticSeverity } = await import("@asyncapi/parser");
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const d of diagnostics) {
    console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
  }
  if (document === undefined || errors.length) return false;
  console.log(JSON.stringify({ ok: true, version: document.version(), messages: document.allMessages().length }));
  return true;
}

async function openapi(text) {
  const { lintFromString, createConfig } = await import("@redocly/openapi-core");
  const config = await createConfig({ rules: { struct: "error", "no-unresolved-refs": "error" } });
  const problems = await lintFromString({ source: text, absoluteRef: "openapi.json", config });
  for (const p of problems) {
    console.log(JSON.stringify({ severity: p.severity, rule: p.ruleId, message: p.message,
      where: p.location?.[0]?.pointer }));
  }
  if (problems.some((p) => p.severity === "error")) return false;
  const { default: openapiTS, astToString } = await import("openapi-typescript");
  const types = astToString(await openapiTS(JSON.parse(text)));
  if (!types.includes("export interface paths")) {
    console.log(JSON.stringify({ severity: "error", message: "openapi-typescript produced no paths" }));
    return false;
  }
  console.log(JSON.stringify({ ok: true, typescript_bytes: types.length }));
  return true;
}

const [kind, source] = process.argv.slice(2);
const check = { asyncapi, openapi }[kind];
if (check === undefined || source === undefined) {
  console.error("usage: node validate.mjs asyncapi|openapi <url-or-file>");
  process.exit(2);
}
process.exit((await check(await load(source))) ? 0 : 1);
