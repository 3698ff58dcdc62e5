// npm run generate [-- --url http://127.0.0.1:8000]
// With a URL (or CAAS_URL), fetches the specs from that running server and refreshes the
// committed copies in spec/; without one, regenerates from the committed copies.
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { fetchSpec, openapiSource, framesSource, routesSource } from "./codegen.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const flag = process.argv.indexOf("--url");
const url = flag >= 0 ? process.argv[flag + 1] : process.env.CAAS_URL;

async function spec(name) {
  const file = `${root}spec/${name}`;
  if (url) {
    const fetched = await fetchSpec(url, `/${name}`);
    if (fetched !== null) {
      await writeFile(file, JSON.stringify(fetched, null, 2) + "\n");
      return fetched;
    }
    console.warn(`${url}/${name}: not served; using the committed spec/${name}`);
  }
  try {
    return JSON.parse(await readFile(file, "utf8"));
  } catch {
    return null;
  }
}

const openapi = await spec("openapi.json");
if (openapi === null) throw new Error("no spec/openapi.json: run with --url <a running caas serve>");
await writeFile(`${root}src/generated/openapi.ts`, await openapiSource(openapi));
await writeFile(`${root}src/generated/routes.ts`, routesSource(openapi));
console.log("src/generated/openapi.ts, src/generated/routes.ts");
const asyncapi = await spec("asyncapi.json");
if (asyncapi !== null) {
  await writeFile(`${root}src/generated/frames.ts`, await framesSource(asyncapi));
  console.log("src/generated/frames.ts");
}
