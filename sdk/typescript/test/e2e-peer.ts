// A TypeScript E2E device on a real server, driven over JSON lines on stdin/stdout, so the Python
// SDK's tests can put Python and TypeScript devices in the same e2e channels
// (tests/sdk/test_typescript_sdk.py). One request per line, one answer per line:
//   {"cmd":"open","name","url","token","user_id","device_id"}            -> {"identity_key"}
//   {"cmd":"send","name","channel_id","text"}                             -> {"message_id","position"}
//   {"cmd":"read","name","channel_id","min_position"}  -> {"messages":[{"message_id","author_id","text"}|{…,"error"}]}
// A failure answers {"error": message}.
import { createInterface } from "node:readline";
import { HttpClient } from "../src/index.js";
import { E2eClient, E2eError, type E2eMessage } from "../src/e2e/index.js";

const clients = new Map<string, { e2e: E2eClient; http: HttpClient }>();

async function handle(req: Record<string, string | number>): Promise<Record<string, unknown>> {
  const name = String(req.name);
  if (req.cmd === "open") {
    const http = new HttpClient({ baseUrl: String(req.url), token: String(req.token) });
    const e2e = await E2eClient.open({ http, userId: String(req.user_id), deviceId: String(req.device_id) });
    clients.set(name, { e2e, http });
    return { identity_key: Buffer.from(e2e.device.identityKey).toString("base64") };
  }
  const c = clients.get(name);
  if (c === undefined) throw new Error(`no client ${name}`);
  if (req.cmd === "send") {
    const written = (await c.e2e.send(String(req.channel_id), String(req.text))) as { message_id: string; position: number };
    return { message_id: written.message_id, position: written.position };
  }
  if (req.cmd === "read") {
    const page = await c.http.call("list_messages", { path: { cid: String(req.channel_id) }, query: { min_position: Number(req.min_position ?? 0), limit: 100 } });
    const messages = [...(page.messages as unknown as (E2eMessage & { seq: number; message_id: string })[])].sort((a, b) => a.seq - b.seq);
    const out = [];
    for (const m of messages) {
      try {
        out.push({ message_id: m.message_id, author_id: m.author_id, text: (await c.e2e.decrypt(m))?.text ?? null });
      } catch (e) {
        out.push({ message_id: m.message_id, author_id: m.author_id, error: e instanceof E2eError ? e.code : String(e) });
      }
    }
    return { messages: out };
  }
  throw new Error(`unknown cmd ${String(req.cmd)}`);
}

// one request at a time, in order
let queue = Promise.resolve();
createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let answer: Record<string, unknown>;
    try {
      answer = await handle(JSON.parse(line) as Record<string, string | number>);
    } catch (e) {
      answer = { error: e instanceof Error ? e.message : String(e) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  });
});
